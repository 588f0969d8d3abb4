/**
 * Registers the node with the edge's pool and keeps it registered:
 * `POST {edge}/v1/pool/heartbeat`, `Authorization: Bearer <node secret>`, JSON body
 *
 *   {id, url, variant, engine, version, capacity, load:{active,queued}, draining, region, healthy}
 *   (+ `final: true, deregister: true` on the last one, sent after a drain: the node is going away)
 *
 * every `intervalMs`. The edge being unreachable is never fatal: failures are logged and retried with
 * exponential backoff from `retryInitialMs`, capped at `intervalMs` (so a recovered edge hears from the
 * node within one interval). `beatNow()` sends at once (a drain starting: the edge must stop routing here).
 */
import type { Logger } from "./log";

export interface HeartbeatBody {
  id: string;
  url: string;
  variant: string;
  engine: string;
  version: string;
  capacity: number;
  load: { active: number; queued: number };
  draining: boolean;
  region: string | null;
  healthy: boolean;
  final?: true;
  /** With `final`: the edge's pool drops the node at once instead of waiting for its TTL. */
  deregister?: true;
}

export interface HeartbeatOptions {
  /** The edge's origin, e.g. `https://edge.example.com`. */
  edge: string;
  secret: string;
  body: () => HeartbeatBody;
  intervalMs?: number;
  retryInitialMs?: number;
  /** Per attempt. */
  timeoutMs?: number;
  fetch?: typeof fetch;
  log?: Logger;
}

export interface HeartbeatStats {
  sent: number;
  failed: number;
  consecutiveFailures: number;
}

export class Heartbeat {
  readonly stats: HeartbeatStats = { sent: 0, failed: 0, consecutiveFailures: 0 };
  readonly endpoint: string;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = true;
  #again = false;
  readonly #intervalMs: number;
  readonly #retryInitialMs: number;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;
  readonly #log: Logger;

  constructor(readonly options: HeartbeatOptions) {
    this.endpoint = new URL("/v1/pool/heartbeat", options.edge).href;
    this.#intervalMs = options.intervalMs ?? 5_000;
    this.#retryInitialMs = Math.min(options.retryInitialMs ?? 500, this.#intervalMs);
    this.#timeoutMs = options.timeoutMs ?? Math.min(5_000, Math.max(1_000, this.#intervalMs));
    this.#fetch = options.fetch ?? fetch;
    this.#log = options.log ?? (() => {});
    if (!(this.#intervalMs > 0)) throw new TypeError("Heartbeat: intervalMs must be > 0");
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Sends a heartbeat as soon as possible (after the one in flight, if any). */
  beatNow(): void {
    if (this.#stopped) return;
    if (this.#running) this.#again = true;
    else this.#schedule(0);
  }

  /** Stops the loop; with `final`, sends one last heartbeat (body `final: true`) and waits for it (bounded). */
  async stop(options: { final?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
    if (options.final) await this.#send({ ...this.options.body(), final: true, deregister: true });
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#tick(), ms);
  }

  async #tick(): Promise<void> {
    if (this.#stopped || this.#running) return;
    this.#running = this.#send(this.options.body()).then(() => {});
    await this.#running;
    this.#running = undefined;
    if (this.#stopped) return;
    if (this.#again) {
      this.#again = false;
      this.#schedule(0);
    } else if (this.stats.consecutiveFailures === 0) {
      this.#schedule(this.#intervalMs);
    } else {
      this.#schedule(Math.min(this.#intervalMs, this.#retryInitialMs * 2 ** (this.stats.consecutiveFailures - 1)));
    }
  }

  async #send(body: HeartbeatBody): Promise<boolean> {
    let problem: string;
    try {
      const res = await this.#fetch(this.endpoint, {
        method: "POST",
        headers: { authorization: `Bearer ${this.options.secret}`, "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      await res.body?.cancel().catch(() => {});
      if (res.ok) {
        if (this.stats.consecutiveFailures > 0)
          this.#log({ msg: "heartbeat ok again", edge: this.endpoint, after_failures: this.stats.consecutiveFailures });
        this.stats.sent++;
        this.stats.consecutiveFailures = 0;
        return true;
      }
      problem = `HTTP ${res.status}`;
    } catch (err) {
      problem = (err as Error).message;
    }
    this.stats.failed++;
    this.stats.consecutiveFailures++;
    this.#log({
      level: "warn",
      msg: "heartbeat failed",
      edge: this.endpoint,
      error: problem,
      consecutive_failures: this.stats.consecutiveFailures,
      final: body.final ?? false,
    });
    return false;
  }
}
