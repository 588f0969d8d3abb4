/**
 * The edge Worker: middleware order, routes, and the exported handlers.
 */
import { Hono } from "hono";
import { requestId } from "hono/request-id";
import { loadConfig } from "./config";
import type { AppEnv, Env } from "./env";
import { notFound, onError } from "./middleware/error-handler";
import { generation } from "./routes/generation";
import { keys } from "./routes/keys";
import { pool } from "./routes/pool";
import { tensors } from "./routes/tensors";
import { usage } from "./routes/usage";

export { PoolObject } from "./pool/pool-object";
export { KeyLimiter } from "./ratelimit/key-limiter";

export const app = new Hono<AppEnv>();

app.use(requestId({ limitLength: 128 }));
app.use(async function configMiddleware(c, next) {
  c.set("config", loadConfig(c.env as unknown as Record<string, unknown>));
  await next();
});

app.get("/healthz", (c) => c.json({ status: "ok" }));
app.route("/v1/tensors", tensors);
app.route("/v1/pool", pool);
app.route("/v1/keys", keys);
app.route("/v1/usage", usage);
app.route("/v1", generation);

app.onError(onError);
app.notFound(notFound);

export default {
  fetch: app.fetch,
} satisfies ExportedHandler<Env>;
