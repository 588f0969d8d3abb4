/**
 * The router's choice (P2C by outstanding work, region preference and fallback, draining, tried nodes,
 * quarantine), its node-list cache, static nodes, and dispatch bookkeeping; with injected random and clock.
 */
import { describe, expect, it } from "vitest";
import { ApiError } from "../errors";
import { callerRegion, regionRank } from "./region";
import { DEFAULT_RETRY_AFTER, mergeNodes, noCapacityError, type PickPolicy, PoolRouter, pickNode } from "./router";
import type { PoolNode } from "./schema";

function node(id: string, over: Partial<PoolNode> & { active?: number; queued?: number } = {}): PoolNode {
  const { active = 0, queued = 0, ...rest } = over;
  return {
    id,
    url: `http://${id}.test:9000`,
    variant: "qwen-vl-chat",
    engine: "simulated",
    version: "1",
    capacity: 8,
    load: { active, queued },
    draining: false,
    source: "registered",
    lastSeen: 0,
    ...rest,
  };
}

/** A deterministic stream of numbers in [0, 1) (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns the given numbers in turn (and repeats the last). */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)];
}

function policy(over: Partial<PickPolicy> = {}): PickPolicy {
  return {
    inflight: () => 0,
    quarantined: () => false,
    random: seeded(1),
    overflowFactor: 2,
    retryAfter: DEFAULT_RETRY_AFTER,
    ...over,
  };
}

function picked(result: ReturnType<typeof pickNode>): string {
  if (!result.ok) throw new Error(`expected a node, got ${result.reason}`);
  return result.node.id;
}

describe("callerRegion", () => {
  it("gives colo, country, continent, upper-case, most specific first", () => {
    expect(callerRegion({ colo: "fra", country: "DE", continent: "EU" })).toEqual(["FRA", "DE", "EU"]);
  });
  it("skips what is missing, unknown (XX), Tor (T1) or not a string, and repeats", () => {
    expect(callerRegion({ colo: "AMS", country: "XX", continent: "EU" })).toEqual(["AMS", "EU"]);
    expect(callerRegion({ country: "T1", continent: 7 })).toEqual([]);
    expect(callerRegion({ country: "NA", continent: "NA" })).toEqual(["NA"]);
    expect(callerRegion(undefined)).toEqual([]);
    expect(callerRegion(null)).toEqual([]);
  });
  it("ranks a node by how closely its region matches", () => {
    const keys = ["FRA", "DE", "EU"];
    expect(regionRank("fra", keys)).toBe(0);
    expect(regionRank("DE", keys)).toBe(1);
    expect(regionRank("EU", keys)).toBe(2);
    expect(regionRank("NA", keys)).toBe(3);
    expect(regionRank(undefined, keys)).toBe(3);
  });
});

describe("pickNode: least outstanding work, power of two choices", () => {
  it("of the two sampled nodes, takes the less loaded", () => {
    const nodes = [node("a", { active: 1 }), node("b", { active: 5 }), node("c", { active: 3 })];
    // random 0 → index 0 (a); random 0.5 → index 1 of the other two → c: a (1) beats c (3).
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat" }, policy({ random: sequence(0, 0.5) })))).toBe("a");
    // b and c sampled: c (3) beats b (5), though a is the least loaded overall (it was not sampled).
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat" }, policy({ random: sequence(0.4, 0.9) })))).toBe("c");
  });

  it("over many picks: never the most loaded, the least loaded most often", () => {
    const nodes = [node("a", { active: 0 }), node("b", { active: 2 }), node("c", { active: 4 }), node("d", { active: 6 })];
    const counts: Record<string, number> = { a: 0, b: 0, c: 0, d: 0 };
    const p = policy({ random: seeded(42) });
    for (let i = 0; i < 4000; i++) counts[picked(pickNode(nodes, { variant: "qwen-vl-chat" }, p))]++;
    expect(counts.d).toBe(0);
    // P2C over 4 distinct loads picks the k-th least loaded with probability (n-k)/C(n,2): 1/2, 1/3, 1/6.
    expect(counts.a / 4000).toBeCloseTo(0.5, 1);
    expect(counts.b / 4000).toBeCloseTo(1 / 3, 1);
    expect(counts.c / 4000).toBeCloseTo(1 / 6, 1);
  });

  it("counts queued work and this isolate's in-flight dispatches as outstanding", () => {
    const nodes = [node("a", { active: 1, queued: 3 }), node("b", { active: 2 })];
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat" }, policy({ random: sequence(0, 0) })))).toBe("b");
    const inflight = (id: string) => (id === "b" ? 3 : 0);
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat" }, policy({ random: sequence(0, 0), inflight })))).toBe("a");
  });

  it("compares load relative to capacity, then the raw count", () => {
    const big = node("big", { capacity: 32, active: 10 }); // 31 %
    const small = node("small", { capacity: 4, active: 3 }); // 75 %
    expect(picked(pickNode([small, big], { variant: "qwen-vl-chat" }, policy({ random: sequence(0, 0) })))).toBe("big");
    const even = node("even", { capacity: 32, active: 8 }); // 25 %, 8 outstanding
    const few = node("few", { capacity: 4, active: 1 }); // 25 %, 1 outstanding
    expect(picked(pickNode([even, few], { variant: "qwen-vl-chat" }, policy({ random: sequence(0, 0) })))).toBe("few");
  });

  it("only picks nodes of the requested variant", () => {
    const nodes = [node("base", { variant: "qwen-vl" }), node("chat", { variant: "qwen-vl-chat", active: 7 })];
    for (let i = 0; i < 20; i++) expect(picked(pickNode(nodes, { variant: "qwen-vl-chat" }, policy()))).toBe("chat");
    expect(picked(pickNode(nodes, { variant: "qwen-vl" }, policy()))).toBe("base");
  });
});

describe("pickNode: draining, tried nodes, quarantine", () => {
  it("never picks a draining node, however idle", () => {
    const nodes = [node("idle-draining", { draining: true }), node("busy", { active: 7 })];
    const p = policy({ random: seeded(7) });
    for (let i = 0; i < 200; i++) expect(picked(pickNode(nodes, { variant: "qwen-vl-chat" }, p))).toBe("busy");
    const result = pickNode([node("x", { draining: true })], { variant: "qwen-vl-chat" }, p);
    expect(result).toMatchObject({ ok: false, reason: "no_nodes", retryAfter: 5 });
  });

  it("never picks a node already tried for this request; all tried → exhausted", () => {
    const nodes = [node("a"), node("b", { active: 5 })];
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat", exclude: ["a"] }, policy()))).toBe("b");
    expect(pickNode(nodes, { variant: "qwen-vl-chat", exclude: new Set(["a", "b"]) }, policy())).toMatchObject({
      ok: false,
      reason: "exhausted",
      retryAfter: 2,
    });
  });

  it("avoids a quarantined node while another can serve, and uses it when it is the only one", () => {
    const nodes = [node("flaky"), node("steady", { active: 6 })];
    const quarantined = (id: string) => id === "flaky";
    for (let i = 0; i < 20; i++) expect(picked(pickNode(nodes, { variant: "qwen-vl-chat" }, policy({ quarantined })))).toBe("steady");
    expect(picked(pickNode([node("flaky")], { variant: "qwen-vl-chat" }, policy({ quarantined })))).toBe("flaky");
  });
});

describe("pickNode: region preference and fallback", () => {
  const cf = { colo: "FRA", country: "DE", continent: "EU" };

  it("prefers nodes in the caller's region over less loaded ones elsewhere", () => {
    const nodes = [node("us", { region: "NA" }), node("eu", { region: "EU", active: 5 })];
    for (let i = 0; i < 20; i++) expect(picked(pickNode(nodes, { variant: "qwen-vl-chat", region: cf }, policy()))).toBe("eu");
  });

  it("prefers the closest match: colo, then country, then continent", () => {
    const nodes = [
      node("continent", { region: "EU" }),
      node("country", { region: "de", active: 2 }),
      node("colo", { region: "FRA", active: 4 }),
    ];
    const p = policy();
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat", region: cf }, p))).toBe("colo");
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat", region: { country: "DE", continent: "EU" } }, p))).toBe("country");
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat", region: ["EU"] }, p))).toBe("continent");
  });

  it("falls back to another region when the caller's region has no room", () => {
    const nodes = [node("eu", { region: "EU", active: 6, queued: 2 }), node("us", { region: "NA", active: 7 })];
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat", region: cf }, policy()))).toBe("us");
    // ...and when the caller's region has no node at all, or the caller's region is unknown.
    expect(picked(pickNode([node("us", { region: "NA" })], { variant: "qwen-vl-chat", region: cf }, policy()))).toBe("us");
    expect(picked(pickNode([node("us", { region: "NA" })], { variant: "qwen-vl-chat" }, policy()))).toBe("us");
  });

  it("when no node has room, overflows to the least loaded node under 2× capacity (its queue)", () => {
    const nodes = [node("eu", { region: "EU", active: 8, queued: 6 }), node("us", { region: "NA", active: 8, queued: 2 })];
    expect(picked(pickNode(nodes, { variant: "qwen-vl-chat", region: cf }, policy({ random: sequence(0, 0) })))).toBe("us");
  });

  it("when every node is past its overflow limit: saturated, Retry-After 1", () => {
    const nodes = [node("a", { active: 8, queued: 8 }), node("b", { active: 8, queued: 9 })];
    expect(pickNode(nodes, { variant: "qwen-vl-chat" }, policy())).toMatchObject({ ok: false, reason: "saturated", retryAfter: 1 });
  });
});

describe("noCapacityError", () => {
  it("is a 503 no_capacity ApiError with Retry-After in the documented envelope", async () => {
    const result = pickNode([], { variant: "qwen-vl" }, policy());
    if (result.ok) throw new Error("expected no capacity");
    const error = noCapacityError(result);
    expect(error).toBeInstanceOf(ApiError);
    const response = error.toResponse();
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("5");
    expect(await response.json()).toEqual({
      error: { message: "No GPU node serving qwen-vl is available; retry later.", type: "server_error", param: null, code: "no_capacity" },
    });
  });
});

describe("PoolRouter", () => {
  function fakeClock(start = 1_000_000) {
    let now = start;
    return { now: () => now, advance: (ms: number) => (now += ms) };
  }

  it("reads the pool at most once per cacheMs, sharing one read between concurrent requests", async () => {
    const clock = fakeClock();
    let reads = 0;
    let nodes = [node("a")];
    const router = new PoolRouter({
      registered: async () => {
        reads++;
        return nodes;
      },
      clock: clock.now,
    });
    await Promise.all([router.nodes(), router.nodes(), router.pick({ variant: "qwen-vl-chat" })]);
    expect(reads).toBe(1);
    nodes = [node("a"), node("b")];
    clock.advance(999);
    expect((await router.nodes()).map((n) => n.id)).toEqual(["a"]);
    clock.advance(1);
    expect((await router.nodes()).map((n) => n.id)).toEqual(["a", "b"]);
    expect(reads).toBe(2);
    router.invalidate();
    await router.nodes();
    expect(reads).toBe(3);
  });

  it("keeps using the last list while the pool is unreachable, then static nodes only", async () => {
    const clock = fakeClock();
    let fail = false;
    const errors: unknown[] = [];
    const router = new PoolRouter({
      registered: async () => {
        if (fail) throw new Error("DO unreachable");
        return [node("registered")];
      },
      staticNodes: [{ id: "static", url: "http://static.test:9000", variant: "qwen-vl-chat", capacity: 4 }],
      clock: clock.now,
      onRefreshError: (e) => errors.push(e),
    });
    expect((await router.nodes()).map((n) => n.id)).toEqual(["static", "registered"]);
    fail = true;
    clock.advance(5_000);
    expect((await router.nodes()).map((n) => n.id)).toEqual(["static", "registered"]);
    clock.advance(6_000);
    expect((await router.nodes()).map((n) => n.id)).toEqual(["static"]);
    expect(errors).toHaveLength(2);
  });

  it("routes to static nodes; a registered node with the same id replaces the static one", async () => {
    const router = new PoolRouter({
      registered: async () => [],
      staticNodes: [{ id: "solo", url: "http://127.0.0.1:9000", variant: "qwen-vl", capacity: 2, region: "EU" }],
    });
    const result = await router.pick({ variant: "qwen-vl" });
    expect(result).toMatchObject({
      ok: true,
      node: { id: "solo", url: "http://127.0.0.1:9000", source: "static", load: { active: 0, queued: 0 } },
    });
    const merged = mergeNodes([node("solo", { source: "static" }), node("other", { source: "static" })], [node("solo", { active: 3 })]);
    expect(merged.map((n) => [n.id, n.source, n.load.active])).toEqual([
      ["solo", "registered", 3],
      ["other", "static", 0],
    ]);
  });

  it("static nodes, which report no load, are balanced by this isolate's in-flight count", async () => {
    const router = new PoolRouter({
      registered: async () => [],
      staticNodes: [
        { id: "s1", url: "http://s1.test", variant: "qwen-vl", capacity: 2 },
        { id: "s2", url: "http://s2.test", variant: "qwen-vl", capacity: 2 },
      ],
      random: sequence(0, 0),
    });
    const first = await router.pick({ variant: "qwen-vl" });
    expect(first).toMatchObject({ ok: true, node: { id: "s1" } });
    const release = router.acquire("s1");
    expect(await router.pick({ variant: "qwen-vl" })).toMatchObject({ ok: true, node: { id: "s2" } });
    router.acquire("s2");
    router.acquire("s2");
    router.acquire("s1");
    // s1 and s2 at 2 in flight each: both full (capacity 2), so the pick overflows into a queue...
    expect(await router.pick({ variant: "qwen-vl" })).toMatchObject({ ok: true });
    for (const id of ["s1", "s1", "s2", "s2"]) router.acquire(id);
    // ...until both reach 2 × capacity.
    expect(await router.pick({ variant: "qwen-vl" })).toMatchObject({ ok: false, reason: "saturated", retryAfter: 1 });
    release();
    release(); // idempotent
    expect(router.inflight("s1")).toBe(3);
    expect(await router.pick({ variant: "qwen-vl" })).toMatchObject({ ok: true, node: { id: "s1" } });
  });

  it("a node that failed is avoided for quarantineMs", async () => {
    const clock = fakeClock();
    const router = new PoolRouter({
      registered: async () => [node("a"), node("b", { active: 4 })],
      clock: clock.now,
      random: sequence(0, 0),
      cacheMs: 60_000,
    });
    expect(await router.pick({ variant: "qwen-vl-chat" })).toMatchObject({ node: { id: "a" } });
    router.reportFailure("a");
    expect(await router.pick({ variant: "qwen-vl-chat" })).toMatchObject({ node: { id: "b" } });
    clock.advance(2_000);
    expect(await router.pick({ variant: "qwen-vl-chat" })).toMatchObject({ node: { id: "a" } });
  });

  it("dispatch: retries elsewhere, quarantines the failed node, counts the winner until release()", async () => {
    class Down extends Error {
      readonly retryable = true;
    }
    const router = new PoolRouter({ registered: async () => [node("a"), node("b", { active: 1 })], random: sequence(0, 0) });
    const seenInflight: Record<string, number> = {};
    const routed = await router.dispatch({
      variant: "qwen-vl-chat",
      attempt: async (n) => {
        seenInflight[n.id] = router.inflight(n.id);
        if (n.id === "a") throw new Down("a refused");
        return `stream from ${n.id}`;
      },
    });
    expect(routed.value).toBe("stream from b");
    expect(routed.attempts.map((a) => [a.node.id, a.outcome])).toEqual([
      ["a", "failed"],
      ["b", "won"],
    ]);
    expect(seenInflight).toEqual({ a: 1, b: 1 });
    expect(router.inflight("a")).toBe(0);
    expect(router.inflight("b")).toBe(1);
    routed.release();
    routed.release();
    expect(router.inflight("b")).toBe(0);
    // a is quarantined: the next request goes to b although a reports less load.
    expect(await router.pick({ variant: "qwen-vl-chat" })).toMatchObject({ node: { id: "b" } });
  });

  it("dispatch with nothing to serve rejects with a 503 no_capacity ApiError", async () => {
    const router = new PoolRouter({ registered: async () => [node("d", { draining: true })] });
    const error = await router.dispatch({ variant: "qwen-vl-chat", attempt: async () => "never" }).catch((e) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ code: "no_capacity", status: 503, retryAfter: 5 });
  });
});
