/**
 * A running node: the engine started, the agent listening, the heartbeat (when an edge is configured),
 * and the drain sequence shared by SIGTERM and `POST /v1/drain`:
 *
 *   1. stop admitting (new and queued requests get 503 `draining`), tell the edge at once (draining=true);
 *   2. let running requests finish, for at most `drainTimeoutMs`; then end them with a retryable
 *      `draining` error event and abort their engine work;
 *   3. send the final heartbeat (draining=true, final=true: deregister), close the server, close the engine.
 */
import { hostname } from "node:os";
import type { Hono } from "hono";
import type { Engine } from "../engines/engine";
import { type Agent, type AgentOptions, createAgent } from "./agent";
import { Heartbeat } from "./heartbeat";
import { listen } from "./listen";
import { type Logger, silentLogger } from "./log";
import { startingApp } from "./starting";

export interface EdgeOptions {
  /** The edge's origin; heartbeats go to `{edge}/v1/pool/heartbeat`. */
  edge: string;
  /** Default: `hostname:port`. */
  nodeId?: string;
  /** The URL the edge should call this node at (default: the listening URL). */
  publicUrl?: string;
  region?: string;
  intervalMs?: number;
  fetch?: typeof fetch;
}

export interface NodeOptions extends Omit<AgentOptions, "onDrainRequest"> {
  engine: Engine;
  host?: string;
  port?: number;
  /** How long running requests may take to finish once draining (default 30 s). */
  drainTimeoutMs?: number;
  heartbeat?: EdgeOptions;
  log?: Logger;
}

export interface RunningNode {
  agent: Agent;
  url: string;
  port: number;
  heartbeat: Heartbeat | undefined;
  /** Runs the drain sequence once; resolves when the node is closed. */
  drain(reason?: string): Promise<void>;
  /** Resolves when the node has closed (after a drain). */
  readonly closed: Promise<void>;
}

export async function startNode(options: NodeOptions): Promise<RunningNode> {
  const log = options.log ?? silentLogger;
  const { engine } = options;
  // Listen first, answering "starting" while the engine loads; the agent takes over once it is ready.
  let app: { fetch: Hono["fetch"] } = startingApp(engine.name);
  const listening = await listen({ fetch: (request, env) => app.fetch(request, env) }, { host: options.host, port: options.port });
  try {
    await engine.start();
  } catch (err) {
    await listening.close();
    await engine.close().catch(() => {});
    throw err;
  }
  let node: RunningNode | undefined;
  const agentOptions: AgentOptions = {
    ...options,
    nodeId: options.nodeId ?? options.heartbeat?.nodeId,
    onDrainRequest: () => void node?.drain("POST /v1/drain"),
  };
  const agent = createAgent(agentOptions);
  app = agent.app;

  // The port is known only now (port 0): the default id is hostname:port.
  if (options.heartbeat) agentOptions.nodeId ??= `${hostname()}:${listening.port}`;
  let heartbeat: Heartbeat | undefined;
  if (options.heartbeat) {
    const hb = options.heartbeat;
    const id = agentOptions.nodeId!;
    // Bound to every interface: the listening URL (0.0.0.0) is no address for the edge; the hostname is a guess.
    const wildcard = options.host === "0.0.0.0" || options.host === "::";
    const url = hb.publicUrl ?? (wildcard ? `http://${hostname()}:${listening.port}` : listening.url);
    if (!hb.publicUrl && wildcard) log({ level: "warn", msg: "no --public-url: telling the edge to call this node at its hostname", url });
    heartbeat = new Heartbeat({
      edge: hb.edge,
      secret: options.nodeSecret,
      intervalMs: hb.intervalMs,
      fetch: hb.fetch,
      log,
      body: () => {
        const info = agent.info();
        return {
          id,
          url,
          variant: info.variant,
          engine: info.engine,
          version: info.version,
          capacity: info.capacity,
          load: info.load,
          draining: info.draining,
          region: hb.region ?? null,
          healthy: info.healthy,
        };
      },
    });
    heartbeat.start();
  }

  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => {
    resolveClosed = resolve;
  });
  let draining: Promise<void> | undefined;
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;

  const sequence = async (reason: string) => {
    const t0 = performance.now();
    log({ msg: "draining", reason, active: agent.admission.active, queued: agent.admission.queued, drain_timeout_ms: drainTimeoutMs });
    agent.drain();
    heartbeat?.beatNow();
    if (!(await within(agent.admission.idle(), drainTimeoutMs))) {
      const aborted = agent.abortInFlight();
      log({ level: "warn", msg: "drain timeout: aborting running requests", aborted });
      // The engine was asked to stop; give it a moment, but do not hang on it.
      await within(agent.admission.idle(), 5_000);
    }
    await heartbeat?.stop({ final: true });
    await listening.close();
    await engine.close().catch((err) => log({ level: "error", msg: "engine close failed", error: String(err) }));
    log({ msg: "drained", duration_ms: Math.round(performance.now() - t0) });
    resolveClosed();
  };

  node = {
    agent,
    url: listening.url,
    port: listening.port,
    heartbeat,
    closed,
    drain(reason = "requested") {
      draining ??= sequence(reason);
      return draining;
    },
  };
  return node;
}

/** True when `promise` settled within `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
