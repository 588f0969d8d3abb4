/**
 * Per-key rate limit and quota: one RPC to the key's Durable Object (src/ratelimit/key-limiter.ts)
 * before the route runs, which answers for the bucket, the monthly quota and revocation at once.
 *
 *   admitted        → the route runs; its response carries x-ratelimit-limit / -remaining / -reset
 *   over the rate   → 429 rate_limited, Retry-After (seconds until one request is allowed) + the same headers
 *   over the quota  → 429 quota_exceeded, Retry-After (seconds until the month ends)
 *   revoked         → 401 invalid_api_key
 *
 * On a generation route (`billable`) the call overlaps the route's first steps (reading the request,
 * asking the caches): the route awaits `c.var.admitted()` before any costly step. Afterwards, what it
 * used (images, tokens, cached or not) is added to the key's usage off the response path
 * (`waitUntil`); a failed request gives its quota unit back.
 * The root key is not limited.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import type { KeyRecord } from "../keys/keys";
import type { AdmitResult } from "../ratelimit/key-limiter";
import { addTiming, type UsageOutcome } from "./api-key";

export interface RateLimitOptions {
  /** The route is a generation: it counts against the quota and its usage is recorded. */
  billable: boolean;
}

/** Runs `promise` after the response when the runtime allows (waitUntil), else just lets it run. */
export function waitUntil(c: Context<AppEnv>, promise: Promise<unknown>): void {
  const guarded = promise.catch((err: unknown) =>
    console.error(JSON.stringify({ level: "error", requestId: c.get("requestId"), where: "waitUntil", error: String(err) })),
  );
  try {
    c.executionCtx.waitUntil(guarded);
  } catch {
    // No execution context (a test calling app.request): the promise still runs.
  }
}

function rateHeaders(r: { limit: number; remaining: number; resetS: number }): Record<string, string> {
  return {
    "x-ratelimit-limit": String(r.limit),
    "x-ratelimit-remaining": String(r.remaining),
    "x-ratelimit-reset": String(r.resetS),
  };
}

/** The refusal for a decision that did not admit the request. */
function refusal(result: Exclude<AdmitResult, { ok: true }>, record: KeyRecord): ApiError {
  if (result.reason === "revoked") return new ApiError("invalid_api_key", "This API key has been revoked.");
  if (result.reason === "quota_exceeded") {
    return new ApiError("quota_exceeded", `This key's monthly quota of ${record.quota} requests is used up.`, {
      retryAfter: result.retryAfterS,
    });
  }
  return new ApiError("rate_limited", `Rate limit exceeded: ${record.rate.limit} requests per ${record.rate.window_s} s.`, {
    retryAfter: result.retryAfterS,
  });
}

export function rateLimit(options: RateLimitOptions): MiddlewareHandler<AppEnv> {
  if (typeof options?.billable !== "boolean") throw new TypeError("rateLimit: options.billable must be a boolean");
  return async function rateLimitMiddleware(c, next) {
    const principal = c.get("principal");
    if (!principal) throw new Error("rateLimit needs the apiKey middleware before it");
    if (principal.root || !principal.record) {
      await next();
      return;
    }
    const record = principal.record;
    const stub = c.env.KEY_LIMITER.getByName(record.id);
    const started = performance.now();
    const decision: Promise<AdmitResult> = stub.admit({ rate: record.rate, quota: record.quota, billable: options.billable }).then((r) => {
      addTiming(c, `ratelimit;dur=${(performance.now() - started).toFixed(1)}`);
      return r;
    });
    const refused = (r: AdmitResult) => {
      if (r.ok) return null;
      const err = refusal(r, record);
      return err.toResponse({ ...("limit" in r ? rateHeaders(r) : {}), "x-request-id": c.get("requestId") ?? "" });
    };
    if (!options.billable) {
      const result = await decision;
      const no = refused(result);
      if (no) return no;
      await next();
      if (result.ok) for (const [k, v] of Object.entries(rateHeaders(result))) c.res.headers.set(k, v);
      return;
    }

    // Generation routes: the decision travels while the route reads and validates the request and asks the
    // caches; the route awaits it (`admitted`) before anything that costs: an origin fetch, a decode, an
    // answer. A refused request gets its refusal whatever the route did meanwhile.
    decision.catch(() => {});
    c.set("admitted", async () => {
      const r = await decision;
      if (!r.ok) throw refusal(r, record);
    });
    await next();
    const result = await decision;
    const no = refused(result);
    if (no) {
      c.res = no;
      return;
    }
    if (!result.ok) return; // (narrowing: refused() answered every refusal)
    for (const [k, v] of Object.entries(rateHeaders(result))) c.res.headers.set(k, v);
    const status = c.res.status;
    const usage = c.get("usage");
    const outcome: Promise<UsageOutcome | null> = status < 400 && usage ? usage : Promise.resolve(null);
    waitUntil(
      c,
      outcome.then((u) =>
        stub.record({
          period: result.period,
          images: u?.images ?? 0,
          promptTokens: u?.promptTokens ?? 0,
          completionTokens: u?.completionTokens ?? 0,
          cached: u?.cached ?? false,
          refund: !u?.ok,
        }),
      ),
    );
  };
}
