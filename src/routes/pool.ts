/**
 * The pool's HTTP face, for GPU nodes and operators, behind the node secret (`NODE_SECRET`):
 *
 *   POST /v1/pool/heartbeat   a node registers, refreshes, drains or deregisters (see src/pool/schema.ts)
 *                             → {ok: true, state, ttl_ms, heartbeat_ms}
 *   GET  /v1/pool/nodes       the live nodes with their state, static ones included (for operators)
 */
import { Hono } from "hono";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { readCapped } from "../image/fetch";
import { bearerToken } from "../middleware/bearer-token";
import { POOL_NAME } from "../pool/pool-object";
import { mergeNodes } from "../pool/router";
import { HEARTBEAT_MAX_BYTES, parseNodeMessage, staticPoolNode } from "../pool/schema";

export const pool = new Hono<AppEnv>();

pool.use(bearerToken({ token: (c) => c.env.NODE_SECRET, realm: "qwen-vl-pool" }));

pool.post("/heartbeat", async (c) => {
  const body = await readJson(c.req.raw, HEARTBEAT_MAX_BYTES);
  // Validated here for a precise 400, and again inside the Durable Object (which trusts no caller).
  const parsed = parseNodeMessage(body);
  if (!parsed.ok)
    throw new ApiError("invalid_request", `Invalid heartbeat: ${parsed.message}.`, parsed.param ? { param: parsed.param } : {});
  const result = await c.env.POOL.getByName(POOL_NAME).heartbeat(parsed.value);
  if (!result.ok) {
    if (result.error === "pool_full") throw new ApiError("no_capacity", result.message, { retryAfter: result.retryAfter });
    throw new ApiError("invalid_request", `Invalid heartbeat: ${result.message}.`, result.param ? { param: result.param } : {});
  }
  return c.json({ ok: true, state: result.state, ttl_ms: result.ttlMs, heartbeat_ms: result.heartbeatMs });
});

pool.get("/nodes", async (c) => {
  const config = c.get("config");
  const now = Date.now();
  const registered = await c.env.POOL.getByName(POOL_NAME).list();
  const nodes = mergeNodes(
    config.pool.staticNodes.map((n) => staticPoolNode(n, now)),
    registered,
  );
  return c.json({
    ttl_ms: config.pool.nodeTtlMs,
    heartbeat_ms: config.pool.heartbeatMs,
    nodes: nodes.map((n) => ({
      id: n.id,
      url: n.url,
      variant: n.variant,
      engine: n.engine,
      version: n.version,
      region: n.region ?? null,
      capacity: n.capacity,
      load: n.load,
      state: n.draining ? "draining" : "active",
      source: n.source,
      last_seen: new Date(n.lastSeen).toISOString(),
      age_ms: Math.max(0, now - n.lastSeen),
    })),
  });
});

/** A JSON body of at most `maxBytes` (413 beyond it, counted while reading; 400 when it is not JSON). */
async function readJson(request: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = () => new ApiError("request_too_large", `The request body exceeds ${maxBytes} bytes.`);
  if (Number(request.headers.get("content-length") ?? Number.NaN) > maxBytes) throw tooLarge();
  if (!request.body) throw new ApiError("invalid_request", "The request body must be a JSON object.");
  const bytes = await readCapped(request.body, maxBytes, undefined, tooLarge);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ApiError("invalid_request", "The request body is not valid UTF-8.");
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError("invalid_request", "The request body is not valid JSON.");
  }
}
