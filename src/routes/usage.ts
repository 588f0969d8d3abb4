/**
 * GET /v1/usage: the calling key's own figures (any valid key): this month's generation requests (what
 * the quota counts), how many were answered from a cache, images, prompt and completion tokens,
 * refusals, the quota left, the rate limit's state, and earlier months.
 */
import { Hono } from "hono";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { formatRate, publicKey } from "../keys/keys";
import { apiKey } from "../middleware/api-key";
import { rateLimit } from "../middleware/rate-limit";
import type { UsageReport } from "../ratelimit/key-limiter";

export const usage = new Hono<AppEnv>();

usage.use(apiKey(), rateLimit({ billable: false }));

export function usageBody(report: UsageReport, policy: string) {
  return {
    object: "usage",
    ...report.current,
    quota: report.quota,
    rate: { policy, limit: report.rate.limit, remaining: report.rate.remaining, reset_s: report.rate.resetS },
    history: report.history,
  };
}

usage.get("/", async (c) => {
  const principal = c.get("principal");
  if (!principal?.record) throw new ApiError("invalid_request", "The root key has no usage of its own; ask with a qvl_ key.");
  const record = principal.record;
  const report = await c.env.KEY_LIMITER.getByName(record.id).usage(record.rate, record.quota);
  return c.json({ key: publicKey(record), ...usageBody(report, formatRate(record.rate)) });
});
