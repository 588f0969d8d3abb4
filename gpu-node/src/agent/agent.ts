/**
 * The node agent: a Hono app around one engine.
 *
 *   POST /v1/generate   bearer node secret; frame in, text/event-stream out (generate.ts)
 *   POST /v1/drain      bearer node secret; 202, then the node drains (what `gpu-node drain` calls)
 *   GET  /healthz       200 {status:"ok"|"draining"} while the engine is healthy, 503 {status:"unhealthy"}
 *                       otherwise (draining is not unhealthy: in-flight work still finishes; /v1/node and
 *                       heartbeats say `draining`)
 *   GET  /v1/node       {id, variant, engine, version, capacity, max_queue, load:{active,queued}, draining, healthy}
 *   GET  /metrics       Prometheus text (metrics.ts)
 *
 * `createAgent` builds the app only; `listen` (listen.ts) serves it, `startNode` (node.ts) adds the
 * heartbeat and the drain sequence.
 */
import { Hono } from "hono";
import { DEFAULT_FRAME_LIMITS, type FrameLimits, type ModelVariant } from "../../../src/protocol/index";
import type { Engine } from "../engines/engine";
import { Admission } from "./admission";
import { nodeSecretAuth } from "./auth";
import { AgentError } from "./errors";
import { DEFAULT_STREAM_INTERVAL_MS, generateHandler, type InFlight, type RetryAfterSeconds } from "./generate";
import { type Logger, silentLogger } from "./log";
import { type AgentMetrics, createAgentMetrics } from "./metrics";

export interface AgentOptions {
  engine: Engine;
  /** Shared with the edge; required, non-empty. */
  nodeSecret: string;
  /** The model variant this node serves; frames for another are refused (default "qwen-vl-chat"). */
  variant?: ModelVariant;
  /** Defaults to the engine's capacity. */
  capacity?: number;
  /** Requests that may wait beyond capacity (default 2 × capacity). */
  maxQueue?: number;
  limits?: Partial<FrameLimits>;
  retryAfterS?: Partial<RetryAfterSeconds>;
  log?: Logger;
  /** Reported by /v1/node. */
  nodeId?: string;
  /** Called by `POST /v1/drain` (default: stop admitting). */
  onDrainRequest?: () => void;
  /** Process metrics (CPU, memory, event loop) in /metrics too. */
  defaultMetrics?: boolean;
  /**
   * Output pacing: at most one write per stream per this many ms, a prompt's first token and the end
   * excepted (generate.ts). Default DEFAULT_STREAM_INTERVAL_MS (20); 0 writes each event when ready.
   */
  streamIntervalMs?: number;
}

export interface NodeInfo {
  id: string | null;
  variant: ModelVariant;
  engine: string;
  version: string;
  capacity: number;
  max_queue: number;
  load: { active: number; queued: number };
  draining: boolean;
  healthy: boolean;
}

export interface Agent {
  app: Hono;
  engine: Engine;
  admission: Admission;
  metrics: AgentMetrics;
  info(): NodeInfo;
  /** Stops admitting (queued requests get 503); running ones go on. */
  drain(): void;
  /** Ends every running stream with a retryable `draining` error and aborts the engine's work. */
  abortInFlight(): number;
}

export const DEFAULT_RETRY_AFTER_S: RetryAfterSeconds = { overloaded: 1, draining: 5, unavailable: 5 };

export function createAgent(options: AgentOptions): Agent {
  const { engine } = options;
  const log = options.log ?? silentLogger;
  const variant = options.variant ?? "qwen-vl-chat";
  const capacity = options.capacity ?? engine.capacity;
  const streamIntervalMs = options.streamIntervalMs ?? DEFAULT_STREAM_INTERVAL_MS;
  if (!(streamIntervalMs >= 0 && Number.isFinite(streamIntervalMs))) throw new RangeError("streamIntervalMs must be 0 or more");
  const admission = new Admission({ capacity, maxQueue: options.maxQueue ?? 2 * capacity });
  const metrics = createAgentMetrics(
    {
      active: () => admission.active,
      queued: () => admission.queued,
      capacity: () => capacity,
      draining: () => admission.draining,
      healthy: () => engine.health().ok,
    },
    { defaultMetrics: options.defaultMetrics },
  );
  const inFlight = new Set<InFlight>();
  const limits: FrameLimits = { ...DEFAULT_FRAME_LIMITS, ...options.limits };

  const info = (): NodeInfo => ({
    id: options.nodeId ?? null,
    variant,
    engine: engine.name,
    version: engine.version,
    capacity,
    max_queue: admission.maxQueue,
    load: { active: admission.active, queued: admission.queued },
    draining: admission.draining,
    healthy: engine.health().ok,
  });
  const drain = () => admission.drain();

  const app = new Hono();
  const auth = nodeSecretAuth({ secret: options.nodeSecret });

  app.get("/healthz", (c) => {
    const health = engine.health();
    if (!health.ok) return c.json({ status: "unhealthy", engine: engine.name, detail: health.detail ?? null }, 503);
    return c.json({ status: admission.draining ? "draining" : "ok", engine: engine.name });
  });
  app.get("/v1/node", (c) => c.json(info()));
  app.get("/metrics", async (c) => {
    return c.body(await metrics.registry.metrics(), 200, { "content-type": metrics.registry.contentType });
  });
  app.post(
    "/v1/generate",
    auth,
    generateHandler({
      engine,
      admission,
      metrics,
      log,
      limits,
      variant,
      retryAfterS: { ...DEFAULT_RETRY_AFTER_S, ...options.retryAfterS },
      inFlight,
      streamIntervalMs,
    }),
  );
  app.post("/v1/drain", auth, (c) => {
    log({ msg: "drain requested", via: "POST /v1/drain" });
    (options.onDrainRequest ?? drain)();
    return c.json({ draining: true }, 202);
  });
  app.all("/v1/generate", () => {
    throw new AgentError("not_found", "Use POST.", { code: "method_not_allowed", status: 405 });
  });

  app.notFound(() => new AgentError("not_found", "No such route.").toResponse());
  app.onError((err) => {
    if (err instanceof AgentError) {
      if (err.type === "unauthorized") {
        metrics.requests.inc({ outcome: "unauthorized" });
        metrics.errors.inc({ code: "unauthorized" });
        log({ level: "warn", msg: "unauthorized", status: 401, error: err.message });
      }
      return err.toResponse();
    }
    metrics.errors.inc({ code: "internal_error" });
    log({ level: "error", msg: "unhandled error", error: String((err as Error)?.stack ?? err) });
    return new AgentError("internal_error", "The node failed to process the request.").toResponse();
  });

  return {
    app,
    engine,
    admission,
    metrics,
    info,
    drain,
    abortInFlight() {
      const running = [...inFlight];
      for (const entry of running) entry.abortForShutdown();
      return running.length;
    },
  };
}
