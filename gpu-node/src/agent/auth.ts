/**
 * Bearer auth with the node secret (shared by the edge and its nodes). SHA-256 digests are compared in
 * constant time, so neither the secret's length nor its content leaks through timing.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { AgentError } from "./errors";

export interface NodeSecretAuthOptions {
  secret: string;
}

export function nodeSecretAuth(options: NodeSecretAuthOptions): MiddlewareHandler {
  if (typeof options.secret !== "string" || options.secret.length === 0)
    throw new TypeError("nodeSecretAuth: a non-empty secret is required");
  const expected = digest(options.secret);
  return async function nodeSecretAuthMiddleware(c, next) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "");
    if (!match) throw new AgentError("unauthorized", "Missing bearer token: send 'Authorization: Bearer <node secret>'.");
    if (!timingSafeEqual(digest(match[1]), expected)) throw new AgentError("unauthorized", "Invalid node secret.");
    await next();
  };
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}
