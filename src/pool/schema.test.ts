/** The heartbeat and static-node schemas, and the pool's configuration vars. */
import { describe, expect, it } from "vitest";
import { loadConfig } from "../config";
import { Heartbeat, type HeartbeatInput, parseNodeMessage } from "./schema";

const valid: HeartbeatInput = {
  id: "gpu-1",
  url: "http://10.0.0.5:9000",
  variant: "qwen-vl-chat",
  engine: "simulated",
  version: "0.1.0",
  capacity: 8,
  load: { active: 2, queued: 1 },
  draining: false,
  region: "eu",
};

describe("Heartbeat", () => {
  it("accepts the node's heartbeat, normalizes URL and region, ignores unknown keys", () => {
    const hb = Heartbeat.parse({ ...valid, url: "http://10.0.0.5:9000/", gpu: "H100" });
    expect(hb).toEqual({ ...valid, url: "http://10.0.0.5:9000", region: "EU", healthy: true, deregister: false });
  });

  it("takes gpu-node's own heartbeat: region null, healthy flag", () => {
    expect(Heartbeat.parse({ ...valid, region: null }).region).toBeUndefined();
    expect(Heartbeat.parse({ ...valid, healthy: false }).healthy).toBe(false);
  });

  it("defaults draining and deregister to false; region is optional", () => {
    const { draining: _d, region: _r, ...rest } = valid;
    expect(Heartbeat.parse(rest)).toMatchObject({ draining: false, deregister: false });
    expect(Heartbeat.parse(rest).region).toBeUndefined();
  });

  it.each([
    ["an empty id", { id: "" }, "id"],
    ["an id with a slash", { id: "a/b" }, "id"],
    ["a 129-character id", { id: "a".repeat(129) }, "id"],
    ["a relative URL", { url: "/v1" }, "url"],
    ["a non-http URL", { url: "ftp://10.0.0.5" }, "url"],
    ["a URL with credentials", { url: "http://u:p@10.0.0.5:9000" }, "url"],
    ["a URL with a path", { url: "http://10.0.0.5:9000/node" }, "url"],
    ["a URL with a query", { url: "http://10.0.0.5:9000/?x=1" }, "url"],
    ["an unknown variant", { variant: "qwen2-vl" }, "variant"],
    ["zero capacity", { capacity: 0 }, "capacity"],
    ["a fractional capacity", { capacity: 1.5 }, "capacity"],
    ["negative load", { load: { active: -1, queued: 0 } }, "load.active"],
    ["missing load", { load: undefined }, "load"],
    ["a string draining", { draining: "yes" }, "draining"],
    ["a region with spaces", { region: "eu west" }, "region"],
    ["a huge engine name", { engine: "x".repeat(65) }, "engine"],
  ])("refuses %s", (_name, change, path) => {
    const result = Heartbeat.safeParse({ ...valid, ...change });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0].path.join(".")).toBe(path);
  });
});

describe("parseNodeMessage", () => {
  it("takes a bare {id, deregister: true} as a deregistration, and a full heartbeat with deregister too", () => {
    expect(parseNodeMessage({ id: "gpu-1", deregister: true })).toEqual({ ok: true, value: { id: "gpu-1", deregister: true } });
    expect(parseNodeMessage({ ...valid, draining: true, deregister: true })).toEqual({
      ok: true,
      value: { id: "gpu-1", deregister: true },
    });
  });
  it("otherwise wants a full heartbeat, and names the first bad field", () => {
    expect(parseNodeMessage({ id: "gpu-1", deregister: false })).toMatchObject({ ok: false, param: "url" });
    expect(parseNodeMessage({ id: "../x", deregister: true })).toMatchObject({ ok: false, param: "id" });
    expect(parseNodeMessage(valid)).toMatchObject({ ok: true, value: { id: "gpu-1", deregister: false } });
    expect(parseNodeMessage("nope")).toMatchObject({ ok: false });
  });
});

describe("pool configuration", () => {
  it("defaults: TTL 10 s, heartbeat every 2 s, no static nodes", () => {
    expect(loadConfig({}).pool).toEqual({ nodeTtlMs: 10_000, heartbeatMs: 2_000, staticNodes: [] });
  });

  it("reads POOL_NODE_TTL_MS and POOL_STATIC_NODES as JSON text or as an array", () => {
    const node = { id: "solo", url: "http://127.0.0.1:9000/", variant: "qwen-vl", capacity: 4, region: "fra" };
    const fromText = loadConfig({ POOL_NODE_TTL_MS: "15000", POOL_STATIC_NODES: JSON.stringify([node]) }).pool;
    expect(fromText.nodeTtlMs).toBe(15_000);
    expect(fromText.heartbeatMs).toBe(3_000);
    expect(fromText.staticNodes).toEqual([{ id: "solo", url: "http://127.0.0.1:9000", variant: "qwen-vl", capacity: 4, region: "FRA" }]);
    expect(loadConfig({ POOL_STATIC_NODES: [node] }).pool.staticNodes).toHaveLength(1);
  });

  it.each([
    ["POOL_STATIC_NODES is not JSON", { POOL_STATIC_NODES: "[{id:" }],
    ["a static node lacks a URL", { POOL_STATIC_NODES: '[{"id":"a","variant":"qwen-vl","capacity":1}]' }],
    ["POOL_NODE_TTL_MS is below 1 s", { POOL_NODE_TTL_MS: "500" }],
  ])("refuses a deployment where %s", (_name, env) => {
    expect(() => loadConfig(env)).toThrow();
  });
});
