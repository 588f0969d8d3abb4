/**
 * The public generation routes: OpenAI chat completions, captions, VQA, grounding, and the model list.
 * Each handler validates first, then does the image work, then asks the pool (src/serving/).
 */
import { Hono } from "hono";
import type { AppEnv } from "../env";
import { bearerToken } from "../middleware/bearer-token";
import { getPoolRouter } from "../pool/router";
import { serveChatCompletion } from "../serving/chat";
import { MODEL_IDS } from "../serving/schemas";
import { serveTask } from "../serving/tasks";

export const generation = new Hono<AppEnv>();

// Per route, not `use("*")`: mounted under /v1, a catch-all would also answer 401 for unknown paths.
const auth = bearerToken({ token: (c) => c.env.EDGE_API_KEY });

generation.post("/chat/completions", auth, (c) => serveChatCompletion(c));
generation.post("/captions", auth, (c) => serveTask(c, "caption"));
generation.post("/vqa", auth, (c) => serveTask(c, "vqa"));
generation.post("/grounding", auth, (c) => serveTask(c, "grounding"));

/** Models some live, non-draining node can serve now (OpenAI's list shape). */
generation.get("/models", auth, async (c) => {
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
