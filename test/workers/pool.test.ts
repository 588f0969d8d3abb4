/**
 * The pool inside workerd: the Durable Object (register, refresh, expire by TTL and by alarm, drain,
 * deregister, bounds, persistence) driven over RPC with its clock moved through `runInDurableObject`,
 * and the routes (`POST /v1/pool/heartbeat`, `GET /v1/pool/nodes`) through the Worker's own fetch.
 */
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import type { AppEnv } from "../../src/env";
import { notFound, onError } from "../../src/middleware/error-handler";
import { POOL_NAME, type PoolObject } from "../../src/pool/pool-object";
import { getPoolRouter, noCapacityError, PoolRouter } from "../../src/pool/router";
import type { HeartbeatInput } from "../../src/pool/schema";

const SECRET = "test-node-secret";
const TTL = 10_000;
const worker = exports.default;

let counter = 0;
/** A fresh pool instance per test (the routes use the shared "global" one). */
function freshPool(): DurableObjectStub<PoolObject> {
  return env.POOL.getByName(`test-pool-${++counter}-${crypto.randomUUID()}`);
}

function beat(id: string, over: Partial<HeartbeatInput> = {}): HeartbeatInput {
  return {
    id,
    url: "http://127.0.0.1:9000",
    variant: "qwen-vl-chat",
    engine: "simulated",
    version: "0.1.0",
    capacity: 4,
    load: { active: 0, queued: 0 },
    draining: false,
    ...over,
  };
}

/**
 * Stops the object's clock at `T0 + offsetMs`. T0 is a day ahead, so the sweep alarms it sets never
 * fire by themselves during a test; `runDurableObjectAlarm` runs them when a test wants.
 */
const T0 = Date.now() + 86_400_000;
function setClock(stub: DurableObjectStub<PoolObject>, offsetMs: number): Promise<void> {
  return runInDurableObject(stub, (pool) => {
    pool.clock = () => T0 + offsetMs;
  });
}

function storedRows(stub: DurableObjectStub<PoolObject>): Promise<{ id: string; last_seen: number }[]> {
  return runInDurableObject(stub, (_pool, state) => [
    ...state.storage.sql.exec<{ id: string; last_seen: number }>("SELECT id, last_seen FROM nodes ORDER BY id"),
  ]);
}

describe("the pool Durable Object", () => {
  it("registers a node and lists it; a later heartbeat updates it in place", async () => {
    const pool = freshPool();
    const first = await pool.heartbeat(beat("gpu-a", { region: "eu", url: "http://10.0.0.1:9000/" }));
    expect(first).toEqual({ ok: true, state: "active", ttlMs: TTL, heartbeatMs: 2_000 });
    await pool.heartbeat(beat("gpu-a", { region: "eu", url: "http://10.0.0.1:9000", load: { active: 3, queued: 2 } }));
    const nodes = await pool.list();
    expect(nodes).toHaveLength(1);
    expect(nodes[0]).toMatchObject({
      id: "gpu-a",
      url: "http://10.0.0.1:9000",
      variant: "qwen-vl-chat",
      engine: "simulated",
      version: "0.1.0",
      capacity: 4,
      load: { active: 3, queued: 2 },
      draining: false,
      region: "EU",
      source: "registered",
    });
    expect(Math.abs(nodes[0].lastSeen - Date.now())).toBeLessThan(5_000);
    expect(await pool.settings()).toEqual({ ttlMs: TTL, heartbeatMs: 2_000, maxNodes: 256 });
  });

  it("validates its input itself: garbage gets a typed refusal, not an exception", async () => {
    const pool = freshPool();
    expect(await pool.heartbeat(null)).toMatchObject({ ok: false, error: "invalid" });
    expect(await pool.heartbeat({ ...beat("x"), capacity: -1 })).toMatchObject({ ok: false, error: "invalid", param: "capacity" });
    expect(await pool.heartbeat("{}")).toMatchObject({ ok: false, error: "invalid" });
    expect(await pool.list()).toEqual([]);
  });

  it("drops a node whose heartbeats stop for the TTL: at once on read, and from storage by the alarm", async () => {
    const pool = freshPool();
    await setClock(pool, 0);
    await pool.heartbeat(beat("silent"));
    await pool.heartbeat(beat("alive"));
    expect(await runInDurableObject(pool, (_p, state) => state.storage.getAlarm())).not.toBeNull();

    // 6 s later "alive" heartbeats again; "silent" does not.
    await setClock(pool, 6_000);
    await pool.heartbeat(beat("alive"));
    await setClock(pool, TTL - 1);
    expect((await pool.list()).map((n) => n.id)).toEqual(["alive", "silent"]);
    await setClock(pool, TTL);
    expect((await pool.list()).map((n) => n.id)).toEqual(["alive"]);
    expect((await storedRows(pool)).map((r) => r.id)).toEqual(["alive", "silent"]); // read-filtered, not yet swept

    expect(await runDurableObjectAlarm(pool)).toBe(true);
    expect((await storedRows(pool)).map((r) => r.id)).toEqual(["alive"]);
    // The alarm re-arms for the next expiry, and clears itself once the pool is empty.
    expect(await runInDurableObject(pool, (_p, state) => state.storage.getAlarm())).not.toBeNull();
    await setClock(pool, 6_000 + TTL);
    expect(await runDurableObjectAlarm(pool)).toBe(true);
    expect(await storedRows(pool)).toEqual([]);
    expect(await pool.list()).toEqual([]);
    expect(await runInDurableObject(pool, (_p, state) => state.storage.getAlarm())).toBeNull();
  });

  it("a node whose engine is unhealthy is listed but never picked", async () => {
    const pool = freshPool();
    await setClock(pool, 0);
    await pool.heartbeat(beat("sick", { healthy: false } as never));
    expect((await pool.list()).find((n) => n.id === "sick")?.draining).toBe(true);
    const router = new PoolRouter({ registered: () => pool.list(), random: () => 0 });
    expect(await router.pick({ variant: "qwen-vl-chat" })).toMatchObject({ ok: false });
  });

  it("a draining node stays listed as draining until it expires, and is never picked", async () => {
    const pool = freshPool();
    await setClock(pool, 0);
    await pool.heartbeat(beat("busy", { load: { active: 3, queued: 0 } }));
    const result = await pool.heartbeat(beat("leaving", { draining: true }));
    expect(result).toMatchObject({ ok: true, state: "draining" });
    const listed = await pool.list();
    expect(listed.find((n) => n.id === "leaving")?.draining).toBe(true);

    const router = new PoolRouter({ registered: () => pool.list(), random: () => 0 });
    for (let i = 0; i < 10; i++) expect(await router.pick({ variant: "qwen-vl-chat" })).toMatchObject({ ok: true, node: { id: "busy" } });
    await pool.deregister("busy");
    router.invalidate();
    expect(await router.pick({ variant: "qwen-vl-chat" })).toMatchObject({ ok: false, reason: "no_nodes", retryAfter: 5 });

    await setClock(pool, TTL);
    expect(await pool.list()).toEqual([]);
  });

  it("deregister: gone at once; a heartbeat already on its way cannot bring it back; the id may return later", async () => {
    const pool = freshPool();
    await setClock(pool, 0);
    await pool.heartbeat(beat("gpu-d"));
    expect(await pool.heartbeat(beat("gpu-d", { draining: true, deregister: true }))).toMatchObject({ ok: true, state: "deregistered" });
    expect(await pool.list()).toEqual([]);
    expect(await storedRows(pool)).toEqual([]);
    // A periodic heartbeat that was in flight when the node stopped.
    expect(await pool.heartbeat(beat("gpu-d"))).toMatchObject({ ok: true, state: "ignored" });
    expect(await pool.list()).toEqual([]);
    // Two heartbeat intervals later the id registers again (a restarted node).
    await setClock(pool, 4_000);
    expect(await pool.heartbeat(beat("gpu-d"))).toMatchObject({ ok: true, state: "active" });
    expect((await pool.list()).map((n) => n.id)).toEqual(["gpu-d"]);
    // Deregistering an unknown id is harmless.
    expect(await pool.heartbeat(beat("never-seen", { deregister: true }))).toMatchObject({ ok: true, state: "deregistered" });
  });

  it("holds at most 256 nodes: a new one beyond is refused with a Retry-After, known ones keep heartbeating", async () => {
    const pool = freshPool();
    await setClock(pool, 0);
    const results = await runInDurableObject(pool, (p) => {
      const out = [];
      for (let i = 0; i < 257; i++) out.push(p.heartbeat(beat(`n${i}`)));
      out.push(p.heartbeat(beat("n0", { load: { active: 1, queued: 0 } })));
      return out;
    });
    expect(results.slice(0, 256).every((r) => r.ok)).toBe(true);
    expect(results[256]).toEqual({ ok: false, error: "pool_full", message: "The pool holds its maximum of 256 nodes.", retryAfter: 10 });
    expect(results[257]).toMatchObject({ ok: true, state: "active" });
    expect(await pool.list()).toHaveLength(256);
    // Once nodes expire there is room again.
    await setClock(pool, TTL);
    expect(await pool.heartbeat(beat("n256"))).toMatchObject({ ok: true });
    expect((await pool.list()).map((n) => n.id)).toEqual(["n256"]);
  });

  it("writes a plain heartbeat at most every TTL/4, a change at once, and reloads its nodes after a restart", async () => {
    const pool = freshPool();
    await setClock(pool, 0);
    await pool.heartbeat(beat("gpu-p"));
    const [row0] = await storedRows(pool);
    await setClock(pool, 2_000);
    await pool.heartbeat(beat("gpu-p", { load: { active: 1, queued: 0 } }));
    expect((await storedRows(pool))[0].last_seen).toBe(row0.last_seen);
    await setClock(pool, 2_100);
    await pool.heartbeat(beat("gpu-p", { draining: true }));
    const [row1] = await storedRows(pool);
    expect(row1.last_seen).toBeGreaterThan(row0.last_seen);
    await setClock(pool, 2_600);
    await pool.heartbeat(beat("gpu-p", { draining: true }));
    expect((await storedRows(pool))[0].last_seen).toBe(row1.last_seen);
    await setClock(pool, 4_600);
    await pool.heartbeat(beat("gpu-p", { draining: true }));
    expect((await storedRows(pool))[0].last_seen).toBe(T0 + 4_600);

    // A new instance on the same storage (what an eviction or restart gives) sees the node.
    const reloaded = await runInDurableObject(pool, (p, state) => {
      const Ctor = p.constructor as new (state: DurableObjectState, env: Cloudflare.Env) => PoolObject;
      return new Ctor(state, env).list();
    });
    expect(reloaded).toEqual([expect.objectContaining({ id: "gpu-p", draining: true, lastSeen: T0 + 4_600 })]);
  });
});

function heartbeatRequest(body: BodyInit | null, headers: Record<string, string> = {}) {
  return worker.fetch("http://edge.test/v1/pool/heartbeat", {
    method: "POST",
    headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json", ...headers },
    body,
  });
}

async function listNodes(): Promise<{ ttl_ms: number; heartbeat_ms: number; nodes: Record<string, unknown>[] }> {
  const res = await worker.fetch("http://edge.test/v1/pool/nodes", { headers: { authorization: `Bearer ${SECRET}` } });
  expect(res.status).toBe(200);
  return res.json();
}

describe("POST /v1/pool/heartbeat", () => {
  it("registers a node and answers the TTL and the heartbeat interval to use", async () => {
    const id = `route-${crypto.randomUUID()}`;
    const res = await heartbeatRequest(JSON.stringify(beat(id, { region: "fra", load: { active: 1, queued: 2 } })));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true, state: "active", ttl_ms: TTL, heartbeat_ms: 2_000 });

    const listed = await listNodes();
    expect(listed.ttl_ms).toBe(TTL);
    const entry = listed.nodes.find((n) => n.id === id);
    expect(entry).toMatchObject({
      id,
      url: "http://127.0.0.1:9000",
      variant: "qwen-vl-chat",
      engine: "simulated",
      region: "FRA",
      capacity: 4,
      load: { active: 1, queued: 2 },
      state: "active",
      source: "registered",
    });
    expect(entry?.age_ms).toBeGreaterThanOrEqual(0);
    expect(Date.parse(String(entry?.last_seen))).not.toBeNaN();

    // Draining, then deregistering.
    const draining = await heartbeatRequest(JSON.stringify(beat(id, { draining: true })));
    expect(await draining.json()).toMatchObject({ ok: true, state: "draining" });
    expect((await listNodes()).nodes.find((n) => n.id === id)?.state).toBe("draining");
    const gone = await heartbeatRequest(JSON.stringify(beat(id, { draining: true, deregister: true })));
    expect(await gone.json()).toMatchObject({ ok: true, state: "deregistered" });
    expect((await listNodes()).nodes.find((n) => n.id === id)).toBeUndefined();
  });

  it("deregisters with a bare {id, deregister: true} too", async () => {
    const id = `bare-${crypto.randomUUID()}`;
    await heartbeatRequest(JSON.stringify(beat(id)));
    expect((await listNodes()).nodes.find((n) => n.id === id)).toBeDefined();
    const gone = await heartbeatRequest(JSON.stringify({ id, deregister: true }));
    expect(gone.status).toBe(200);
    expect(await gone.json()).toEqual({ ok: true, state: "deregistered", ttl_ms: TTL, heartbeat_ms: 2_000 });
    expect((await listNodes()).nodes.find((n) => n.id === id)).toBeUndefined();
  });

  it.each([
    ["no Authorization header", {}],
    ["a wrong secret", { authorization: "Bearer not-the-secret" }],
    ["a secret of another length", { authorization: `Bearer ${SECRET}x` }],
    ["a Basic scheme", { authorization: `Basic ${btoa(`node:${SECRET}`)}` }],
  ])("refuses %s with 401 in the error envelope", async (_name, headers) => {
    const res = await worker.fetch("http://edge.test/v1/pool/heartbeat", {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(beat("intruder")),
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
    const body = (await res.json()) as { error: { code: string; type: string } };
    expect(body.error).toMatchObject({ code: "invalid_api_key", type: "authentication_error" });
    expect((await listNodes()).nodes.find((n) => n.id === "intruder")).toBeUndefined();
  });

  it("GET /v1/pool/nodes needs the node secret too", async () => {
    expect((await worker.fetch("http://edge.test/v1/pool/nodes")).status).toBe(401);
    const wrong = await worker.fetch("http://edge.test/v1/pool/nodes", { headers: { authorization: "Bearer nope" } });
    expect(wrong.status).toBe(401);
  });

  it.each([
    ["invalid JSON", "{id:", "not valid JSON"],
    ["an empty body", "", "not valid JSON"],
    ["JSON null", "null", "Invalid heartbeat"],
    ["a JSON array", "[]", "Invalid heartbeat"],
    ["a JSON number", "42", "Invalid heartbeat"],
    ["a JSON string", '"hello"', "Invalid heartbeat"],
    ["a deeply nested value", `${"[".repeat(3000)}${"]".repeat(3000)}`, "Invalid heartbeat"],
    ["invalid UTF-8", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "not valid UTF-8"],
  ])("answers 400 to %s", async (_name, body, message) => {
    const res = await heartbeatRequest(body);
    expect(res.status).toBe(400);
    const json = (await res.json()) as { error: { code: string; message: string } };
    expect(json.error.code).toBe("invalid_request");
    expect(json.error.message).toContain(message);
  });

  it("answers 400 naming the field when the heartbeat is incomplete or wrong", async () => {
    const { capacity: _c, ...noCapacity } = beat("bad");
    const res = await heartbeatRequest(JSON.stringify(noCapacity));
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "invalid_request", param: "capacity" } });
    const badUrl = await heartbeatRequest(JSON.stringify(beat("bad", { url: "javascript:alert(1)" })));
    expect(await badUrl.json()).toMatchObject({ error: { code: "invalid_request", param: "url" } });
  });

  it("refuses a huge body with 413: announced by Content-Length, or streamed without one", async () => {
    const huge = JSON.stringify({ ...beat("big"), padding: "x".repeat(100_000) });
    const announced = await heartbeatRequest(huge);
    expect(announced.status).toBe(413);
    expect(await announced.json()).toMatchObject({ error: { code: "request_too_large" } });

    // Chunked, no Content-Length: counted while reading, refused once past 16 KiB.
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 10_000_000) return controller.close();
        sent += 8_192;
        controller.enqueue(new Uint8Array(8_192).fill(0x20));
      },
    });
    const streamed = await heartbeatRequest(stream);
    expect(streamed.status).toBe(413);
    expect(sent).toBeLessThan(1_000_000);
  });
});

describe("routing through the real pool", () => {
  /** A route as the integrating engineer will write one: pick, or 503 via the shared error handler. */
  function pickApp() {
    const app = new Hono<AppEnv>();
    app.get("/pick/:variant", async (c) => {
      const variant = c.req.param("variant") as "qwen-vl" | "qwen-vl-chat";
      const result = await getPoolRouter(c.env).pick({ variant, region: c.req.raw.cf as IncomingRequestCfProperties | undefined });
      if (!result.ok) throw noCapacityError(result);
      return c.json({ id: result.node.id, source: result.node.source });
    });
    app.onError(onError);
    app.notFound(notFound);
    return app;
  }

  async function clearGlobalPool() {
    await runInDurableObject(env.POOL.getByName(POOL_NAME), (pool) => {
      for (const node of pool.list()) pool.deregister(node.id);
    });
  }

  it("no node → 503 no_capacity with Retry-After, in the documented error shape", async () => {
    await clearGlobalPool();
    const testEnv = { ...env } as Cloudflare.Env; // its own router: nothing cached from other tests
    const res = await pickApp().request("/pick/qwen-vl", {}, testEnv);
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("5");
    expect(await res.json()).toEqual({
      error: { message: "No GPU node serving qwen-vl is available; retry later.", type: "server_error", param: null, code: "no_capacity" },
    });
  });

  it("a node registered by heartbeat is picked; a static node from POOL_STATIC_NODES too, merged with it", async () => {
    await clearGlobalPool();
    const id = `picked-${crypto.randomUUID()}`;
    expect((await heartbeatRequest(JSON.stringify(beat(id, { variant: "qwen-vl" })))).status).toBe(200);
    const registeredOnly = await pickApp().request("/pick/qwen-vl", {}, { ...env } as Cloudflare.Env);
    expect(await registeredOnly.json()).toEqual({ id, source: "registered" });

    const withStatic = {
      ...env,
      POOL_STATIC_NODES: JSON.stringify([{ id: "static-chat", url: "http://127.0.0.1:9100", variant: "qwen-vl-chat", capacity: 1 }]),
    } as unknown as Cloudflare.Env;
    const app = pickApp();
    expect(await (await app.request("/pick/qwen-vl-chat", {}, withStatic)).json()).toEqual({ id: "static-chat", source: "static" });
    expect(await (await app.request("/pick/qwen-vl", {}, withStatic)).json()).toEqual({ id, source: "registered" });
    await clearGlobalPool();
  });
});
