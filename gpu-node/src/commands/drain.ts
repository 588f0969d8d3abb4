/**
 * `gpu-node drain`: asks a running node to drain (`POST /v1/drain`, bearer node secret) — the same
 * sequence as SIGTERM: no new work, running requests finish, deregister, exit. With `--wait`, waits
 * until the node has stopped answering.
 */
import { parseArgs } from "node:util";
import type { Command, CommandContext } from "./command";
import { DEFAULT_NODE_URL, nodeUrl, timeoutMs } from "./status";

const USAGE = `usage: gpu-node drain [--url URL] [--node-secret S] [--wait] [--timeout-ms N]

Asks a running node to drain: it stops admitting, lets running requests finish, deregisters from the
edge, and exits.
  --url URL          the node (default env QVL_NODE_URL, else ${DEFAULT_NODE_URL})
  --node-secret S    the node secret (or env QVL_NODE_SECRET; required)
  --wait             wait until the node has stopped answering
  --timeout-ms N     for the request, and with --wait for the whole wait (default 5000 / 60000)
Exit status: 0 draining (with --wait: stopped), 1 refused, unreachable or still up at the timeout, 64 usage.`;

async function run(argv: string[], ctx: CommandContext): Promise<number> {
  let values: { url?: string; "node-secret"?: string; wait?: boolean; "timeout-ms"?: string };
  try {
    values = parseArgs({
      args: argv,
      options: { url: { type: "string" }, "node-secret": { type: "string" }, wait: { type: "boolean" }, "timeout-ms": { type: "string" } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    ctx.stderr(`gpu-node drain: ${(err as Error).message}\n\n${USAGE}\n`);
    return 64;
  }
  const base = nodeUrl(values.url, ctx.env);
  const timeout = timeoutMs(values["timeout-ms"], values.wait ? 60_000 : 5_000);
  const secret = values["node-secret"] ?? ctx.env.QVL_NODE_SECRET;
  const problem =
    base instanceof Error
      ? base
      : timeout instanceof Error
        ? timeout
        : !secret
          ? new Error("a node secret is required: --node-secret S or env QVL_NODE_SECRET")
          : undefined;
  if (problem) {
    ctx.stderr(`gpu-node drain: ${problem.message}\n\n${USAGE}\n`);
    return 64;
  }
  const url = base as string;
  const deadline = performance.now() + (timeout as number);
  let res: Response;
  try {
    res = await fetch(new URL("/v1/drain", url), {
      method: "POST",
      headers: { authorization: `Bearer ${secret}` },
      signal: AbortSignal.timeout(Math.min(timeout as number, 10_000)),
    });
  } catch (err) {
    ctx.stderr(`gpu-node drain: ${url} is unreachable: ${causeOf(err)}\n`);
    return 1;
  }
  const body = await res.text();
  if (res.status !== 202) {
    ctx.stderr(`gpu-node drain: ${url} answered ${res.status}: ${body}\n`);
    return 1;
  }
  ctx.stdout(`${url}: draining\n`);
  if (!values.wait) return 0;
  while (performance.now() < deadline) {
    try {
      const r = await fetch(new URL("/v1/node", url), { signal: AbortSignal.timeout(2_000) });
      await r.body?.cancel();
    } catch {
      ctx.stdout(`${url}: stopped\n`);
      return 0;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  ctx.stderr(`gpu-node drain: ${url} still answers after ${timeout} ms\n`);
  return 1;
}

function causeOf(err: unknown): string {
  const e = err as Error;
  return e.cause instanceof Error ? e.cause.message : e.message;
}

export const drain: Command = {
  name: "drain",
  description: "ask a running node to drain and exit (POST /v1/drain)",
  usage: USAGE,
  run,
};
