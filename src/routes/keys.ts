/**
 * Key management, for operators (the `admin` scope, or the root key):
 *
 *   POST   /v1/keys       {name, scopes, rate?, quota?, quality?, key?} → 201 the key (shown this once),
 *                          its id, webhook secret and settings
 *   GET    /v1/keys       every key's public view (no key, no hash, no secret), newest first
 *   GET    /v1/keys/:id   one key's public view and its usage
 *   PATCH  /v1/keys/:id   {name?, rate?, quota?, quality?} → the key's public view with the new settings
 *   DELETE /v1/keys/:id   revokes it: refused everywhere from the next request on
 *
 * `npm run keys` (scripts/keys.ts) is the command-line face of these routes.
 */
import { Hono } from "hono";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { CreateKeyRequest, formatRate, publicKey, UpdateKeyRequest } from "../keys/keys";
import { createKey, getKeyById, listKeys, revokeKeyRecord, updateKeyRecord } from "../keys/store";
import { apiKey } from "../middleware/api-key";
import { rateLimit } from "../middleware/rate-limit";
import { readJsonBody, validate } from "../serving/task-input";
import { usageBody } from "./usage";

export const keys = new Hono<AppEnv>();

keys.use(apiKey({ scope: "admin" }), rateLimit({ billable: false }));

keys.post("/", async (c) => {
  const request = validate(CreateKeyRequest, await readJsonBody(c));
  const { key, record } = await createKey(c.env, request);
  return c.json({ ...publicKey(record), key, webhook_secret: record.webhook_secret }, 201);
});

keys.get("/", async (c) => c.json({ object: "list", data: await listKeys(c.env) }));

async function found(c: { env: AppEnv["Bindings"]; req: { param: (k: "id") => string } }) {
  const record = await getKeyById(c.env, c.req.param("id"));
  if (!record) throw new ApiError("not_found", `No API key with id ${c.req.param("id")}.`, { param: "id" });
  return record;
}

keys.get("/:id", async (c) => {
  const record = await found(c);
  const report = await c.env.KEY_LIMITER.getByName(record.id).usage(record.rate, record.quota);
  return c.json({ ...publicKey(record), usage: usageBody(report, formatRate(record.rate)) });
});

keys.patch("/:id", async (c) => {
  const update = validate(UpdateKeyRequest, await readJsonBody(c));
  const record = await found(c);
  if (record.revoked_at)
    throw new ApiError("invalid_request", `API key ${record.id} is revoked: its settings no longer change.`, { param: "id" });
  return c.json(publicKey(await updateKeyRecord(c.env, record, update)));
});

keys.delete("/:id", async (c) => {
  const record = await found(c);
  // The Durable Object first: from this moment every request with the key is refused, whatever KV says.
  await c.env.KEY_LIMITER.getByName(record.id).revoke();
  const revoked = await revokeKeyRecord(c.env, record);
  return c.json(publicKey(revoked));
});
