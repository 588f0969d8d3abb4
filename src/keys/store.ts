/**
 * API keys in KV (binding `API_KEYS`):
 *
 *   hash:<sha256 of the key>  → the KeyRecord (JSON); the only way in from a bearer token
 *   id:<key id>               → the sha256, with the public view as metadata (listing needs no extra reads)
 *
 * KV is eventually consistent: a new key works at once where it was made and everywhere within about a
 * minute. Lookups go through a small per-isolate cache (60 s). That is safe for revocation because revocation
 * does not depend on it: the key's Durable Object (src/ratelimit/) is told at once and refuses every
 * later request, whatever KV or this cache still say.
 */
import type { Env } from "../env";
import { ApiError } from "../errors";
import {
  type CreateKeyRequest,
  DEFAULT_QUALITY,
  DEFAULT_RATE,
  digestsEqual,
  generateKey,
  generateKeyId,
  generateWebhookSecret,
  hashKey,
  KeyRecord,
  parseRate,
  publicKey,
  type RateLimit,
  type UpdateKeyRequest,
} from "./keys";

const CACHE_MS = 60_000;
const CACHE_MAX = 1_000;
const cache = new Map<string, { record: KeyRecord; at: number }>();

function kv(env: Env): KVNamespace {
  const ns = env.API_KEYS;
  if (!ns) throw new ApiError("internal_error", "The API key store is not configured.");
  return ns;
}

/** The record for a key's hash, or null (unknown key). */
export async function findKeyByHash(env: Env, hash: string): Promise<KeyRecord | null> {
  const now = Date.now();
  const hit = cache.get(hash);
  if (hit && now - hit.at < CACHE_MS) return hit.record;
  const raw = await kv(env).get(`hash:${hash}`, { type: "json", cacheTtl: 60 });
  const parsed = KeyRecord.safeParse(raw);
  if (!parsed.success) {
    cache.delete(hash);
    return null;
  }
  // Defence in depth: the record found must be the one for this hash (compared without an early exit).
  if (!digestsEqual(parsed.data.hash, hash)) return null;
  if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
  cache.set(hash, { record: parsed.data, at: now });
  return parsed.data;
}

export interface CreatedKey {
  key: string;
  record: KeyRecord;
}

/** `60/min` or {limit, window_s} → the rate (400 naming `rate` when the text does not parse). */
function resolveRate(rate: string | RateLimit): RateLimit {
  if (typeof rate !== "string") return rate;
  const parsed = parseRate(rate);
  if (!parsed) throw new ApiError("invalid_request", `Invalid rate '${rate}': use N/s, N/min, N/hour or N/day.`, { param: "rate" });
  return parsed;
}

export async function createKey(env: Env, request: CreateKeyRequest): Promise<CreatedKey> {
  const rate: RateLimit = request.rate ? resolveRate(request.rate) : DEFAULT_RATE;
  const key = request.key ?? generateKey();
  const hash = await hashKey(key);
  const store = kv(env);
  if (request.key && (await store.get(`hash:${hash}`))) {
    throw new ApiError("key_exists", "A key with this value already exists.", { param: "key" });
  }
  const record: KeyRecord = {
    id: generateKeyId(),
    name: request.name,
    hash,
    prefix: key.slice(0, 8),
    scopes: [...new Set(request.scopes)],
    rate,
    quota: request.quota ?? null,
    quality: request.quality ?? DEFAULT_QUALITY,
    created_at: new Date().toISOString(),
    revoked_at: null,
    webhook_secret: generateWebhookSecret(),
  };
  await store.put(`hash:${hash}`, JSON.stringify(record));
  await store.put(`id:${record.id}`, hash, { metadata: publicKey(record) });
  return { key, record };
}

export type PublicKey = ReturnType<typeof publicKey>;

/** Every key's public view, newest first (KV lists ids in key order; the metadata carries the rest). */
export async function listKeys(env: Env): Promise<PublicKey[]> {
  const out: PublicKey[] = [];
  let cursor: string | undefined;
  do {
    const page: KVNamespaceListResult<PublicKey> = await kv(env).list<PublicKey>({ prefix: "id:", cursor });
    // Keys made before the quality setting existed carry no `quality` in their metadata: the default.
    for (const k of page.keys) if (k.metadata) out.push({ ...k.metadata, quality: k.metadata.quality ?? DEFAULT_QUALITY });
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  return out.sort((a, b) => b.created_at.localeCompare(a.created_at));
}

export async function getKeyById(env: Env, id: string): Promise<KeyRecord | null> {
  if (!/^key_[0-9a-f]{16,64}$/.test(id)) return null;
  const hash = await kv(env).get(`id:${id}`);
  if (!hash) return null;
  const parsed = KeyRecord.safeParse(await kv(env).get(`hash:${hash}`, { type: "json" }));
  return parsed.success ? parsed.data : null;
}

/** Marks a key revoked in KV (the caller also tells its Durable Object, which enforces it at once). */
export async function revokeKeyRecord(env: Env, record: KeyRecord): Promise<KeyRecord> {
  if (record.revoked_at) return record;
  const revoked: KeyRecord = { ...record, revoked_at: new Date().toISOString() };
  await kv(env).put(`hash:${record.hash}`, JSON.stringify(revoked));
  await kv(env).put(`id:${record.id}`, record.hash, { metadata: publicKey(revoked) });
  cache.delete(record.hash);
  return revoked;
}

/**
 * Changes a key's name, rate, quota or default image quality. Where it is made the change holds from the
 * next request; other isolates may use their cached record for up to a minute (the record cache).
 */
export async function updateKeyRecord(env: Env, record: KeyRecord, update: UpdateKeyRequest): Promise<KeyRecord> {
  const updated: KeyRecord = {
    ...record,
    ...(update.name !== undefined ? { name: update.name } : {}),
    ...(update.rate !== undefined ? { rate: resolveRate(update.rate) } : {}),
    ...(update.quota !== undefined ? { quota: update.quota } : {}),
    ...(update.quality !== undefined ? { quality: update.quality } : {}),
  };
  await kv(env).put(`hash:${record.hash}`, JSON.stringify(updated));
  await kv(env).put(`id:${record.id}`, record.hash, { metadata: publicKey(updated) });
  cache.delete(record.hash);
  return updated;
}
