/**
 * Bearer-token auth against one configured secret (the API-key system replaces it for public routes).
 * Compares SHA-256 digests in constant time, so neither length nor content leaks through timing.
 */
import type { Context, MiddlewareHandler } from "hono";
import { ApiError } from "../errors";

export interface BearerTokenOptions {
  /** Returns the expected token for this request; undefined or empty refuses everyone. */
  token: (c: Context) => string | undefined;
  realm?: string;
}

export function bearerToken(options: BearerTokenOptions): MiddlewareHandler {
  if (typeof options.token !== "function") throw new TypeError("bearerToken: options.token must be a function");
  return async function bearerTokenMiddleware(c, next) {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) throw new ApiError("invalid_api_key", "Missing bearer token: send 'Authorization: Bearer <token>'.");
    const expected = options.token(c);
    if (!expected || !(await constantTimeEqual(match[1], expected))) {
      throw new ApiError("invalid_api_key", "Invalid bearer token.");
    }
    await next();
  };
}

export async function constantTimeEqual(a: string, b: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [da, db] = await Promise.all([crypto.subtle.digest("SHA-256", enc.encode(a)), crypto.subtle.digest("SHA-256", enc.encode(b))]);
  const x = new Uint8Array(da);
  const y = new Uint8Array(db);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}
