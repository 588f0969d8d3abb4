/**
 * `gpu-node serve`: the agent plus its engine; registers and heartbeats to the edge when `--edge` is
 * given; SIGTERM/SIGINT drain (a second signal exits at once, 128 + signal number). Prints one JSON line
 * `{"event":"listening","url":…}` on stdout when ready; logs are JSON lines on stderr.
 */
import { parseArgs } from "node:util";
import { ModelVariant } from "../../../src/protocol/index";
import { DEFAULT_STREAM_INTERVAL_MS } from "../agent/generate";
import { jsonLogger } from "../agent/log";
import { type RunningNode, startNode } from "../agent/node";
import type { Engine } from "../engines/engine";
import { formatSimulateSpec, parseSimulateSpec, SIMULATE_KEYS, SimulatedEngine } from "../engines/simulated";
import type { Command, CommandContext } from "./command";

export const DEFAULT_PORT = 8400;

const USAGE = `usage: gpu-node serve --engine simulated|trtllm [options]

Runs the node agent (POST /v1/generate, GET /healthz, /v1/node, /metrics, POST /v1/drain) with one engine.
Prints {"event":"listening","url":…} on stdout when ready; logs JSON lines on stderr.
SIGTERM or SIGINT drains (no new work, running requests finish, deregister) and exits 0; a second signal exits at once.

engine:
  --engine NAME          simulated (no model: a test instrument) or trtllm (TensorRT-LLM)
  --capacity N           requests run at once (default: the engine's; simulated 4)
  --simulate SPEC        simulated only: key=value,… (env QVL_SIMULATE); keys:
${Object.entries(SIMULATE_KEYS)
  .map(([k, v]) => `                           ${k.padEnd(13)} ${v}`)
  .join("\n")}
  --engine-dir DIR       trtllm only: the directory \`gpu-node build\` wrote
  --python PATH          trtllm only: the Python interpreter for the worker (default python3)
  --variant NAME         qwen-vl | qwen-vl-chat (default qwen-vl-chat); frames for another are refused

agent:
  --host ADDR            listen address (default 127.0.0.1)
  --port N               listen port, 0 for any free one (default ${DEFAULT_PORT})
  --node-secret S        bearer secret shared with the edge (or env QVL_NODE_SECRET; required)
  --max-queue N          requests that may wait beyond capacity (default 2 × capacity); beyond it 429
  --drain-timeout-ms N   how long running requests may finish when draining (default 30000)
  --stream-interval-ms N output pacing: write a stream at most once per N ms, its first tokens and its end at
                         once, tokens in between merged (env QVL_STREAM_INTERVAL_MS; default ${DEFAULT_STREAM_INTERVAL_MS}; 0 = every token when ready)

edge registration (all optional; without --edge the node does not register):
  --edge URL             the edge's origin; heartbeats go to POST {edge}/v1/pool/heartbeat
  --node-id ID           this node's id in the pool (default hostname:port)
  --public-url URL       where the edge reaches this node (default the listening URL)
  --region R             reported to the edge
  --heartbeat-ms N       heartbeat interval (default 5000)

example:
  gpu-node serve --engine simulated --port 0 --node-secret dev --simulate tokens_per_s=200,fault=stall,fault_rate=0.1`;

const OPTIONS = {
  engine: { type: "string" },
  port: { type: "string" },
  host: { type: "string" },
  "node-secret": { type: "string" },
  capacity: { type: "string" },
  "max-queue": { type: "string" },
  simulate: { type: "string" },
  "engine-dir": { type: "string" },
  python: { type: "string" },
  variant: { type: "string" },
  "drain-timeout-ms": { type: "string" },
  "stream-interval-ms": { type: "string" },
  edge: { type: "string" },
  "node-id": { type: "string" },
  "public-url": { type: "string" },
  region: { type: "string" },
  "heartbeat-ms": { type: "string" },
} as const;

class UsageError extends Error {}

function int(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) throw new UsageError(`--${name} must be an integer in [${min}, ${max}]`);
  return n;
}

function url(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    const u = new URL(value);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
    return u.href.replace(/\/$/, "");
  } catch {
    throw new UsageError(`--${name} must be an http(s) URL`);
  }
}

export interface ServeConfig {
  engine: "simulated" | "trtllm";
  host: string;
  port: number;
  nodeSecret: string;
  variant: ModelVariant;
  capacity?: number;
  maxQueue?: number;
  simulate?: string;
  engineDir?: string;
  python?: string;
  drainTimeoutMs: number;
  /** Output pacing of generate streams (ms; 0 = none). */
  streamIntervalMs: number;
  edge?: { edge: string; nodeId?: string; publicUrl?: string; region?: string; intervalMs?: number };
}

/** Parses and checks `serve`'s argv (throws UsageError). */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv): ServeConfig {
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const engine = values.engine;
  if (engine !== "simulated" && engine !== "trtllm") throw new UsageError("--engine must be 'simulated' or 'trtllm'");
  const nodeSecret = values["node-secret"] ?? env.QVL_NODE_SECRET;
  if (!nodeSecret) throw new UsageError("a node secret is required: --node-secret S or env QVL_NODE_SECRET");
  const variant = ModelVariant.safeParse(values.variant ?? "qwen-vl-chat");
  if (!variant.success) throw new UsageError("--variant must be 'qwen-vl' or 'qwen-vl-chat'");
  const simulate = values.simulate ?? (engine === "simulated" ? env.QVL_SIMULATE : undefined);
  if (simulate !== undefined && engine !== "simulated") throw new UsageError("--simulate applies to --engine simulated only");
  if (engine === "trtllm" && !values["engine-dir"])
    throw new UsageError("--engine trtllm needs --engine-dir DIR (what `gpu-node build` wrote)");
  if (engine === "simulated" && (values["engine-dir"] || values.python))
    throw new UsageError("--engine-dir and --python apply to --engine trtllm only");
  const edge = url("edge", values.edge);
  for (const flag of ["node-id", "public-url", "region", "heartbeat-ms"] as const) {
    if (values[flag] !== undefined && !edge) throw new UsageError(`--${flag} needs --edge`);
  }
  return {
    engine,
    host: values.host ?? "127.0.0.1",
    port: int("port", values.port, 0, 65535) ?? DEFAULT_PORT,
    nodeSecret,
    variant: variant.data,
    capacity: int("capacity", values.capacity, 1, 1024),
    maxQueue: int("max-queue", values["max-queue"], 0, 100_000),
    simulate,
    engineDir: values["engine-dir"],
    python: values.python,
    drainTimeoutMs: int("drain-timeout-ms", values["drain-timeout-ms"], 0, 3_600_000) ?? 30_000,
    streamIntervalMs:
      int("stream-interval-ms", values["stream-interval-ms"] ?? (env.QVL_STREAM_INTERVAL_MS || undefined), 0, 10_000) ??
      DEFAULT_STREAM_INTERVAL_MS,
    edge: edge
      ? {
          edge,
          nodeId: values["node-id"],
          publicUrl: url("public-url", values["public-url"]),
          region: values.region,
          intervalMs: int("heartbeat-ms", values["heartbeat-ms"], 50, 600_000),
        }
      : undefined,
  };
}

async function createEngine(config: ServeConfig): Promise<{ engine: Engine; detail: Record<string, unknown> }> {
  if (config.engine === "simulated") {
    let spec: ReturnType<typeof parseSimulateSpec>;
    try {
      spec = parseSimulateSpec(config.simulate ?? "");
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const engine = new SimulatedEngine({ ...spec, ...(config.capacity !== undefined ? { capacity: config.capacity } : {}) });
    return { engine, detail: { simulate: formatSimulateSpec(engine.options) } };
  }
  // Loaded only here, so the simulated path never needs the TensorRT-LLM engine's module.
  const { createTrtllmEngine } = await import("../engines/trtllm");
  const engine: Engine = createTrtllmEngine({ engineDir: config.engineDir!, python: config.python, capacity: config.capacity });
  return { engine, detail: { engine_dir: config.engineDir } };
}

const SIGNAL_NUMBERS = { SIGINT: 2, SIGTERM: 15 } as const;

async function run(argv: string[], ctx: CommandContext): Promise<number> {
  let config: ServeConfig;
  let engine: Engine;
  let detail: Record<string, unknown>;
  try {
    config = parseServeArgs(argv, ctx.env);
    ({ engine, detail } = await createEngine(config));
  } catch (err) {
    if (err instanceof UsageError) {
      ctx.stderr(`gpu-node serve: ${err.message}\n\n${USAGE}\n`);
      return 64;
    }
    throw err;
  }
  const log = jsonLogger(ctx.stderr);

  // Signals are handled from the start: one during the engine's (long) start stops it and exits 0.
  let node: RunningNode | undefined;
  let stopRequested: string | undefined;
  let signals = 0;
  const onSignal = (signal: keyof typeof SIGNAL_NUMBERS) => {
    signals++;
    if (signals > 1) {
      log({ level: "warn", msg: "second signal: exiting now", signal });
      process.exit(128 + SIGNAL_NUMBERS[signal]);
    }
    if (node) {
      void node.drain(signal);
    } else {
      stopRequested = signal;
      log({ msg: "signal during startup: stopping the engine", signal });
      void engine.close().catch(() => {});
    }
  };
  const onTerm = () => onSignal("SIGTERM");
  const onInt = () => onSignal("SIGINT");
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  log({
    msg: "starting",
    engine: engine.name,
    host: config.host,
    port: config.port,
    stream_interval_ms: config.streamIntervalMs,
    ...detail,
  });
  try {
    try {
      node = await startNode({
        engine,
        nodeSecret: config.nodeSecret,
        variant: config.variant,
        maxQueue: config.maxQueue,
        host: config.host,
        port: config.port,
        drainTimeoutMs: config.drainTimeoutMs,
        streamIntervalMs: config.streamIntervalMs,
        log,
        defaultMetrics: true,
        heartbeat: config.edge,
      });
    } catch (err) {
      if (stopRequested) return 0;
      log({ level: "error", msg: "could not start", error: (err as Error).message });
      return 1;
    }
    if (stopRequested) {
      await node.drain(stopRequested);
      return 0;
    }
    const info = node.agent.info();
    ctx.stdout(
      `${JSON.stringify({
        event: "listening",
        url: node.url,
        pid: process.pid,
        engine: info.engine,
        version: info.version,
        variant: info.variant,
        capacity: info.capacity,
        max_queue: info.max_queue,
        node_id: info.id,
        edge: config.edge?.edge ?? null,
        stream_interval_ms: config.streamIntervalMs,
        ...detail,
      })}\n`,
    );
    await node.closed;
    return 0;
  } finally {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
  }
}

export const serve: Command = {
  name: "serve",
  description: "run the node agent with an engine (simulated or trtllm)",
  usage: USAGE,
  run,
};
