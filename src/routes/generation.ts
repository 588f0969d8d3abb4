/**
 * The public generation routes: OpenAI chat completions, captions, VQA, grounding, and the model list.
 * Each route: API key with its scope → rate limit and quota (one Durable Object call) → validate →
 * images (through the caches) → answer (result cache, coalescing, or the pool) (src/serving/).
 */
import { type Context, Hono, type MiddlewareHandler, type Next } from "hono";
import type { AppEnv } from "../env";
import type { Scope } from "../keys/keys";
import { apiKey } from "../middleware/api-key";
import { rateLimit } from "../middleware/rate-limit";
import { getPoolRouter } from "../pool/router";
import { serveChatCompletion } from "../serving/chat";
import { MODEL_IDS } from "../serving/schemas";
import { serveTask } from "../serving/tasks";

export const generation = new Hono<AppEnv>();

/** `x-cache` on every response of a cached route, errors included (MISS unless the answer said HIT). */
const xCache: MiddlewareHandler<AppEnv> = async function xCacheMiddleware(c: Context<AppEnv>, next: Next) {
  await next();
  if (!c.res.headers.has("x-cache")) c.res.headers.set("x-cache", "MISS");
};

// Per route, not `use("*")`: mounted under /v1, a catch-all would also answer 401 for unknown paths.
const billable = (scope: Scope) => [xCache, apiKey({ scope }), rateLimit({ billable: true })] as const;

generation.post("/chat/completions", ...billable("chat"), (c) => serveChatCompletion(c));
generation.post("/captions", ...billable("caption"), (c) => serveTask(c, "caption"));
generation.post("/vqa", ...billable("vqa"), (c) => serveTask(c, "vqa"));
generation.post("/grounding", ...billable("grounding"), (c) => serveTask(c, "grounding"));

/** Models some live, non-draining node can serve now (OpenAI's list shape). Any valid key. */
generation.get("/models", apiKey(), rateLimit({ billable: false }), async (c) => {
  const nodes = await getPoolRouter(c.env).nodes();
  const live = MODEL_IDS.filter((id) => nodes.some((n) => n.variant === id && !n.draining));
  return c.json({
    object: "list",
    data: live.map((id) => ({
      id,
      object: "model",
      created: 1_692_000_000, // Qwen-VL's release (August 2023)
      owned_by: "qwen",
      engines: [...new Set(nodes.filter((n) => n.variant === id && !n.draining).map((n) => n.engine))],
    })),
  });
});
