/**
 * A token bucket: `limit` tokens, refilled continuously at `limit / window_s` per second, one token
 * per request. So `60/min` allows a burst of 60 and then one request a second, and an idle key is back
 * to a full burst after one window. Pure functions of (state, rate, now): the Durable Object owns the
 * state and the clock.
 */
import type { RateLimit } from "../keys/keys";

export interface BucketState {
  tokens: number;
  /** Epoch milliseconds of the last update. */
  updatedMs: number;
}

export interface BucketView {
  /** `x-ratelimit-limit`: the burst size. */
  limit: number;
  /** `x-ratelimit-remaining`: whole requests allowed right now. */
  remaining: number;
  /** `x-ratelimit-reset`: seconds until the bucket is full again. */
  resetS: number;
  /** Seconds until one more request is allowed (0 when one is allowed now). */
  retryAfterS: number;
}

const perMs = (rate: RateLimit) => rate.limit / (rate.window_s * 1000);

/** The bucket as of `now` (refilled, capped at the limit; a fresh key starts full). */
export function refill(state: BucketState | null, rate: RateLimit, now: number): BucketState {
  if (!state) return { tokens: rate.limit, updatedMs: now };
  const elapsed = Math.max(0, now - state.updatedMs);
  return { tokens: Math.min(rate.limit, state.tokens + elapsed * perMs(rate)), updatedMs: Math.max(now, state.updatedMs) };
}

// Float residue (0.9999999) must not turn an earned token into a refusal.
const EPSILON = 1e-9;

export function view(state: BucketState, rate: RateLimit): BucketView {
  const tokens = state.tokens + EPSILON;
  return {
    limit: rate.limit,
    remaining: Math.max(0, Math.floor(tokens)),
    resetS: Math.max(0, Math.ceil((rate.limit - tokens) / perMs(rate) / 1000)),
    retryAfterS: tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / perMs(rate) / 1000)),
  };
}

/** Takes one token when there is one: `{ok, state}` with the state to keep either way. */
export function take(state: BucketState | null, rate: RateLimit, now: number): { ok: boolean; state: BucketState } {
  const current = refill(state, rate, now);
  if (current.tokens + EPSILON < 1) return { ok: false, state: current };
  return { ok: true, state: { tokens: Math.max(0, current.tokens - 1), updatedMs: current.updatedMs } };
}
