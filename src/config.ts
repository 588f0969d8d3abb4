/**
 * Configuration read from the Worker's vars, validated once per isolate. A bad value is a deployment
 * error: it is logged and every request answers 500 rather than running with a limit nobody chose.
 */
import { z } from "zod";
import { type StaticNode, StaticNodes } from "./pool/schema";

const positiveInt = z.coerce.number().int().positive();
const bool = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");

const ConfigSchema = z.object({
  IMAGE_MAX_BYTES: positiveInt.default(20_000_000),
  IMAGE_MAX_PIXELS: positiveInt.default(50_000_000),
  IMAGE_FETCH_TIMEOUT_MS: positiveInt.default(10_000),
  IMAGE_FETCH_HEADERS_TIMEOUT_MS: positiveInt.default(5_000),
  ALLOW_HTTP_LOOPBACK: bool.default(false),
  POOL_NODE_TTL_MS: z.coerce.number().int().min(1_000).max(300_000).default(10_000),
  // A JSON string (a `[vars]` string or `--var`), or the array itself when wrangler.toml gives one.
  POOL_STATIC_NODES: z
    .preprocess((v) => {
      if (typeof v !== "string") return v;
      try {
        return JSON.parse(v);
      } catch {
        return v; // fails the array check below with a readable message
      }
    }, StaticNodes)
    .default([]),
  // Start a second node when the first token is this late (0 = never hedge).
  POOL_HEDGE_AFTER_MS: z.coerce.number().int().min(0).max(60_000).default(0),
  // Milliseconds between `: keep-alive` comments while a stream waits for the GPU.
  SSE_KEEP_ALIVE_MS: z.coerce.number().int().min(0).max(60_000).default(10_000),
  // Streaming chat relay: `js` (default) frames node events in the Worker; `native` (opt-in) lets the node
  // write the client's chunks and pipes them through without JavaScript per chunk, but a node that dies
  // mid-stream then cuts the client's stream off without the error frame and [DONE] (src/stream/native.ts).
  EDGE_RELAY: z.enum(["js", "native"]).default("js"),
  // Source images by URL are kept at most this long, and only as long as their origin allows (0 = never).
  SOURCE_CACHE_MAX_TTL_S: z.coerce.number().int().min(0).max(31_536_000).default(86_400),
  // Tensors older than this are recomputed (0 = no tensor cache); R2 lifecycle rules delete them for good.
  TENSOR_CACHE_MAX_AGE_S: z.coerce.number().int().min(0).max(31_536_000).default(2_592_000),
  // Answers of deterministic requests are kept this long (0 = no result cache; KV's minimum is 60).
  RESULT_CACHE_TTL_S: z.coerce
    .number()
    .int()
    .refine((v) => v === 0 || (v >= 60 && v <= 31_536_000), "must be 0 or 60..31536000")
    .default(86_400),
});

export interface Config {
  image: { maxBytes: number; maxPixels: number };
  fetch: { totalTimeoutMs: number; headersTimeoutMs: number; allowHttpLoopback: boolean };
  /** nodeTtlMs: a node silent this long is dropped; heartbeatMs: the interval nodes are told to use (ttl / 5). */
  pool: { nodeTtlMs: number; heartbeatMs: number; staticNodes: StaticNode[]; hedgeAfterMs: number | undefined };
  stream: { keepAliveMs: number; relay: "js" | "native" };
  cache: { sourceMaxTtlS: number; tensorMaxAgeS: number; resultTtlS: number };
}

const cache = new WeakMap<object, Config>();

export function loadConfig(env: Record<string, unknown>): Config {
  const hit = cache.get(env);
  if (hit) return hit;
  const raw = ConfigSchema.parse(env);
  const config: Config = {
    image: { maxBytes: raw.IMAGE_MAX_BYTES, maxPixels: raw.IMAGE_MAX_PIXELS },
    fetch: {
      totalTimeoutMs: raw.IMAGE_FETCH_TIMEOUT_MS,
      headersTimeoutMs: raw.IMAGE_FETCH_HEADERS_TIMEOUT_MS,
      allowHttpLoopback: raw.ALLOW_HTTP_LOOPBACK,
    },
    pool: {
      nodeTtlMs: raw.POOL_NODE_TTL_MS,
      heartbeatMs: Math.floor(raw.POOL_NODE_TTL_MS / 5),
      staticNodes: raw.POOL_STATIC_NODES,
      hedgeAfterMs: raw.POOL_HEDGE_AFTER_MS || undefined,
    },
    stream: { keepAliveMs: raw.SSE_KEEP_ALIVE_MS, relay: raw.EDGE_RELAY },
    cache: { sourceMaxTtlS: raw.SOURCE_CACHE_MAX_TTL_S, tensorMaxAgeS: raw.TENSOR_CACHE_MAX_AGE_S, resultTtlS: raw.RESULT_CACHE_TTL_S },
  };
  cache.set(env, config);
  return config;
}
