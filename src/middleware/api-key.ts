/**
 * API-key authentication and scopes. `Authorization: Bearer qvl_…`: the key is hashed (SHA-256) and
 * looked up by its hash (src/keys/store.ts); the stored hash is compared to ours without an early exit.
 * The root key (`EDGE_API_KEY`, an operator secret) is accepted with every scope.
 *
 *   no or malformed header, unknown key, revoked key  → 401 invalid_api_key (with WWW-Authenticate)
 *   a valid key without the route's scope             → 403 insufficient_scope
 *
 * Revocation is also enforced by the key's Durable Object on every request (src/middleware/rate-limit.ts),
 * so it takes effect at once even where a cached record still says the key is live.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { DEFAULT_QUALITY, digestsEqual, hashKey, type ImageQuality, KEY_PATTERN, type KeyRecord, SCOPES, type Scope } from "../keys/keys";
import { findKeyByHash } from "../keys/store";

export interface Principal {
  /** The key id (`key_…`), or "root". */
  id: string;
  name: string;
  scopes: readonly Scope[];
  /** The root key: every scope, no rate limit, no usage. */
  root: boolean;
  /** The image quality of requests that do not name one (the key's setting; `exact` for the root key). */
  quality: ImageQuality;
  record: KeyRecord | null;
}

/** What a generation request used: reported to the key's Durable Object once the answer has ended. */
export interface UsageOutcome {
  ok: boolean;
  images: number;
  promptTokens: number;
  completionTokens: number;
  cached: boolean;
}

export interface ApiKeyOptions {
  /** The scope the route needs; undefined: any valid key. */
  scope?: Scope;
}

let rootDigest: { key: string; hash: Promise<string> } | null = null;
function rootHash(key: string): Promise<string> {
  if (rootDigest?.key !== key) rootDigest = { key, hash: hashKey(key) };
  return rootDigest.hash;
}

/** Adds a `Server-Timing` entry that the route's response will carry. */
export function addTiming(c: Context<AppEnv>, entry: string): void {
  const list = c.get("timings") ?? [];
  list.push(entry);
  c.set("timings", list);
}

export function apiKey(options: ApiKeyOptions = {}): MiddlewareHandler<AppEnv> {
  if (options.scope !== undefined && !(SCOPES as readonly string[]).includes(options.scope)) {
    throw new TypeError(`apiKey: unknown scope ${options.scope}`);
  }
  return async function apiKeyMiddleware(c, next) {
    const started = performance.now();
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) throw new ApiError("invalid_api_key", "Missing API key: send 'Authorization: Bearer qvl_…'.");
    const token = match[1];
    const hash = await hashKey(token);
    let principal: Principal | null = null;
    const root = c.env.EDGE_API_KEY;
    if (root && digestsEqual(hash, await rootHash(root))) {
      principal = { id: "root", name: "root", scopes: SCOPES, root: true, quality: DEFAULT_QUALITY, record: null };
    } else {
      if (!KEY_PATTERN.test(token)) throw new ApiError("invalid_api_key", "Invalid API key.");
      const record = await findKeyByHash(c.env, hash);
      if (!record) throw new ApiError("invalid_api_key", "Invalid API key.");
      if (record.revoked_at) throw new ApiError("invalid_api_key", "This API key has been revoked.");
      principal = { id: record.id, name: record.name, scopes: record.scopes, root: false, quality: record.quality, record };
    }
    if (options.scope && !principal.scopes.includes(options.scope)) {
      throw new ApiError("insufficient_scope", `This API key lacks the '${options.scope}' scope this route needs.`);
    }
    c.set("principal", principal);
    addTiming(c, `auth;dur=${(performance.now() - started).toFixed(1)}`);
    await next();
    const timings = c.get("timings");
    if (timings?.length) c.res.headers.append("server-timing", timings.join(", "));
  };
}
