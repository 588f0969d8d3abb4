/**
 * Keeps one child process alive: start it, restart it with capped exponential backoff when it dies,
 * stop it SIGTERM → timeout → SIGKILL. `spawn`, `kill` and the clock are injected (as in the
 * `concurrently` package), so supervision is tested without real processes.
 *
 *   const sup = new Supervisor({
 *     spawn: (command, args, opts) => child_process.spawn(command, args, opts),   // the default
 *     command: "python3", args: ["-m", "worker"], env: process.env,
 *     backoff: { initialMs: 500, maxMs: 30_000 },   // 500, 1000, 2000, … 30000 ms between restarts
 *     stopTimeoutMs: 10_000,                         // SIGTERM, then SIGKILL after this long
 *     onStart: (child, { attempt }) => attachPipes(child),
 *     onExit: ({ code, signal, restartInMs }) => failInFlight(),   // restartInMs null: not restarting
 *     onStateChange: (state) => log(state),
 *   });
 *   sup.start();           // spawns now; state "running"
 *   await sup.stop();      // resolves once the child has exited (after SIGKILL at worst); state "stopped"
 *
 * States: idle → running ⇄ backoff (waiting to restart) → stopping → stopped; "failed" when
 * `maxRestarts` is exhausted. A child that stayed up for `backoff.resetAfterMs` resets the backoff.
 */
import { type ChildProcess, spawn as nodeSpawn, type SpawnOptions } from "node:child_process";

/** What the supervisor needs from a child: Node's ChildProcess satisfies it. */
export interface SupervisedChild {
  readonly pid?: number;
  kill(signal?: NodeJS.Signals): boolean;
  once(event: "exit", listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
}

export type SpawnFn<C extends SupervisedChild = ChildProcess> = (command: string, args: readonly string[], options: SpawnOptions) => C;

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const SYSTEM_CLOCK: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export type SupervisorState = "idle" | "running" | "backoff" | "stopping" | "stopped" | "failed";

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the child could not be spawned at all (ENOENT, EACCES…). */
  error?: Error;
  /** How long the child ran, in ms. */
  uptimeMs: number;
  /** Milliseconds until the next start, or null when the supervisor is not restarting it. */
  restartInMs: number | null;
}

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** Multiplier per consecutive failure (default 2). */
  factor?: number;
  /** A child that ran at least this long resets the backoff (default 30 s). */
  resetAfterMs?: number;
}

export interface SupervisorOptions<C extends SupervisedChild = ChildProcess> {
  command: string;
  args?: readonly string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Default: stdin/stdout piped, stderr inherited. */
  stdio?: SpawnOptions["stdio"];
  spawn?: SpawnFn<C>;
  /** How to signal the child (default: `child.kill(signal)`). */
  kill?: (child: C, signal: NodeJS.Signals) => void;
  clock?: Clock;
  backoff?: BackoffOptions;
  /** SIGTERM, then SIGKILL after this many ms (default 10 s). */
  stopTimeoutMs?: number;
  /** Give up after this many consecutive restarts (default: never). */
  maxRestarts?: number;
  onStart?: (child: C, info: { attempt: number }) => void;
  onExit?: (info: ExitInfo) => void;
  onStateChange?: (state: SupervisorState, previous: SupervisorState) => void;
}

const DEFAULT_BACKOFF: Required<BackoffOptions> = { initialMs: 500, maxMs: 30_000, factor: 2, resetAfterMs: 30_000 };

export class Supervisor<C extends SupervisedChild = ChildProcess> {
  #state: SupervisorState = "idle";
  #child: C | undefined;
  #startedAt = 0;
  /** Consecutive failures since the last healthy run; drives the backoff. */
  #failures = 0;
  #starts = 0;
  #restartTimer: unknown;
  #killTimer: unknown;
  #stopped: Promise<void> | undefined;
  #resolveStopped: (() => void) | undefined;
  readonly #opts: SupervisorOptions<C>;
  readonly #backoff: Required<BackoffOptions>;
  readonly #clock: Clock;

  constructor(options: SupervisorOptions<C>) {
    if (!options.command) throw new TypeError("Supervisor: options.command is required");
    this.#opts = options;
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    if (!(this.#backoff.initialMs >= 0 && this.#backoff.maxMs >= this.#backoff.initialMs && this.#backoff.factor >= 1)) {
      throw new TypeError("Supervisor: backoff needs 0 <= initialMs <= maxMs and factor >= 1");
    }
    this.#clock = options.clock ?? SYSTEM_CLOCK;
  }

  get state(): SupervisorState {
    return this.#state;
  }

  /** The current child, when one is running. */
  get child(): C | undefined {
    return this.#child;
  }

  /** How many times a child has been spawned. */
  get starts(): number {
    return this.#starts;
  }

  /** The delay before restart number `failures` (1-based): initial × factor^(failures-1), capped. */
  backoffMs(failures: number): number {
    const { initialMs, maxMs, factor } = this.#backoff;
    return Math.min(maxMs, initialMs * factor ** Math.max(0, failures - 1));
  }

  start(): void {
    if (this.#state !== "idle" && this.#state !== "stopped" && this.#state !== "failed") return;
    this.#failures = 0;
    this.#stopped = undefined;
    this.#spawn();
  }

  /** SIGTERM, then SIGKILL after `stopTimeoutMs`; resolves once the child has exited. Idempotent. */
  stop(): Promise<void> {
    if (this.#state === "idle" || this.#state === "stopped" || this.#state === "failed") {
      this.#setState("stopped");
      return Promise.resolve();
    }
    if (this.#stopped) return this.#stopped;
    this.#stopped = new Promise((resolve) => {
      this.#resolveStopped = resolve;
    });
    this.#clock.clearTimeout(this.#restartTimer);
    const child = this.#child;
    this.#setState("stopping");
    if (!child) {
      this.#finishStop();
    } else {
      this.#signal(child, "SIGTERM");
      this.#killTimer = this.#clock.setTimeout(() => this.#signal(child, "SIGKILL"), this.#opts.stopTimeoutMs ?? 10_000);
    }
    return this.#stopped;
  }

  #spawn(): void {
    const spawn = (this.#opts.spawn ?? (nodeSpawn as unknown as SpawnFn<C>)) as SpawnFn<C>;
    this.#starts++;
    let child: C;
    try {
      child = spawn(this.#opts.command, this.#opts.args ?? [], {
        env: this.#opts.env,
        cwd: this.#opts.cwd,
        stdio: this.#opts.stdio ?? ["pipe", "pipe", "inherit"],
      });
    } catch (err) {
      this.#startedAt = this.#clock.now();
      this.#handleExit(null, null, err as Error);
      return;
    }
    this.#child = child;
    this.#startedAt = this.#clock.now();
    let exited = false;
    const onExit = (code: number | null, signal: NodeJS.Signals | null, error?: Error) => {
      if (exited) return;
      exited = true;
      if (this.#child === child) this.#child = undefined;
      this.#handleExit(code, signal, error);
    };
    child.once("exit", (code, signal) => onExit(code, signal));
    // A failed spawn emits "error" and no "exit"; a failed kill emits "error" on a live child (ignore it).
    child.on("error", (err) => {
      if (child.pid === undefined) onExit(null, null, err);
    });
    this.#setState("running");
    this.#opts.onStart?.(child, { attempt: this.#starts });
  }

  #handleExit(code: number | null, signal: NodeJS.Signals | null, error?: Error): void {
    const uptimeMs = this.#clock.now() - this.#startedAt;
    if (this.#state === "stopping") {
      this.#opts.onExit?.({ code, signal, error, uptimeMs, restartInMs: null });
      this.#finishStop();
      return;
    }
    if (uptimeMs >= this.#backoff.resetAfterMs) this.#failures = 0;
    this.#failures++;
    const max = this.#opts.maxRestarts ?? Number.POSITIVE_INFINITY;
    if (this.#failures > max) {
      this.#opts.onExit?.({ code, signal, error, uptimeMs, restartInMs: null });
      this.#setState("failed");
      return;
    }
    const delay = this.backoffMs(this.#failures);
    this.#opts.onExit?.({ code, signal, error, uptimeMs, restartInMs: delay });
    // onExit may have called stop() (TypeScript cannot see that the state changed).
    const now = this.#state as SupervisorState;
    if (now === "stopping" || now === "stopped") return;
    this.#setState("backoff");
    this.#restartTimer = this.#clock.setTimeout(() => {
      if (this.#state === "backoff") this.#spawn();
    }, delay);
  }

  #finishStop(): void {
    this.#clock.clearTimeout(this.#killTimer);
    this.#child = undefined;
    this.#setState("stopped");
    this.#resolveStopped?.();
  }

  #signal(child: C, signal: NodeJS.Signals): void {
    try {
      if (this.#opts.kill) this.#opts.kill(child, signal);
      else child.kill(signal);
    } catch {
      // Already gone: its "exit" event settles the stop.
    }
  }

  #setState(next: SupervisorState): void {
    const previous = this.#state;
    if (previous === next) return;
    this.#state = next;
    this.#opts.onStateChange?.(next, previous);
  }
}
