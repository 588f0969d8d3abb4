/**
 * Admission control (TGI style: fail fast). At most `capacity` requests run; up to `maxQueue` more wait
 * in FIFO order; beyond that a request is refused at once (`overloaded` → 429). Draining refuses new
 * requests and the queued ones (`draining` → 503: they have not started, so the edge can send them to
 * another node) while the running ones finish. A queued request leaves the queue when its deadline
 * passes (`deadline_exceeded` → 504) or its client goes away (`cancelled`).
 */

export type AdmissionRefusal = "overloaded" | "draining" | "deadline_exceeded" | "cancelled";

export class AdmissionError extends Error {
  constructor(
    readonly code: AdmissionRefusal,
    message: string,
  ) {
    super(message);
    this.name = "AdmissionError";
  }
}

export interface AdmissionClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const SYSTEM_CLOCK: AdmissionClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface AdmissionOptions {
  capacity: number;
  /** Requests that may wait beyond `capacity` (0: none). */
  maxQueue: number;
  clock?: AdmissionClock;
}

export interface AcquireOptions {
  /** Aborting it (client gone) takes the request out of the queue. */
  signal?: AbortSignal;
  /** Clock time by which the request must have started, or it is refused with `deadline_exceeded`. */
  deadlineAt?: number;
}

/** Gives the slot back; idempotent. */
export type Release = () => void;

interface Waiter {
  resolve: (release: Release) => void;
  reject: (err: AdmissionError) => void;
  cleanup: () => void;
}

export class Admission {
  readonly capacity: number;
  readonly maxQueue: number;
  #active = 0;
  #queue: Waiter[] = [];
  #draining = false;
  #idle: Array<() => void> = [];
  readonly #clock: AdmissionClock;

  constructor(options: AdmissionOptions) {
    if (!(Number.isInteger(options.capacity) && options.capacity >= 1)) throw new TypeError("Admission: capacity must be an integer >= 1");
    if (!(Number.isInteger(options.maxQueue) && options.maxQueue >= 0)) throw new TypeError("Admission: maxQueue must be an integer >= 0");
    this.capacity = options.capacity;
    this.maxQueue = options.maxQueue;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#queue.length;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Why a new request would be refused right now, if it would (checked before reading its body). */
  refusal(): AdmissionError | undefined {
    if (this.#draining) return new AdmissionError("draining", "The node is draining and takes no new requests.");
    if (this.#active >= this.capacity && this.#queue.length >= this.maxQueue) {
      return new AdmissionError("overloaded", `The node is at capacity (${this.capacity} running, ${this.#queue.length} queued).`);
    }
    return undefined;
  }

  /** Resolves with a release function once the request may run; rejects with an AdmissionError. */
  acquire(options: AcquireOptions = {}): Promise<Release> {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    if (options.signal?.aborted) return Promise.reject(new AdmissionError("cancelled", "The client went away."));
    if (options.deadlineAt !== undefined && options.deadlineAt <= this.#clock.now()) {
      return Promise.reject(new AdmissionError("deadline_exceeded", "The deadline passed before the request could start."));
    }
    if (this.#active < this.capacity) {
      this.#active++;
      return Promise.resolve(this.#release());
    }
    return new Promise<Release>((resolve, reject) => {
      let timer: unknown;
      const waiter: Waiter = {
        resolve,
        reject,
        cleanup: () => {
          this.#clock.clearTimeout(timer);
          options.signal?.removeEventListener("abort", onAbort);
        },
      };
      const leave = (err: AdmissionError) => {
        const i = this.#queue.indexOf(waiter);
        if (i < 0) return;
        this.#queue.splice(i, 1);
        waiter.cleanup();
        reject(err);
        this.#checkIdle();
      };
      const onAbort = () => leave(new AdmissionError("cancelled", "The client went away while the request was queued."));
      options.signal?.addEventListener("abort", onAbort, { once: true });
      if (options.deadlineAt !== undefined) {
        timer = this.#clock.setTimeout(
          () => leave(new AdmissionError("deadline_exceeded", "The deadline passed while the request was queued.")),
          Math.max(0, options.deadlineAt - this.#clock.now()),
        );
      }
      this.#queue.push(waiter);
    });
  }

  /** Stops admitting; queued requests are refused with `draining`. Running ones are left to finish. */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    for (const waiter of this.#queue.splice(0)) {
      waiter.cleanup();
      waiter.reject(new AdmissionError("draining", "The node began draining before the request started."));
    }
    this.#checkIdle();
  }

  /** Resolves when nothing runs and nothing waits. */
  idle(): Promise<void> {
    if (this.#active === 0 && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #release(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#queue.shift();
      if (next) {
        // The slot passes straight to the next waiter: `active` does not change.
        next.cleanup();
        next.resolve(this.#release());
      } else {
        this.#active--;
        this.#checkIdle();
      }
    };
  }

  #checkIdle(): void {
    if (this.#active === 0 && this.#queue.length === 0) for (const resolve of this.#idle.splice(0)) resolve();
  }
}
