/**
 * API keys, scopes, rate limits and quotas inside workerd, with the real bindings (KV, the per-key
 * Durable Object) and a simulated GPU node on loopback for the generation routes.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hashKey, parseRate } from "../../src/keys/keys";
import type { KeyLimiter } from "../../src/ratelimit/key-limiter";
import { bearer, createKey, edge, envWithNode, fixture, TOKEN } from "./helpers";

const E = envWithNode();

async function caption(key: string, image: Uint8Array, query = "", headers: Record<string, string> = {}) {
  return edge(E, `/v1/captions${query}`, {
    method: "POST",
    headers: { ...bearer(key), "content-type": "image/jpeg", ...headers },
    body: image as Uint8Array<ArrayBuffer>,
  });
}

describe("key lifecycle", () => {
  it("the root key creates a key, shown once; KV holds only its hash; it works; it is listed without secrets; revoked, it is refused", async () => {
    const created = await createKey(E, { name: "lifecycle", scopes: ["caption", "chat"], rate: "100/min", quota: 1000 });
    expect(created.key).toMatch(/^qvl_[A-Za-z0-9_-]{32}$/);
    expect(created.id).toMatch(/^key_[0-9a-f]{24}$/);
    expect(created.webhook_secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(created).toMatchObject({ scopes: ["caption", "chat"], rate: "100/min", quota: 1000, quality: "exact", revoked_at: null });

    // Stored by hash; the key itself is nowhere in KV.
    const hash = await hashKey(created.key);
    expect(await env.API_KEYS.get(`hash:${hash}`, "json")).toMatchObject({ id: created.id, hash, scopes: ["caption", "chat"] });
    const all = await env.API_KEYS.list();
    for (const k of all.keys) {
      expect(k.name).not.toContain(created.key);
      expect(await env.API_KEYS.get(k.name)).not.toContain(created.key);
      expect(JSON.stringify(k.metadata ?? null)).not.toContain(created.key);
    }

    const models = await edge(E, "/v1/models", { headers: bearer(created.key) });
    expect(models.status).toBe(200);
    expect(models.headers.get("x-ratelimit-limit")).toBe("100");
    expect(models.headers.get("x-ratelimit-remaining")).toBe("99");

    const list = await edge(E, "/v1/keys", { headers: bearer(TOKEN) });
    const listed = ((await list.json()) as { data: Record<string, unknown>[] }).data.find((k) => k.id === created.id);
    expect(listed).toMatchObject({ id: created.id, name: "lifecycle", prefix: created.key.slice(0, 8), rate: "100/min", quality: "exact" });
    expect(listed).not.toHaveProperty("key");
    expect(listed).not.toHaveProperty("hash");
    expect(listed).not.toHaveProperty("webhook_secret");

    const one = await edge(E, `/v1/keys/${created.id}`, { headers: bearer(TOKEN) });
    expect(await one.json()).toMatchObject({ id: created.id, usage: { object: "usage", requests: 0, quota: { limit: 1000 } } });

    const revoked = await edge(E, `/v1/keys/${created.id}`, { method: "DELETE", headers: bearer(TOKEN) });
    expect(revoked.status).toBe(200);
    expect(((await revoked.json()) as { revoked_at: string }).revoked_at).toMatch(/^\d{4}-\d{2}-\d{2}T/); // ISO time of revocation
    const after = await edge(E, "/v1/models", { headers: bearer(created.key) });
    expect(after.status).toBe(401);
    expect(after.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect(await after.json()).toMatchObject({ error: { code: "invalid_api_key", message: expect.stringContaining("revoked") } });
    expect((await edge(E, "/v1/keys/key_0123456789abcdef01234567", { method: "DELETE", headers: bearer(TOKEN) })).status).toBe(404);
  });

  it("revocation holds at once where an isolate still has the key cached: the key's Durable Object refuses it", async () => {
    const created = await createKey(E, { scopes: ["chat"] });
    expect((await edge(E, "/v1/models", { headers: bearer(created.key) })).status).toBe(200); // cached in this isolate now
    // As if another isolate revoked it: only the Durable Object knows yet.
    await env.KEY_LIMITER.getByName(created.id).revoke();
    const res = await edge(E, "/v1/models", { headers: bearer(created.key) });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: { code: "invalid_api_key" } });
  });

  it.each([
    ["no Authorization header", {}],
    ["an unknown qvl_ key", bearer("qvl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
    ["a key that is not a qvl_ key", bearer("sk-not-ours")],
    ["the root key with a byte more", bearer(`${TOKEN}x`)],
    ["a Basic scheme", { authorization: `Basic ${btoa("user:pass")}` }],
    ["an empty bearer", { authorization: "Bearer " }],
  ])("refuses %s with 401 invalid_api_key and WWW-Authenticate", async (_name, headers) => {
    for (const path of ["/v1/models", "/v1/usage", "/v1/keys"]) {
      const res = await edge(E, path, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe('Bearer realm="qwen-vl"');
      expect(await res.json()).toMatchObject({ error: { code: "invalid_api_key", type: "authentication_error" } });
    }
    const res = await caption("x", new Uint8Array([1]), "", headers);
    expect(res.status).toBe(401);
    expect(res.headers.get("x-cache")).toBe("MISS");
  });

  it("imports a chosen key once (npm start's QVL_DEV_KEY); a second import of the same key is 409 key_exists", async () => {
    const key = `qvl_dev_${crypto.randomUUID().replaceAll("-", "")}`;
    const created = await createKey(E, { scopes: ["caption"], key });
    expect(created.key).toBe(key);
    const again = await edge(E, "/v1/keys", {
      method: "POST",
      headers: { ...bearer(TOKEN), "content-type": "application/json" },
      body: JSON.stringify({ name: "again", scopes: ["caption"], key }),
    });
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ error: { code: "key_exists", param: "key" } });
  });

  it("validates what it creates: 400 naming the field", async () => {
    for (const [body, param] of [
      [{ name: "x", scopes: [] }, "scopes"],
      [{ name: "x", scopes: ["everything"] }, "scopes.0"],
      [{ name: "", scopes: ["chat"] }, "name"],
      [{ name: "x", scopes: ["chat"], rate: "fast" }, "rate"],
      [{ name: "x", scopes: ["chat"], quota: 0 }, "quota"],
      [{ name: "x", scopes: ["chat"], key: "qvl_short" }, "key"],
      [{ name: "x", scopes: ["chat"], quality: "turbo" }, "quality"],
    ] as const) {
      const res = await edge(E, "/v1/keys", {
        method: "POST",
        headers: { ...bearer(TOKEN), "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: "invalid_request", param } });
    }
  });

  it("parses rates: N/s, N/min, N/hour, N/day, N/30s", () => {
    expect(parseRate("60/min")).toEqual({ limit: 60, window_s: 60 });
    expect(parseRate("10/s")).toEqual({ limit: 10, window_s: 1 });
    expect(parseRate("1000/hour")).toEqual({ limit: 1000, window_s: 3600 });
    expect(parseRate("5/day")).toEqual({ limit: 5, window_s: 86400 });
    expect(parseRate("3/30s")).toEqual({ limit: 3, window_s: 30 });
    expect(parseRate("0/min")).toBeNull();
    expect(parseRate("ten/min")).toBeNull();
  });
});

describe("scopes", () => {
  it("a caption-only key: captions pass auth; chat, VQA, grounding, tensors and key admin are 403 insufficient_scope", async () => {
    const { key } = await createKey(E, { scopes: ["caption"] });
    // Past auth and the limiter, the route itself refuses the empty body: not a 401 or 403.
    const ok = await edge(E, "/v1/captions", { method: "POST", headers: { ...bearer(key), "content-type": "image/jpeg" } });
    expect(ok.status).toBe(400);
    for (const [method, path] of [
      ["POST", "/v1/chat/completions"],
      ["POST", "/v1/vqa"],
      ["POST", "/v1/grounding"],
      ["POST", "/v1/tensors"],
      ["POST", "/v1/keys"],
      ["GET", "/v1/keys"],
    ]) {
      const res = await edge(E, path, {
        method,
        headers: { ...bearer(key), "content-type": "application/json" },
        body: method === "POST" ? "{}" : undefined,
      });
      expect(res.status, path).toBe(403);
      expect(await res.json()).toMatchObject({ error: { code: "insufficient_scope", type: "permission_error" } });
    }
    // Any valid key: the model list and its own usage.
    expect((await edge(E, "/v1/models", { headers: bearer(key) })).status).toBe(200);
    expect((await edge(E, "/v1/usage", { headers: bearer(key) })).status).toBe(200);
  });

  it("an admin key manages keys and reads tensors; the pool stays on the node secret", async () => {
    const admin = await createKey(E, { scopes: ["admin"] });
    const made = await edge(E, "/v1/keys", {
      method: "POST",
      headers: { ...bearer(admin.key), "content-type": "application/json" },
      body: JSON.stringify({ name: "made by admin", scopes: ["vqa"] }),
    });
    expect(made.status).toBe(201);
    const tensor = await edge(E, "/v1/tensors", {
      method: "POST",
      headers: { ...bearer(admin.key), "content-type": "application/octet-stream" },
      body: (await fixture("fixtures/coffee.png")) as Uint8Array<ArrayBuffer>,
    });
    expect(tensor.status).toBe(200);
    expect(tensor.headers.get("x-tensor-shape")).toBe("3,448,448");
    expect(tensor.headers.get("x-ratelimit-limit")).toBe("60");
    expect((await edge(E, "/v1/pool/nodes", { headers: bearer(admin.key) })).status).toBe(401);
    expect((await edge(E, "/v1/pool/nodes", { headers: bearer("test-node-secret") })).status).toBe(200);
  });
});

describe("rate limits", () => {
  it("is exact under concurrency: 20 requests at once on a 5/min key → exactly 5 admitted", async () => {
    const { key } = await createKey(E, { scopes: ["chat"], rate: "5/min" });
    const results = await Promise.all(Array.from({ length: 20 }, () => edge(E, "/v1/models", { headers: bearer(key) })));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 200)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(15);
    const remaining = results.filter((r) => r.status === 200).map((r) => Number(r.headers.get("x-ratelimit-remaining")));
    expect(remaining.sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it("answers 429 rate_limited with Retry-After and x-ratelimit-*; recovers after the window", async () => {
    const { key } = await createKey(E, { scopes: ["chat"], rate: "3/s" });
    const seen: Array<[number, string | null, string | null]> = [];
    for (let i = 0; i < 3; i++) {
      const res = await edge(E, "/v1/models", { headers: bearer(key) });
      seen.push([res.status, res.headers.get("x-ratelimit-limit"), res.headers.get("x-ratelimit-remaining")]);
    }
    expect(seen).toEqual([
      [200, "3", "2"],
      [200, "3", "1"],
      [200, "3", "0"],
    ]);
    const refused = await edge(E, "/v1/models", { headers: bearer(key) });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(refused.headers.get("x-ratelimit-limit")).toBe("3");
    expect(refused.headers.get("x-ratelimit-remaining")).toBe("0");
    expect(Number(refused.headers.get("x-ratelimit-reset"))).toBe(1);
    expect(await refused.json()).toMatchObject({ error: { code: "rate_limited", type: "rate_limit_error" } });

    await new Promise((r) => setTimeout(r, 1_050));
    const again = await edge(E, "/v1/models", { headers: bearer(key) });
    expect(again.status).toBe(200);
    expect(again.headers.get("x-ratelimit-remaining")).toBe("2");
  });

  it("refills continuously (the bucket on the Durable Object's clock): one token per window/limit", async () => {
    const { id, key } = await createKey(E, { scopes: ["chat"], rate: "60/min" });
    const stub = env.KEY_LIMITER.getByName(id);
    const t0 = Date.now() + 86_400_000;
    const at = (ms: number) =>
      runInDurableObject(stub, (o: KeyLimiter) => {
        o.clock = () => t0 + ms;
      });
    await at(0);
    for (let i = 0; i < 60; i++) expect((await edge(E, "/v1/models", { headers: bearer(key) })).status).toBe(200);
    const refused = await edge(E, "/v1/models", { headers: bearer(key) });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(refused.headers.get("x-ratelimit-reset")).toBe("60");
    await at(999);
    expect((await edge(E, "/v1/models", { headers: bearer(key) })).status).toBe(429);
    await at(1_000);
    expect((await edge(E, "/v1/models", { headers: bearer(key) })).status).toBe(200);
    await at(31_000);
    const later = await edge(E, "/v1/models", { headers: bearer(key) });
    expect(later.headers.get("x-ratelimit-remaining")).toBe("29");
    // The usage report counts refusals.
    const usage = (await (await edge(E, "/v1/usage", { headers: bearer(key) })).json()) as { rate_limited: number };
    expect(usage.rate_limited).toBe(2);
  });

  it("a refused generation does nothing costly: no image fetched, no decode, no GPU; the refusal wins", async () => {
    const { key } = await createKey(E, { scopes: ["caption"], rate: "1/min" });
    const first = await edge(E, "/v1/models", { headers: bearer(key) });
    expect(first.status).toBe(200);
    const path = `/img/dune_1.8mp.jpg?cc=max-age%3D600&v=refused-${crypto.randomUUID()}`;
    const refused = await edge(E, "/v1/captions", {
      method: "POST",
      headers: { ...bearer(key), "content-type": "application/json" },
      body: JSON.stringify({ image: `${env.CACHE_ORIGIN}${path}` }),
    });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("x-ratelimit-remaining")).toBe("0");
    expect(refused.headers.get("retry-after")).toBe("60");
    expect(await refused.json()).toMatchObject({ error: { code: "rate_limited" } });
    const count = (await (await fetch(`${env.CACHE_ORIGIN}/count?path=${encodeURIComponent(path)}`)).json()) as { count: number };
    expect(count.count).toBe(0);
    // A request the route would refuse anyway (no image) still gets the rate limiter's answer.
    const bad = await edge(E, "/v1/captions", { method: "POST", headers: { ...bearer(key), "content-type": "image/jpeg" } });
    expect(bad.status).toBe(429);
  });

  it("the root key is never limited", async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => edge(E, "/v1/models", { headers: bearer(TOKEN) })));
    expect(results.every((r) => r.status === 200 && !r.headers.has("x-ratelimit-limit"))).toBe(true);
  });
});

describe("quotas and usage", () => {
  it("a key with a quota of 2 gets 2 answers, then 429 quota_exceeded until the month ends; failed requests are given back", async () => {
    const { key } = await createKey(E, { scopes: ["caption"], quota: 2 });
    const image = await fixture("fixtures/coffee.png");
    // A request the route refuses (no image) does not use the quota up.
    const bad = await edge(E, "/v1/captions", { method: "POST", headers: { ...bearer(key), "content-type": "image/jpeg" } });
    expect(bad.status).toBe(400);
    await bad.settled();
    const answers = [];
    for (let i = 0; i < 2; i++) {
      const res = await caption(key, image, `?seed=${1000 + i}`);
      expect(res.status).toBe(200);
      answers.push((await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } });
      await res.settled();
    }
    const refused = await caption(key, image, "?seed=1002");
    expect(refused.status).toBe(429);
    expect(await refused.json()).toMatchObject({ error: { code: "quota_exceeded", type: "rate_limit_error" } });
    const now = new Date();
    const monthEnd = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
    expect(Math.abs(Number(refused.headers.get("retry-after")) - (monthEnd - Date.now()) / 1000)).toBeLessThan(5);

    const usage = (await (await edge(E, "/v1/usage", { headers: bearer(key) })).json()) as Record<string, unknown>;
    const prompt = answers.reduce((n, a) => n + a.usage.prompt_tokens, 0);
    const completion = answers.reduce((n, a) => n + a.usage.completion_tokens, 0);
    expect(usage).toMatchObject({
      object: "usage",
      period: now.toISOString().slice(0, 7),
      requests: 2,
      cached_requests: 0,
      images: 2,
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
      quota_exceeded: 1,
      quota: { limit: 2, used: 2, remaining: 0 },
      key: { scopes: ["caption"] },
    });
  });

  it("counts answers from the cache as cached requests (they still count against the quota)", async () => {
    const { key } = await createKey(E, { scopes: ["caption"] });
    const image = await fixture("fixtures/coffee.png");
    for (let i = 0; i < 2; i++) {
      const res = await caption(key, image, "?seed=77001");
      expect(res.status).toBe(200);
      expect(res.headers.get("x-cache")).toBe(i === 0 ? "MISS" : "HIT");
      await res.json();
      await res.settled();
    }
    const usage = (await (await edge(E, "/v1/usage", { headers: bearer(key) })).json()) as Record<string, number>;
    expect(usage).toMatchObject({ requests: 2, cached_requests: 1, images: 2 });
  });

  it("the root key has no usage of its own", async () => {
    expect((await edge(E, "/v1/usage", { headers: bearer(TOKEN) })).status).toBe(400);
  });
});
