/**
 * A local stack for end-to-end tests: the edge under `wrangler dev` and GPU nodes (`gpu-node serve
 * --engine simulated`) registered to it, all on 127.0.0.1 with free ports. Every wait is bounded;
 * `stop()` sends SIGTERM (nodes drain and deregister) and SIGKILLs what is left after a timeout.
 *
 * Keys: the edge gets a random root key (`EDGE_API_KEY`, `rootKey`); `key` is a `qvl_` key with every
 * scope made through the admin route with it, the way `npm start` makes its development key.
 * The caches are off (source, tensor and result) unless `vars` turns them on: these tests count the
 * requests that reach each node and time their sequences, and a cache would change both.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startSimulatedNode } from "../../support/simulated-node";

export { metricValue } from "../../support/metrics";

const root = fileURLToPath(new URL("../../..", import.meta.url));

export interface NodeSpec {
  id: string;
  variant?: "qwen-vl" | "qwen-vl-chat";
  /** `--simulate` spec, e.g. `fault=fail_before_first_token`. */
  simulate?: string;
}

export interface RunningNode {
  id: string;
  url: string;
  process: ChildProcess;
  metrics(): Promise<string>;
}

export interface Stack {
  edge: string;
  /** A `qvl_` key with every scope (rate 100000/min). */
  key: string;
  /** The root key (`EDGE_API_KEY`). */
  rootKey: string;
  nodeSecret: string;
  nodes: Map<string, RunningNode>;
  logs: string[];
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/** Polls `check` until it holds; gives up after `ms`, or at once when `alive` says the process it waits for is gone. */
async function waitFor(what: string, check: () => Promise<boolean>, ms: number, alive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`${what} exited before it was ready`);
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} not ready within ${ms} ms`);
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once("exit", () => r()));
}

/** Tries at starting `wrangler dev`: a port found free can be taken by another process before workerd binds it. */
const EDGE_START_ATTEMPTS = 3;

export async function startStack(specs: NodeSpec[], options: { vars?: Record<string, string> } = {}): Promise<Stack> {
  let edge = "";
  const rootKey = `root_${randomBytes(16).toString("hex")}`;
  let key = "";
  const nodeSecret = randomBytes(16).toString("hex");
  const logs: string[] = [];
  const children: ChildProcess[] = [];
  // Its own local state (KV, R2, Durable Objects), not the .wrangler/state that `npm start` keeps.
  const persist = mkdtempSync(join(tmpdir(), "qvl-e2e-"));
  const keep = (name: string) => (d: Buffer) => {
    if (logs.length < 2000) logs.push(`[${name}] ${d.toString()}`);
  };
  const vars = {
    EDGE_API_KEY: rootKey,
    NODE_SECRET: nodeSecret,
    ALLOW_HTTP_LOOPBACK: "true",
    SSE_KEEP_ALIVE_MS: "500",
    SOURCE_CACHE_MAX_TTL_S: "0",
    TENSOR_CACHE_MAX_AGE_S: "0",
    RESULT_CACHE_TTL_S: "0",
    ...options.vars,
  };
  const startEdge = async (): Promise<ChildProcess> => {
    const port = await freePort();
    edge = `http://127.0.0.1:${port}`;
    const child = spawn(
      process.execPath,
      [
        `${root}node_modules/wrangler/bin/wrangler.js`,
        "dev",
        "--ip",
        "127.0.0.1",
        "--port",
        String(port),
        "--inspector-port",
        String(await freePort()),
        "--show-interactive-dev-session=false",
        "--persist-to",
        persist,
        ...Object.entries(vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
      ],
      {
        cwd: root,
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    child.stdout?.on("data", keep("edge"));
    child.stderr?.on("data", keep("edge"));
    children.push(child);
    return child;
  };
  // Where the current wrangler's output starts in `logs` (a retry looks only at its own attempt's).
  let logged = logs.length;
  let wrangler = await startEdge();

  const nodes = new Map<string, RunningNode>();
  const stop = async () => {
    for (const n of nodes.values()) n.process.kill("SIGTERM");
    await Promise.race([Promise.all([...nodes.values()].map((n) => exited(n.process))), new Promise((r) => setTimeout(r, 8000))]);
    wrangler.kill("SIGTERM");
    await Promise.race([exited(wrangler), new Promise((r) => setTimeout(r, 5000))]);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    rmSync(persist, { recursive: true, force: true });
  };
  try {
    for (let attempt = 1; ; attempt++) {
      const child = wrangler;
      const portTaken = () => logs.slice(logged).join("").includes("Address already in use");
      try {
        await waitFor(
          "edge",
          async () => (await fetch(`${edge}/healthz`, { signal: AbortSignal.timeout(1000) })).ok,
          90_000,
          () => child.exitCode === null && child.signalCode === null && !portTaken(),
        );
        break;
      } catch (err) {
        if (!portTaken() || attempt >= EDGE_START_ATTEMPTS) throw err;
        child.kill("SIGTERM");
        logged = logs.length;
        wrangler = await startEdge();
      }
    }
    key = await createAllScopesKey(edge, rootKey);
    for (const spec of specs) {
      const { url, child } = await startSimulatedNode({
        secret: nodeSecret,
        args: [
          "--edge",
          edge,
          "--node-id",
          spec.id,
          "--variant",
          spec.variant ?? "qwen-vl-chat",
          "--heartbeat-ms",
          "1000",
          "--drain-timeout-ms",
          "3000",
          ...(spec.simulate ? ["--simulate", spec.simulate] : []),
        ],
        onLog: keep(spec.id),
      });
      children.push(child);
      nodes.set(spec.id, {
        id: spec.id,
        url,
        process: child,
        metrics: async () => (await fetch(`${url}/metrics`)).text(),
      });
    }
    // Every node registered (the edge's pool lists them).
    await waitFor(
      "node registration",
      async () => {
        const res = await fetch(`${edge}/v1/pool/nodes`, { headers: { authorization: `Bearer ${nodeSecret}` } });
        const body = (await res.json()) as { nodes: Array<{ id: string }> };
        return specs.every((s) => body.nodes.some((n) => n.id === s.id));
      },
      30_000,
    );
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${logs.slice(-40).join("")}`);
  }
  return { edge, key, rootKey, nodeSecret, nodes, logs, stop };
}

/** A `qvl_` key with every scope, made through the admin route (`POST /v1/keys`) with the root key. */
export async function createAllScopesKey(edge: string, rootKey: string, name = "e2e"): Promise<string> {
  const res = await fetch(`${edge}/v1/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${rootKey}`, "content-type": "application/json" },
    body: JSON.stringify({ name, scopes: ["caption", "vqa", "grounding", "chat", "moderate", "admin"], rate: "100000/min" }),
  });
  if (res.status !== 201) throw new Error(`creating a key: HTTP ${res.status} ${await res.text()}`);
  return ((await res.json()) as { key: string }).key;
}
