/**
 * The relay core: node events (a `ReadableStream<NodeEvent>`) → an SSE byte stream for the client.
 *
 * Cost is per chunk, not per byte (TOOLCHAIN.md, "Relaying a token stream"), so the relay writes every
 * event that is already available as one chunk: after one event arrives it keeps taking events for as
 * long as reads resolve without waiting, then frames the batch and writes it once into a native
 * `IdentityTransformStream` (no JS transform per chunk, no `streamSSE`). Awaiting each write lets the
 * client's pace hold the node back and yields to other requests between batches.
 *
 * What it adds around the framer (openai.ts, task.ts):
 * - `: keep-alive` comments whenever nothing was written for `keepAliveMs` (default 10 s: below the
 *   30–100 s idle timeouts of common proxies and load balancers, rare enough to cost nothing), mostly
 *   while the GPU is busy before the first token;
 * - the end: when the source breaks or ends early, the framer's error text (an error frame, then the
 *   stream closes);
 * - cancellation: when the client goes away, the source stream is cancelled and the `abort` controller
 *   aborted, so the node request stops. workerd's native stream reports a cancelled output only to the
 *   next write, so a disconnect is seen at the next token or keep-alive; pass the incoming request's
 *   `signal` (workerd aborts it on disconnect with the `enable_request_signal` compatibility flag) to see
 *   it at once. The source is also cancelled, and the controller aborted, when the relay stops reading
 *   while prompts are still running (a fatal error event); after a complete answer the source is read
 *   to its end (so the connection to the node can be reused), or cancelled after `DRAIN_MS`.
 */
import { ApiError } from "../errors";
import type { ErrorEvent, NodeEvent } from "../protocol/events";

export const KEEP_ALIVE_COMMENT = ": keep-alive\n\n";
export const SSE_DONE = "data: [DONE]\n\n";
export const DEFAULT_KEEP_ALIVE_MS = 10_000;
/** At most this many events are framed as one chunk (bounds the work between two yields). */
export const MAX_BATCH_EVENTS = 256;

/** Turns batches of node events into SSE text. */
export interface SseFramer {
  /**
   * SSE text for events that arrived together. `end` once this text finishes the response: "complete"
   * (every prompt done) or "error" (an error frame was written; the node's remaining work is cancelled).
   */
  frame(events: readonly NodeEvent[]): { text: string; end?: "complete" | "error" };
  /** The closing text when the source broke (`error` set) or ended before the framer was complete. */
  fail(error?: unknown): string;
}

export type RelayOutcome = "complete" | "error" | "cancelled";

export interface SseRelayOptions {
  /** Milliseconds without output before a `: keep-alive` comment; 0 disables. Default 10 000. */
  keepAliveMs?: number;
  /** Aborted when the client goes away, or when the relay gives up while the node is still working. */
  abort?: AbortController;
  /** The client went away when this aborts (e.g. the incoming request's `signal`). */
  signal?: AbortSignal;
  /** Called once when the relay stops (for logs and metrics). */
  onEnd?: (outcome: RelayOutcome) => void;
  /** Write into this stream (its readable side already the response's body); default: a new one. */
  into?: Identity;
}

/** `data: <json>\n\n` */
export function sseData(value: unknown): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

/** `event: <name>\ndata: <json>\n\n` */
export function sseEvent(name: string, value: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(value)}\n\n`;
}

/** Response headers for an SSE body. Always `text/event-stream`: otherwise dev proxies gzip and hold it. */
export function sseHeaders(extra?: HeadersInit): Headers {
  const h = new Headers(extra);
  h.set("content-type", "text/event-stream; charset=utf-8");
  h.set("cache-control", "no-cache");
  // Tells nginx-style proxies not to buffer the stream.
  h.set("x-accel-buffering", "no");
  return h;
}

export function sseResponse(body: ReadableStream<Uint8Array>, init: { status?: number; headers?: HeadersInit } = {}): Response {
  return new Response(body, { status: init.status ?? 200, headers: sseHeaders(init.headers) });
}

/**
 * A node error as a client error. The node's message stays in logs: a client sees a stable code and a
 * generic sentence (never an internal message).
 */
export function apiErrorFromNode(event: Pick<ErrorEvent, "code" | "retryable">): ApiError {
  switch (event.code) {
    case "overloaded":
    case "draining":
    case "engine_unavailable":
      return new ApiError("no_capacity", "The model server stopped serving this request; retry it.", { retryAfter: 1 });
    case "deadline_exceeded":
      return new ApiError("internal_error", "The model server ran out of time for this request.");
    default:
      return new ApiError("internal_error", "The model server failed while generating the answer.");
  }
}

/** The error for a source stream that broke, or ended before every prompt was done. */
export function upstreamBrokenError(cause?: unknown): ApiError {
  return new ApiError("internal_error", "The connection to the model server was lost mid-answer.", { cause });
}

/** After a complete answer, how long the rest of the source (normally just its end) may take to arrive. */
export const DRAIN_MS = 5_000;

/**
 * Reads a source whose answer is complete to its end, so the connection to the node ends cleanly and
 * can be reused; cancels it if it has not ended after `ms`. `pending` is a read already in flight.
 */
export async function drainSource<T>(
  reader: ReadableStreamDefaultReader<T>,
  pending: Promise<ReadableStreamReadResult<T>> | null = null,
  ms = DRAIN_MS,
): Promise<void> {
  const timer = setTimeout(() => reader.cancel().catch(() => {}), ms);
  try {
    for (;;) {
      const r = await (pending ?? reader.read());
      pending = null;
      if (r.done) return;
    }
  } catch {
    // A source that fails after the answer is complete changes nothing for the client.
  } finally {
    clearTimeout(timer);
  }
}

const TIMEOUT = Symbol("timeout");
const CANCELLED = Symbol("cancelled");
const NOT_READY = Symbol("not-ready");

/**
 * Microtask turns to wait for a read before calling a batch complete. An event already queued in the
 * source settles in 1–2 turns (`openEventStream` enqueues every event of a network chunk in one pull;
 * a Flight's replay likewise); one still inside a chain of `pipeThrough` transforms needs a few per stage
 * (≈ 7 for a three-stage chain, measured in workerd). The spin runs twice per chunk (for the batch's first
 * event and to find its end), so it is kept short; an event that truly is not there yet, or one that takes
 * longer, goes out with the next batch.
 */
const BATCH_TURNS = 8;

/** The read's result if it settles within `BATCH_TURNS` microtask turns, else NOT_READY (the read stays in flight). */
function readyOrNot<T>(read: Promise<T>): Promise<T | typeof NOT_READY> {
  return new Promise((resolve, reject) => {
    let settled = false;
    read.then(
      (v) => {
        settled = true;
        resolve(v);
      },
      (err: unknown) => {
        settled = true;
        reject(err);
      },
    );
    const spin = async () => {
      for (let i = 0; i < BATCH_TURNS; i++) {
        await undefined;
        if (settled) return;
      }
      resolve(NOT_READY);
    };
    void spin();
  });
}

export interface Identity {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}

/** workerd's native pass-through stream; a plain TransformStream elsewhere (Node tests, tools). */
export function identityStream(): Identity {
  const Native = (globalThis as { IdentityTransformStream?: new () => Identity }).IdentityTransformStream;
  return Native ? new Native() : (new TransformStream<Uint8Array, Uint8Array>() as Identity);
}

/** Relays `source` through `framer` into an SSE byte stream (see the module header). */
export function relaySse(source: ReadableStream<NodeEvent>, framer: SseFramer, options: SseRelayOptions = {}): ReadableStream<Uint8Array> {
  const keepAliveMs = options.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS;
  if (!(keepAliveMs >= 0)) throw new RangeError("keepAliveMs must be 0 or more");
  const { readable, writable } = options.into ?? identityStream();
  const writer = writable.getWriter();
  const reader = source.getReader();
  const encoder = new TextEncoder();

  let cancelled = false;
  /** Settles the relay's wait for a batch's first event early: the client left, or a keep-alive is due. */
  let interruptWait: ((why: typeof CANCELLED | typeof TIMEOUT) => void) | null = null;
  const onClientGone = (reason: unknown) => {
    if (cancelled) return;
    cancelled = true;
    interruptWait?.(CANCELLED);
    stopUpstream(reason ?? new Error("client went away"));
    writer.abort(reason).catch(() => {});
  };
  // The output's readable side cancelled (client gone) errors the writable side (workerd: at the next write).
  writer.closed.catch(onClientGone);
  const { signal } = options;
  if (signal?.aborted) queueMicrotask(() => onClientGone(signal.reason));
  else signal?.addEventListener("abort", () => onClientGone(signal.reason), { once: true });

  let upstreamStopped = false;
  function stopUpstream(reason: unknown): void {
    if (upstreamStopped) return;
    upstreamStopped = true;
    reader.cancel(reason).catch(() => {});
    options.abort?.abort(reason);
  }

  let pending: Promise<ReadableStreamReadResult<NodeEvent>> | null = null;
  const nextRead = () => {
    pending ??= reader.read();
    return pending;
  };

  // One keep-alive timer per relay, not one per batch (a timer set and cleared per chunk is CPU the edge
  // pays per token): it fires at most once per `keepAliveMs`, interrupts the wait for a first event when
  // nothing was written for `keepAliveMs`, and re-arms for the rest of the interval otherwise.
  let lastOutputAt = Date.now();
  let keepAliveTimer: ReturnType<typeof setTimeout> | undefined;
  const keepAliveCheck = () => {
    const quiet = Date.now() - lastOutputAt;
    if (quiet < keepAliveMs) {
      keepAliveTimer = setTimeout(keepAliveCheck, keepAliveMs - quiet);
      return;
    }
    // Silent for the whole interval: a comment if the relay is waiting for the node (not while it writes).
    interruptWait?.(TIMEOUT);
    keepAliveTimer = setTimeout(keepAliveCheck, keepAliveMs);
  };

  async function write(text: string): Promise<boolean> {
    if (cancelled || text === "") return !cancelled;
    try {
      await writer.write(encoder.encode(text));
      lastOutputAt = Date.now();
      return true;
    } catch {
      return false;
    }
  }

  type First = ReadableStreamReadResult<NodeEvent> | typeof TIMEOUT | typeof CANCELLED | typeof NOT_READY;

  /** The first event of a batch: at once when queued, else the read, the keep-alive timer or the client leaving. */
  async function waitFirst(): Promise<First> {
    const ready = await readyOrNot(nextRead());
    if (ready !== NOT_READY) return ready;
    if (cancelled) return CANCELLED;
    if (keepAliveMs > 0 && keepAliveTimer === undefined) keepAliveTimer = setTimeout(keepAliveCheck, keepAliveMs);
    try {
      return await new Promise<First>((resolve, reject) => {
        interruptWait = resolve;
        nextRead().then(resolve, reject);
      });
    } finally {
      interruptWait = null;
    }
  }

  async function run(): Promise<RelayOutcome> {
    for (;;) {
      let first: First;
      try {
        first = await waitFirst();
      } catch (err) {
        pending = null;
        await write(framer.fail(err ?? new Error("source stream failed")));
        return "error";
      }
      if (first === CANCELLED) return "cancelled";
      if (first === TIMEOUT) {
        if (!(await write(KEEP_ALIVE_COMMENT))) return "cancelled";
        continue;
      }
      if (first === NOT_READY) continue;
      pending = null;
      if (first.done) {
        await write(framer.fail());
        return "error";
      }

      // Take whatever else is already queued.
      const batch: NodeEvent[] = [first.value];
      let ended = false;
      let broken: unknown;
      while (batch.length < MAX_BATCH_EVENTS) {
        let r: ReadableStreamReadResult<NodeEvent> | typeof NOT_READY;
        try {
          r = await readyOrNot(nextRead());
        } catch (err) {
          pending = null;
          broken = err ?? new Error("source stream failed");
          break;
        }
        if (r === NOT_READY) break;
        pending = null;
        if (r.done) {
          ended = true;
          break;
        }
        batch.push(r.value);
      }

      const { text, end } = framer.frame(batch);
      if (end) {
        const ok = await write(text);
        return ok ? end : "cancelled";
      }
      if (broken !== undefined || ended) {
        const ok = await write(text + framer.fail(broken));
        return ok ? "error" : "cancelled";
      }
      if (!(await write(text))) return "cancelled";
    }
  }

  run()
    .finally(() => clearTimeout(keepAliveTimer))
    .catch(async (err: unknown): Promise<RelayOutcome> => {
      // A framer bug: still end the stream the way a client understands.
      try {
        await write(framer.fail(err));
      } catch {}
      return "error";
    })
    .then(async (outcome) => {
      if (outcome === "complete") {
        await writer.close().catch(() => {});
        // The answer is complete: read the source to its end without aborting the node's request.
        if (!upstreamStopped) {
          upstreamStopped = true;
          void drainSource(reader, pending);
        }
      } else if (outcome === "error") {
        stopUpstream(new Error("relay stopped"));
        await writer.close().catch(() => {});
      } else {
        stopUpstream(new Error("client went away"));
        await writer.abort().catch(() => {});
      }
      try {
        options.onEnd?.(outcome);
      } catch {
        // A logging hook's failure is not the client's problem.
      }
    });

  return readable;
}
