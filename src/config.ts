/**
 * Configuration read from the Worker's vars, validated once per isolate. A bad value is a deployment
 * error: it is logged and every request answers 500 rather than running with a limit nobody chose.
 */
import { z } from "zod";

const positiveInt = z.coerce.number().int().positive();
const bool = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");

const ConfigSchema = z.object({
  IMAGE_MAX_BYTES: positiveInt.default(20_000_000),
  IMAGE_MAX_PIXELS: positiveInt.default(50_000_000),
  IMAGE_FETCH_TIMEOUT_MS: positiveInt.default(10_000),
  IMAGE_FETCH_HEADERS_TIMEOUT_MS: positiveInt.default(5_000),
  ALLOW_HTTP_LOOPBACK: bool.default(false),
});

export interface Config {
  image: { maxBytes: number; maxPixels: number };
  fetch: { totalTimeoutMs: number; headersTimeoutMs: number; allowHttpLoopback: boolean };
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
  };
  cache.set(env, config);
  return config;
}
