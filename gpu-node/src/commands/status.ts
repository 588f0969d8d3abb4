/**
 * `gpu-node status`: asks a node for `/v1/node` and `/healthz`; prints them as text (or `--json`).
 * Exit 0 when the node answered and is healthy (draining included), 1 when unreachable or unhealthy.
 */
import { parseArgs } from "node:util";
import type { NodeInfo } from "../agent/agent";
import type { Command, CommandContext } from "./command";
import { DEFAULT_PORT } from "./serve";

export const DEFAULT_NODE_URL = `http://127.0.0.1:${DEFAULT_PORT}`;

const USAGE = `usage: gpu-node status [--url URL] [--json] [--timeout-ms N]

Shows a running node: engine, variant, capacity, load, draining, health.
  --url URL          the node (default env QVL_NODE_URL, else ${DEFAULT_NODE_URL})
  --json             one JSON object instead of text
  --timeout-ms N     per request (default 5000)
Exit status: 0 healthy (or draining), 1 unreachable or unhealthy, 64 usage.`;

/** Parses the flags `status` and `drain` share; returns a string for a usage error. */
export function nodeUrl(value: string | undefined, env: NodeJS.ProcessEnv): string | Error {
  const raw = value ?? env.QVL_NODE_URL ?? DEFAULT_NODE_URL;
  try {
    const u = new URL(raw);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
    return u.href.replace(/\/$/, "");
  } catch {
    return new Error(`--url must be an http(s) URL, got '${raw}'`);
  }
}

export function timeoutMs(value: string | undefined, fallback: number): number | Error {
  if (value === undefined) return fallback;
  return /^\d+$/.test(value) && Number(value) > 0 ? Number(value) : new Error("--timeout-ms must be a positive integer");
}

async function run(argv: string[], ctx: CommandContext): Promise<number> {
  let values: { url?: string; json?: boolean; "timeout-ms"?: string };
  try {
    values = parseArgs({
      args: argv,
      options: { url: { type: "string" }, json: { type: "boolean" }, "timeout-ms": { type: "string" } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    ctx.stderr(`gpu-node status: ${(err as Error).message}\n\n${USAGE}\n`);
    return 64;
  }
  const base = nodeUrl(values.url, ctx.env);
  const timeout = timeoutMs(values["timeout-ms"], 5_000);
  for (const v of [base, timeout]) {
    if (v instanceof Error) {
      ctx.stderr(`gpu-node status: ${v.message}\n\n${USAGE}\n`);
      return 64;
    }
  }
  const url = base as string;
  const get = async (path: string) => {
    const res = await fetch(new URL(path, url), { signal: AbortSignal.timeout(timeout as number) });
    return { status: res.status, body: (await res.json().catch(() => null)) as unknown };
  };
  let node: { status: number; body: unknown };
  let health: { status: number; body: unknown };
  try {
    [node, health] = await Promise.all([get("/v1/node"), get("/healthz")]);
  } catch (err) {
    const message = (err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message;
    if (values.json) ctx.stdout(`${JSON.stringify({ url, reachable: false, error: message })}\n`);
    else ctx.stdout(`node    ${url}\nstate   unreachable (${message})\n`);
    return 1;
  }
  const healthy = health.status === 200;
  const info = node.status === 200 ? (node.body as NodeInfo) : undefined;
  const healthBody = health.body as { status?: string; detail?: string | null } | null;
  if (values.json) {
    ctx.stdout(
      `${JSON.stringify({ url, reachable: true, healthy, health: { status: health.status, ...(healthBody ?? {}) }, node: info ?? null })}\n`,
    );
  } else {
    const state = healthy ? (info?.draining ? "draining" : "ok") : `unhealthy${healthBody?.detail ? ` (${healthBody.detail})` : ""}`;
    const lines = [`node    ${url}${info?.id ? `  (id ${info.id})` : ""}`, `state   ${state}`];
    if (info) {
      lines.push(
        `engine  ${info.engine} ${info.version}${info.engine === "simulated" ? "  (no model: a test instrument)" : ""}`,
        `variant ${info.variant}`,
        `load    ${info.load.active} running, ${info.load.queued} queued; capacity ${info.capacity}, queue limit ${info.max_queue}`,
      );
    } else {
      lines.push(`/v1/node answered ${node.status}`);
    }
    ctx.stdout(`${lines.join("\n")}\n`);
  }
  return healthy ? 0 : 1;
}

export const status: Command = {
  name: "status",
  description: "show a running node's engine, load, draining and health",
  usage: USAGE,
  run,
};
