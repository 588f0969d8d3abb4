/**
 * The node's lifecycle in-process: heartbeats to a fake edge (retried with backoff when refused, never
 * fatal), the drain sequence (POST /v1/drain, running work finishes, final heartbeat draining=true), and
 * a drain that times out ending running streams with a retryable error.
 */

import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { Heartbeat } from "../src/agent/heartbeat";
import { startNode } from "../src/agent/node";
import { SimulatedEngine } from "../src/engines/simulated";
import { gate, startTestNode } from "./support/agent";
import { type FakeEdge, startFakeEdge } from "./support/fake-edge";
import { textFrame } from "./support/frames";
import { postFrame, readEvents, SECRET, waitFor } from "./support/node-client";

let edge: FakeEdge | undefined;
afterEach(async () => {
  await edge?.close();
  edge = undefined;
});

describe("heartbeat", () => {
  it("registers, keeps beating, retries a refusing edge with backoff, and deregisters on drain", async () => {
    edge = await startFakeEdge({ refuseFirst: 2 });
    const node = await startTestNode({ capacity: 3 }, { heartbeat: { edge: edge.url, nodeId: "node-a", region: "eu", intervalMs: 100 } });
    await waitFor(() => edge!.heartbeats.length >= 3, 5_000, "three heartbeats");
    expect(edge.refused).toBe(2);
    expect(node.logs.filter((l) => l.msg === "heartbeat failed")).toHaveLength(2);
    expect(node.logs.some((l) => l.msg === "heartbeat ok again")).toBe(true);
    const first = edge.heartbeats[0];
    expect(first.authorization).toBe(`Bearer ${SECRET}`);
    expect(first.body).toEqual({
      id: "node-a",
      url: node.url,
      variant: "qwen-vl-chat",
      engine: "simulated",
      version: "sim-1",
      capacity: 3,
      load: { active: 0, queued: 0 },
      draining: false,
      region: "eu",
      healthy: true,
    });

    // Drain through the HTTP endpoint while one request runs: it finishes, then the last beat says goodbye.
    const held = gate(node.engine);
    const running = postFrame(node.url, (await textFrame()).frame);
    await waitFor(() => node.agent.admission.active === 1, 2_000, "a running request");
    const res = await fetch(`${node.url}/v1/drain`, { method: "POST", headers: { authorization: `Bearer ${SECRET}` } });
    expect(res.status).toBe(202);
    await waitFor(() => edge!.heartbeats.some((h) => h.body.draining), 2_000, "a draining heartbeat");
    expect(edge.heartbeats.find((h) => h.body.draining)!.body.load.active).toBe(1);
    held.open();
    expect((await readEvents(await running)).events.at(-1)).toMatchObject({ type: "done" });
    await node.closed;
    const last = edge.heartbeats.at(-1)!.body;
    expect(last).toMatchObject({ id: "node-a", draining: true, final: true, deregister: true, load: { active: 0, queued: 0 } });
    const count = edge.heartbeats.length;
    await new Promise((r) => setTimeout(r, 250));
    expect(edge.heartbeats.length).toBe(count); // the loop stopped
    await expect(fetch(`${node.url}/healthz`)).rejects.toThrow();
  });

  it("backs off exponentially up to the interval while the edge is down, and never throws", async () => {
    const attempts: number[] = [];
    const hb = new Heartbeat({
      edge: "http://127.0.0.1:9",
      secret: "s",
      intervalMs: 400,
      retryInitialMs: 25,
      fetch: async () => {
        attempts.push(performance.now());
        throw new Error("connect ECONNREFUSED");
      },
      body: () => ({
        id: "n",
        url: "http://x",
        variant: "qwen-vl",
        engine: "simulated",
        version: "1",
        capacity: 1,
        load: { active: 0, queued: 0 },
        draining: false,
        region: null,
        healthy: true,
      }),
    });
    hb.start();
    await waitFor(() => attempts.length >= 6, 5_000, "six attempts");
    await hb.stop({ final: true });
    const gaps = attempts.slice(1, 6).map((t, i) => t - attempts[i]);
    // 25, 50, 100, 200, then capped at the 400 ms interval (timers fire late, never early).
    for (const [i, ms] of [25, 50, 100, 200, 400].entries()) expect(gaps[i]).toBeGreaterThanOrEqual(ms - 2);
    expect(gaps[4]).toBeLessThan(1_000);
    expect(hb.stats.failed).toBe(attempts.length);
    expect(hb.stats.sent).toBe(0);
  });
});

describe("startup", () => {
  it("answers 503 starting while the engine loads, then serves", async () => {
    const port = await freePort();
    const engine = new SimulatedEngine({ startMs: 400, prefillMs: 0, visionMs: 0, tokensPerS: 0 });
    const starting = startNode({ engine, nodeSecret: SECRET, port });
    const url = `http://127.0.0.1:${port}`;
    let health: Response | undefined;
    for (let i = 0; i < 200 && !health; i++) health = await fetch(`${url}/healthz`).catch(() => undefined);
    expect(health?.status).toBe(503);
    expect(await health?.json()).toEqual({ status: "starting", engine: "simulated" });
    const early = await postFrame(url, (await textFrame()).frame);
    expect(early.status).toBe(503);
    expect(early.headers.get("retry-after")).toBe("5");
    expect(await early.json()).toMatchObject({ error: { type: "engine_unavailable", retryable: true } });
    const node = await starting;
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await readEvents(await postFrame(url, (await textFrame()).frame))).events.at(-1)).toMatchObject({ type: "done" });
    await node.drain();
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

describe("drain", () => {
  it("ends running streams with a retryable draining error when the drain timeout passes", async () => {
    const node = await startTestNode({ fault: "stall", faultAfter: 1 }, { drainTimeoutMs: 200 });
    const res = await postFrame(node.url, (await textFrame()).frame);
    await waitFor(() => node.engine.stats.running === 1, 2_000, "a running request");
    const t0 = performance.now();
    const drained = node.drain("test");
    const { events } = await readEvents(res);
    expect(events.at(-1)).toMatchObject({ type: "error", code: "draining", retryable: true });
    await drained;
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(node.engine.stats.aborted).toBe(1);
    expect(node.logs.some((l) => l.msg === "drain timeout: aborting running requests" && l.aborted === 1)).toBe(true);
  });
});
