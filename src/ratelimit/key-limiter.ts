/**
 * One Durable Object per API key (named by the key id): its rate-limit bucket, its monthly quota, its
 * usage, and whether it is revoked. Every authenticated request makes exactly one call here before it
 * runs (`admit`); the usage of the answer is added afterwards off the response path (`record`, through
 * `waitUntil`).
 *
 * Why a Durable Object: it is the one place all of a key's requests meet, whichever isolate or colo
 * they reach, and it runs one call at a time, so the count is exact (no read-modify-write race, no
 * window in which two isolates both see the last token). State is in its SQLite storage, written on
 * every call, so an eviction or a restart loses nothing.
 *
 * Quota: generation requests per calendar month (UTC), taken when a request is admitted (so it is exact
 * under concurrency) and given back when the request fails (`record` with `refund`).
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import type { RateLimit } from "../keys/keys";
import { type BucketState, type BucketView, refill, take, view } from "./bucket";

export interface AdmitInput {
  rate: RateLimit;
  /** Generation requests per month; null: none. */
  quota: number | null;
  /** Counts against the quota (the generation routes). */
  billable: boolean;
}

export type AdmitResult =
  | ({ ok: true; period: string } & BucketView)
  | ({ ok: false; reason: "rate_limited" | "quota_exceeded"; period: string } & BucketView)
  | { ok: false; reason: "revoked" };

export interface UsageInput {
  /** The period `admit` answered (a request that spans a month boundary stays in its month). */
  period: string;
  images: number;
  promptTokens: number;
  completionTokens: number;
  /** Answered from a cache (or by joining an identical request in flight): no GPU work. */
  cached: boolean;
  /** The request failed: give its quota unit back. */
  refund: boolean;
}

export interface PeriodUsage {
  period: string;
  requests: number;
  cached_requests: number;
  images: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  rate_limited: number;
  quota_exceeded: number;
}

export interface UsageReport {
  current: PeriodUsage;
  /** Earlier months, newest first (at most 12). */
  history: PeriodUsage[];
  quota: { limit: number; used: number; remaining: number; resets_at: string } | null;
  rate: BucketView;
  revoked: boolean;
}

interface UsageRow extends Record<string, SqlStorageValue> {
  period: string;
  requests: number;
  cached: number;
  images: number;
  prompt_tokens: number;
  completion_tokens: number;
  rate_limited: number;
  quota_exceeded: number;
}

/** `2026-11` for a time in November 2026 (UTC). */
export function periodOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 7);
}

/** Epoch milliseconds of the first instant of the month after `ms` (UTC). */
export function nextPeriodStart(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

function periodUsage(row: UsageRow | undefined, period: string): PeriodUsage {
  const r = row ?? { requests: 0, cached: 0, images: 0, prompt_tokens: 0, completion_tokens: 0, rate_limited: 0, quota_exceeded: 0 };
  return {
    period,
    requests: r.requests,
    cached_requests: r.cached,
    images: r.images,
    prompt_tokens: r.prompt_tokens,
    completion_tokens: r.completion_tokens,
    total_tokens: r.prompt_tokens + r.completion_tokens,
    rate_limited: r.rate_limited,
    quota_exceeded: r.quota_exceeded,
  };
}

export class KeyLimiter extends DurableObject<Env> {
  /** Epoch milliseconds; tests replace it inside `runInDurableObject` to move time. */
  clock: () => number = () => Date.now();

  private readonly sql: SqlStorage;
  private bucket: BucketState | null = null;
  private revokedAt: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(
      "CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), tokens REAL, updated INTEGER, revoked_at INTEGER)",
    );
    this.sql.exec(
      `CREATE TABLE IF NOT EXISTS usage (period TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0, cached INTEGER NOT NULL DEFAULT 0,
        images INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
        rate_limited INTEGER NOT NULL DEFAULT 0, quota_exceeded INTEGER NOT NULL DEFAULT 0)`,
    );
    const row = this.sql
      .exec<{ tokens: number | null; updated: number | null; revoked_at: number | null }>("SELECT tokens, updated, revoked_at FROM state")
      .toArray()[0];
    if (row) {
      if (row.tokens !== null && row.updated !== null) this.bucket = { tokens: row.tokens, updatedMs: row.updated };
      this.revokedAt = row.revoked_at;
    }
  }

  /** Decides one request: revoked, over quota, over the rate, or admitted (a token and a quota unit taken). */
  admit(input: AdmitInput): AdmitResult {
    if (this.revokedAt !== null) return { ok: false, reason: "revoked" };
    const now = this.clock();
    const period = periodOf(now);
    if (input.billable && input.quota !== null) {
      const used = this.usageRow(period)?.requests ?? 0;
      if (used >= input.quota) {
        this.bump(period, "quota_exceeded", 1);
        const state = refill(this.bucket, input.rate, now);
        return {
          ok: false,
          reason: "quota_exceeded",
          period,
          ...view(state, input.rate),
          retryAfterS: Math.ceil((nextPeriodStart(now) - now) / 1000),
        };
      }
    }
    const taken = take(this.bucket, input.rate, now);
    this.saveBucket(taken.state);
    if (!taken.ok) {
      this.bump(period, "rate_limited", 1);
      return { ok: false, reason: "rate_limited", period, ...view(taken.state, input.rate) };
    }
    if (input.billable) this.bump(period, "requests", 1);
    return { ok: true, period, ...view(taken.state, input.rate) };
  }

  /** Adds what an answered request used (and refunds the quota unit of a failed one). */
  record(input: UsageInput): void {
    const period = /^\d{4}-\d{2}$/.test(input.period) ? input.period : periodOf(this.clock());
    const n = (x: number) => (Number.isFinite(x) && x > 0 ? Math.floor(x) : 0);
    this.sql.exec(
      `INSERT INTO usage (period, requests, cached, images, prompt_tokens, completion_tokens) VALUES (?, 0, ?, ?, ?, ?)
       ON CONFLICT(period) DO UPDATE SET cached = cached + excluded.cached, images = images + excluded.images,
         prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens`,
      period,
      input.cached && !input.refund ? 1 : 0,
      n(input.images),
      n(input.promptTokens),
      n(input.completionTokens),
    );
    if (input.refund) this.sql.exec("UPDATE usage SET requests = MAX(0, requests - 1) WHERE period = ?", period);
  }

  usage(rate: RateLimit, quota: number | null): UsageReport {
    const now = this.clock();
    const period = periodOf(now);
    const rows = this.sql.exec<UsageRow>("SELECT * FROM usage ORDER BY period DESC LIMIT 13").toArray();
    const current = periodUsage(
      rows.find((r) => r.period === period),
      period,
    );
    return {
      current,
      history: rows
        .filter((r) => r.period < period)
        .slice(0, 12)
        .map((r) => periodUsage(r, r.period)),
      quota:
        quota === null
          ? null
          : {
              limit: quota,
              used: current.requests,
              remaining: Math.max(0, quota - current.requests),
              resets_at: new Date(nextPeriodStart(now)).toISOString(),
            },
      rate: view(refill(this.bucket, rate, now), rate),
      revoked: this.revokedAt !== null,
    };
  }

  /** From now on every request with this key is refused, whatever KV or an isolate's cache says. */
  revoke(): void {
    if (this.revokedAt !== null) return;
    this.revokedAt = this.clock();
    this.sql.exec(
      "INSERT INTO state (id, revoked_at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET revoked_at = excluded.revoked_at",
      this.revokedAt,
    );
  }

  private saveBucket(state: BucketState): void {
    this.bucket = state;
    this.sql.exec(
      "INSERT INTO state (id, tokens, updated) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
      state.tokens,
      state.updatedMs,
    );
  }

  private usageRow(period: string): UsageRow | undefined {
    return this.sql.exec<UsageRow>("SELECT * FROM usage WHERE period = ?", period).toArray()[0];
  }

  private bump(period: string, column: "requests" | "rate_limited" | "quota_exceeded", by: number): void {
    this.sql.exec(
      `INSERT INTO usage (period, ${column}) VALUES (?, ?) ON CONFLICT(period) DO UPDATE SET ${column} = ${column} + excluded.${column}`,
      period,
      by,
    );
  }
}
