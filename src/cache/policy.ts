/**
 * Cache-Control, both ways: what a client's request allows (`no-cache`: answer afresh and refresh the
 * caches; `no-store`: answer afresh and keep nothing), and how long an origin lets us keep an image it
 * served (its `Cache-Control`/`Expires`, up to our cap).
 */

export interface CachePolicy {
  /** May an answer (or an image, or a tensor) come from a cache? */
  read: boolean;
  /** May what this request computes be stored? */
  write: boolean;
}

export const CACHE_ALL: CachePolicy = Object.freeze({ read: true, write: true });

function directives(value: string | null): Map<string, string | true> {
  const out = new Map<string, string | true>();
  for (const part of (value ?? "").split(",")) {
    const [name, ...rest] = part.trim().split("=");
    if (!name) continue;
    out.set(name.toLowerCase(), rest.length ? rest.join("=").trim().replace(/^"|"$/g, "") : true);
  }
  return out;
}

/** The request's `Cache-Control` (and `Pragma: no-cache`, for old clients). */
export function requestCachePolicy(headers: Headers): CachePolicy {
  const d = directives(headers.get("cache-control"));
  if (d.has("no-store")) return { read: false, write: false };
  if (d.has("no-cache") || d.get("max-age") === "0" || /(^|,)\s*no-cache\s*(,|$)/i.test(headers.get("pragma") ?? "")) {
    return { read: false, write: true };
  }
  return CACHE_ALL;
}

/**
 * Seconds a shared cache may keep this response, capped at `maxTtlS`; 0 when it may not be kept:
 * `no-store`, `private`, `no-cache`, `Vary: *`, a `Set-Cookie`, or no freshness information at all
 * (we do not guess a heuristic lifetime for someone else's image).
 */
export function originTtl(headers: Headers, maxTtlS: number, now = Date.now()): number {
  const d = directives(headers.get("cache-control"));
  if (d.has("no-store") || d.has("private") || d.has("no-cache")) return 0;
  if ((headers.get("vary") ?? "").split(",").some((v) => v.trim() === "*")) return 0;
  if (headers.has("set-cookie")) return 0;
  let lifetime: number | null = null;
  for (const name of ["s-maxage", "max-age"]) {
    const v = d.get(name);
    if (typeof v === "string" && /^\d+$/.test(v)) {
      lifetime = Number(v);
      break;
    }
  }
  if (lifetime === null) {
    const expires = Date.parse(headers.get("expires") ?? "");
    if (Number.isNaN(expires)) return 0;
    const date = Date.parse(headers.get("date") ?? "");
    lifetime = Math.floor((expires - (Number.isNaN(date) ? now : date)) / 1000);
  }
  const age = Number(headers.get("age") ?? 0);
  const left = lifetime - (Number.isFinite(age) && age > 0 ? Math.floor(age) : 0);
  return Math.max(0, Math.min(maxTtlS, left));
}
