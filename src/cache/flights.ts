/**
 * Coalescing: identical deterministic requests in flight at the same time share one generation.
 *
 * A `Flight` reads one node event stream on its own (at the node's pace, not any client's), keeps every
 * event, and gives each participant a stream that replays what came so far and then follows live. The
 * events it keeps are what the result cache stores once the answer is complete.
 *
 * `joinOrStart` keys flights by the result-cache key inside one isolate: the first request starts the
 * work (a result-cache read, then the GPU on a miss), and every identical request that arrives before
 * that work is finished joins it instead of starting its own. The entry is set synchronously before
 * anything is awaited, so ten requests arriving together make one cache read and at most one GPU call.
 * The generation is cancelled only when every participant has gone away.
 *
 * Across isolates (and colos) there is no coalescing: two isolates that miss the result cache at the
 * same moment each ask the GPU; the answer is the same, and the second write just refreshes the entry.
 */
import type { NodeEvent } from "../protocol/events";
import { DRAIN_MS } from "../stream/sse";
import type { StoredResult } from "./results";

type FlightState = "running" | "complete" | "failed";

export class Flight {
  readonly events: NodeEvent[] = [];
  readonly engine: string;
  readonly queueMs: number;
  /** Resolves once the answer is complete (every prompt done) or has failed. */
  readonly finished: Promise<"complete" | "failed">;
  #state: FlightState = "running";
  #error: unknown;
  #waiters: Array<() => void> = [];
  #reader: ReadableStreamDefaultReader<NodeEvent>;

  constructor(source: ReadableStream<NodeEvent>, prompts: number, engine: string, queueMs = 0) {
    this.engine = engine;
    this.queueMs = queueMs;
    this.#reader = source.getReader();
    this.finished = this.#pump(prompts);
  }

  get state(): FlightState {
    return this.#state;
  }

  async #pump(prompts: number): Promise<"complete" | "failed"> {
    const done = new Set<number>();
    let outcome: "complete" | "failed" | null = null;
    let drainTimer: ReturnType<typeof setTimeout> | undefined;
    try {
      for (;;) {
        const r = await this.#reader.read();
        if (r.done) break;
        if (outcome) continue; // after the answer: read the source to its end (the node's connection ends cleanly)
        this.events.push(r.value);
        if (r.value.type === "done") done.add(r.value.prompt);
        if (r.value.type === "error") outcome = "failed";
        else if (done.size >= prompts) outcome = "complete";
        if (outcome) {
          this.#settle(outcome);
          drainTimer = setTimeout(() => this.#reader.cancel().catch(() => {}), DRAIN_MS);
        } else this.#wake();
      }
    } catch (err) {
      this.#error ??= err ?? new Error("source stream failed");
    } finally {
      clearTimeout(drainTimer);
    }
    if (!outcome) {
      outcome = "failed";
      this.#settle("failed");
    }
    return outcome;
  }

  #settle(state: FlightState): void {
    this.#state = state;
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Stops the generation (the source stream is cancelled). */
  cancel(reason?: unknown): void {
    if (this.#state === "running") {
      this.#error = reason ?? new Error("cancelled");
      this.#settle("failed");
    }
    this.#reader.cancel(reason).catch(() => {});
  }

  /** Every event so far, then the rest as they come. `onCancel` runs when the reader cancels it. */
  subscribe(onCancel: () => void = () => {}): ReadableStream<NodeEvent> {
    let next = 0;
    return new ReadableStream<NodeEvent>({
      pull: async (controller) => {
        while (next >= this.events.length && this.#state === "running") {
          await new Promise<void>((r) => this.#waiters.push(r));
        }
        if (next < this.events.length) {
          while (next < this.events.length) controller.enqueue(this.events[next++]);
          return;
        }
        if (this.#state === "failed" && this.#error !== undefined) controller.error(this.#error);
        else controller.close();
      },
      cancel: () => onCancel(),
    });
  }
}

export type Shared = { kind: "stored"; result: StoredResult } | { kind: "flight"; flight: Flight; stored: Promise<unknown> };

interface Entry {
  promise: Promise<Shared>;
  interest: number;
  controller: AbortController;
  /**
   * Every participant left and the work is being cancelled. A plain flag, not `controller.signal.aborted`:
   * the controller is an I/O object of the request that started the work, and workerd refuses another
   * request's touching it ("Cannot perform I/O on behalf of a different request").
   */
  abandoned: boolean;
}

const inflight = new Map<string, Entry>();

export interface Joined {
  shared: Shared;
  /** This request started the work (for a flight: it is the one that reached the GPU). */
  leader: boolean;
  /** Call when this participant goes away; the last one to leave cancels the work. */
  leave: () => void;
}

/** Number of keys with work in flight in this isolate (tests, metrics). */
export function inflightCount(): number {
  return inflight.size;
}

/**
 * Joins the work in flight for `key`, or starts it with `start(signal)`. The entry stays until a
 * stored answer is read, or a flight has ended and its answer is stored (`stored`), so a request
 * arriving in between finds the flight rather than starting another.
 */
export async function joinOrStart(
  key: string,
  clientSignal: AbortSignal,
  start: (signal: AbortSignal) => Promise<Shared>,
): Promise<Joined> {
  let entry = inflight.get(key);
  // Work whose every participant left is being cancelled: start afresh rather than share its failure.
  if (entry?.abandoned) entry = undefined;
  const leader = !entry;
  if (!entry) {
    const controller = new AbortController();
    const created: Entry = { promise: start(controller.signal), interest: 0, controller, abandoned: false };
    entry = created;
    inflight.set(key, created);
    const drop = () => {
      if (inflight.get(key) === created) inflight.delete(key);
    };
    created.promise.then((shared) => {
      if (shared.kind === "stored") drop();
      else shared.stored.then(drop, drop);
    }, drop);
  }
  const joined = entry;
  joined.interest++;
  let left = false;
  const leave = () => {
    if (left) return;
    left = true;
    clientSignal.removeEventListener("abort", leave);
    joined.interest--;
    if (joined.interest > 0) return;
    joined.abandoned = true;
    if (inflight.get(key) === joined) inflight.delete(key);
    try {
      joined.controller.abort(new Error("every client of this request went away"));
    } catch {
      // The last to leave is not the request that started the work, and workerd will not let it cancel that
      // request's I/O: the work runs to its end (its answer is still stored), and no one waits on it.
    }
  };
  if (clientSignal.aborted) leave();
  else clientSignal.addEventListener("abort", leave, { once: true });
  try {
    return { shared: await joined.promise, leader, leave };
  } catch (err) {
    leave();
    throw err;
  }
}
