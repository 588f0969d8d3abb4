/**
 * Source images fetched by URL, kept in the Cache API for as long as the origin allows (its
 * `Cache-Control`/`Expires`, capped by `SOURCE_CACHE_MAX_TTL_S`). The entry carries the sha256 of the
 * bytes in a header, so a request whose tensor (and answer) is cached never reads the body at all.
 *
 * Sharing: the edge fetches every URL anonymously (no cookies, no client headers), so what an origin
 * serves for a URL is the same whoever asks, and `private`/`no-store`/`Set-Cookie` answers are never kept.
 * The cache key is a hash of the URL under a private hostname, so it cannot collide with the zone's own
 * cache of the same URL.
 */
import type { CachePolicy } from "./policy";
import { originTtl } from "./policy";

const SHA_HEADER = "x-qvl-source-sha256";
const EXPIRES_HEADER = "x-qvl-expires";

/** This isolate's memory of recent entries (URL → sha256 until the entry expires): a hot URL costs no Cache API call. */
const MEMO_MAX = 4_096;
const memo = new Map<string, { sha: string; expires: number }>();

function memorize(url: string, sha: string, expires: number): void {
  memo.delete(url);
  if (memo.size >= MEMO_MAX) memo.delete(memo.keys().next().value as string);
  memo.set(url, { sha, expires });
}
const CACHE_HOST = "https://source-cache.qvl.invalid/v1/";

export type SourceCacheStatus = "hit" | "miss" | "bypass";

export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function cacheStore(): Cache | null {
  const c = (globalThis as { caches?: { default?: Cache } }).caches?.default;
  return c ?? null;
}

async function cacheKey(url: string): Promise<Request> {
  return new Request(`${CACHE_HOST}${await sha256Hex(url)}`);
}

/** The sha256 of a cached source image, without reading its body; null on a miss (or no Cache API). */
export async function cachedSourceSha(url: string, policy: CachePolicy): Promise<string | null> {
  const store = cacheStore();
  if (!store || !policy.read) return null;
  const known = memo.get(url);
  if (known && known.expires > Date.now()) return known.sha;
  const res = await store.match(await cacheKey(url));
  if (!res) return null;
  const sha = res.headers.get(SHA_HEADER);
  await res.body?.cancel();
  if (!sha || !/^[0-9a-f]{64}$/.test(sha)) return null;
  const expires = Number(res.headers.get(EXPIRES_HEADER));
  if (Number.isFinite(expires) && expires > Date.now()) memorize(url, sha, expires);
  return sha;
}

/** The bytes of a cached source image (for the rare tensor miss after a source hit); null when gone. */
export async function cachedSourceBytes(url: string, expectSha: string): Promise<Uint8Array | null> {
  const store = cacheStore();
  if (!store) return null;
  const res = await store.match(await cacheKey(url));
  if (!res) return null;
  const bytes = new Uint8Array(await res.arrayBuffer());
  return (await sha256Hex(bytes)) === expectSha ? bytes : null;
}

/** Keeps fetched bytes for as long as the origin's headers allow (0: not at all). */
export async function storeSource(url: string, bytes: Uint8Array, sha: string, originHeaders: Headers, maxTtlS: number): Promise<number> {
  const store = cacheStore();
  const ttl = originTtl(originHeaders, maxTtlS);
  if (!store || ttl <= 0) return 0;
  const expires = Date.now() + ttl * 1000;
  memorize(url, sha, expires);
  await store.put(
    await cacheKey(url),
    new Response(bytes as Uint8Array<ArrayBuffer>, {
      headers: {
        "cache-control": `public, max-age=${ttl}`,
        "content-type": originHeaders.get("content-type") ?? "application/octet-stream",
        [SHA_HEADER]: sha,
        [EXPIRES_HEADER]: String(expires),
      },
    }),
  );
  return ttl;
}

/** A fetch that remembers the headers of the last response it saw (the final hop after redirects). */
export function recordingFetch(): { fetch: typeof fetch; headers: () => Headers } {
  let last = new Headers();
  const wrapped: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    last = res.headers;
    return res;
  };
  return { fetch: wrapped, headers: () => last };
}
