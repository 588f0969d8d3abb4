/**
 * API keys: their format, scopes, rate and quota settings, and the record kept for each one.
 *
 * A key is `qvl_` + 32 random base64url characters (192 bits). The edge never stores a key: the record
 * lives in KV under the SHA-256 of the key (hex), and the key itself is shown once, when it is created.
 * The record holds an id (`key_…`, what operators see and revoke by), a name, scopes, a rate limit, an
 * optional monthly quota, its default image quality (`exact` or `fast`), the creation and revocation
 * times, and the key's webhook signing secret (`whsec_…`, for signed callbacks: a signing secret, not a
 * credential, so it is kept readable).
 */
import { z } from "zod";

export const SCOPES = ["caption", "vqa", "grounding", "chat", "moderate", "admin"] as const;
export type Scope = (typeof SCOPES)[number];
export const Scope = z.enum(SCOPES);

export const KEY_PREFIX = "qvl_";
/** What a key may look like (generated ones are `qvl_` + 32 base64url characters; imported ones vary). */
export const KEY_PATTERN = /^qvl_[A-Za-z0-9_-]{16,200}$/;

/**
 * How images are preprocessed: `exact` (byte-identical to Qwen-VL's own preprocessing) or `fast` (JPEGs
 * decoded at a DCT scale of 1/2..1/8 before the same resampler; src/image/pipeline.ts). A request's
 * `quality` wins; else its key's default; else `exact`.
 */
export const IMAGE_QUALITIES = ["exact", "fast"] as const;
export const ImageQuality = z.enum(IMAGE_QUALITIES);
export type ImageQuality = z.infer<typeof ImageQuality>;
export const DEFAULT_QUALITY: ImageQuality = "exact";

/** A rate limit: `limit` requests per `window_s` seconds, as a token bucket (burst = limit). */
export const RateLimit = z.object({
  limit: z.number().int().min(1).max(1_000_000),
  window_s: z.number().int().min(1).max(86_400),
});
export type RateLimit = z.infer<typeof RateLimit>;

export const DEFAULT_RATE: RateLimit = { limit: 60, window_s: 60 };

const UNITS: Record<string, number> = {
  s: 1,
  sec: 1,
  second: 1,
  m: 60,
  min: 60,
  minute: 60,
  h: 3_600,
  hour: 3_600,
  d: 86_400,
  day: 86_400,
};

/** `60/min`, `10/s`, `1000/hour`, `5000/day` (also `10/30s`: a count per that many seconds). */
export function parseRate(text: string): RateLimit | null {
  const m = /^\s*(\d+)\s*\/\s*(\d*)\s*([a-z]+)\s*$/i.exec(text);
  if (!m) return null;
  const unit = UNITS[m[3].toLowerCase()];
  if (!unit) return null;
  const parsed = RateLimit.safeParse({ limit: Number(m[1]), window_s: (m[2] ? Number(m[2]) : 1) * unit });
  return parsed.success ? parsed.data : null;
}

export function formatRate(rate: RateLimit): string {
  for (const [unit, s] of [
    ["day", 86_400],
    ["hour", 3_600],
    ["min", 60],
  ] as const) {
    if (rate.window_s === s) return `${rate.limit}/${unit}`;
  }
  return rate.window_s === 1 ? `${rate.limit}/s` : `${rate.limit}/${rate.window_s}s`;
}

/** The record stored under `hash:<sha256 of the key>`. */
export const KeyRecord = z.object({
  id: z.string().regex(/^key_[0-9a-f]{16,64}$/),
  name: z.string().min(1).max(100),
  /** SHA-256 of the key, hex. */
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  /** The first characters of the key (`qvl_abcd`), so an operator can tell keys apart. */
  prefix: z.string().max(16),
  scopes: z.array(Scope).min(1),
  rate: RateLimit,
  /** Generation requests per calendar month (UTC); null: no quota. */
  quota: z.number().int().min(1).nullable(),
  /** The image quality of this key's requests that do not name one (absent in records made before it existed). */
  quality: ImageQuality.default(DEFAULT_QUALITY),
  created_at: z.string(),
  revoked_at: z.string().nullable(),
  webhook_secret: z.string(),
});
export type KeyRecord = z.infer<typeof KeyRecord>;

/** What the admin API accepts to create a key. */
export const CreateKeyRequest = z.object({
  name: z.string().trim().min(1).max(100),
  scopes: z.array(Scope).min(1).max(SCOPES.length),
  /** `60/min` or {limit, window_s}. */
  rate: z.union([z.string(), RateLimit]).optional(),
  quota: z.number().int().min(1).max(1_000_000_000).nullish(),
  /** The default image quality of the key's requests (default `exact`). */
  quality: ImageQuality.optional(),
  /** Import a key chosen by the operator (e.g. `npm start`'s QVL_DEV_KEY) instead of generating one. */
  key: z.string().regex(KEY_PATTERN, "must be qvl_ followed by 16–200 characters of [A-Za-z0-9_-]").optional(),
});
export type CreateKeyRequest = z.infer<typeof CreateKeyRequest>;

/** What the admin API accepts to change a key's settings (at least one field; `quota: null` removes the quota). */
export const UpdateKeyRequest = z
  .object({
    name: z.string().trim().min(1).max(100).optional(),
    rate: z.union([z.string(), RateLimit]).optional(),
    quota: z.number().int().min(1).max(1_000_000_000).nullable().optional(),
    quality: ImageQuality.optional(),
  })
  .strict()
  .refine((v) => Object.values(v).some((x) => x !== undefined), { message: "name, rate, quota or quality is required" });
export type UpdateKeyRequest = z.infer<typeof UpdateKeyRequest>;

/** The public view of a record (no hash, no webhook secret). */
export function publicKey(record: KeyRecord) {
  return {
    id: record.id,
    object: "api_key" as const,
    name: record.name,
    prefix: record.prefix,
    scopes: record.scopes,
    rate: formatRate(record.rate),
    quota: record.quota,
    quality: record.quality,
    created_at: record.created_at,
    revoked_at: record.revoked_at,
  };
}

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export function generateKey(): string {
  return `${KEY_PREFIX}${base64url(crypto.getRandomValues(new Uint8Array(24)))}`;
}

export function generateKeyId(): string {
  return `key_${hex(crypto.getRandomValues(new Uint8Array(12)))}`;
}

/** Standard Webhooks' secret format: `whsec_` + base64 of 32 random bytes. */
export function generateWebhookSecret(): string {
  let s = "";
  for (const b of crypto.getRandomValues(new Uint8Array(32))) s += String.fromCharCode(b);
  return `whsec_${btoa(s)}`;
}

const encoder = new TextEncoder();

export async function hashKey(key: string): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(key))));
}

/** Equal-length hex digests compared without an early exit. */
export function digestsEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
