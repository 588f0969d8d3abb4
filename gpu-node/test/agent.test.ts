/**
 * The agent over real loopback HTTP with the simulated engine: streaming with a real preprocessed
 * tensor, auth, malformed frames, health, node info, metrics, engine failures.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeFrame, type NodeEvent } from "../../src/protocol/index";
import { sample, startTestNode, type TestNode } from "./support/agent";
import { buildFrame, f16ChannelMeans, fixtureTensor, MANIFEST, textFrame } from "./support/frames";
import { malformedFrames } from "./support/malformed";
import { postFrame, readEvents, SECRET, textsByPrompt } from "./support/node-client";

let node: TestNode;
beforeAll(async () => {
  node = await startTestNode({ tokensPerS: 3_000, visionMs: 5, prefillMs: 2 });
});
afterAll(() => node?.drain("test over"));

describe("POST /v1/generate", () => {
  it("streams two prompts over one real image, naming its sha256 and channel means", async () => {
    const tensor = await fixtureTensor("dune_1.8mp.jpg", "f16");
    const reference = MANIFEST.items.find((i) => i.file === "dune_1.8mp.jpg")!.reference_f16_sha256;
    const { frame } = await buildFrame(
      [{ dtype: "f16", bytes: tensor }],
      [
        [
          { type: "template", text: "<|im_start|>user\nPicture 1: <img>" },
          { type: "image", index: 0 },
          { type: "template", text: "</img>\n" },
          { type: "user", text: "What is in the picture?" },
          { type: "template", text: "<|im_end|>\n<|im_start|>assistant\n" },
        ],
        [
          { type: "image", index: 0 },
          { type: "user", text: "框出图中沙丘的位置" },
        ],
      ],
      { sampling: { max_tokens: 300, logprobs: 1 } },
    );
    const passesBefore = node.engine.stats.visionPasses;
    const res = await postFrame(node.url, frame);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(res.headers.get("x-engine")).toBe("simulated");
    const { events, chunks } = await readEvents(res);

    const [a, b] = textsByPrompt(events);
    const means = f16ChannelMeans(tensor);
    for (const text of [a, b]) {
      expect(text).toContain("[simulated]");
      expect(text).toContain(`sha256=${reference}`);
      const got = /channel_means=\[([^\]]+)\]/.exec(text)![1].split(",").map(Number);
      for (let c = 0; c < 3; c++) expect(Math.abs(got[c] - means[c])).toBeLessThan(1e-4);
    }
    expect(b).toMatch(/<ref>沙丘<\/ref><box>\(\d{1,3},\d{1,3}\),\(\d{1,3},\d{1,3}\)<\/box>/);

    const dones = events.filter((e): e is Extract<NodeEvent, { type: "done" }> => e.type === "done");
    expect(dones.map((d) => d.prompt).sort()).toEqual([0, 1]);
    for (const d of dones) {
      expect(d).toMatchObject({ engine: "simulated", finish_reason: "stop" });
      const tokens = events
        .filter((e) => e.type === "token" && e.prompt === d.prompt)
        .reduce((n, e) => n + (e.type === "token" ? e.tokens : 0), 0);
      expect(d.usage.completion_tokens).toBe(tokens);
      const logprobs = events.flatMap((e) => (e.type === "token" && e.prompt === d.prompt ? (e.logprobs ?? []) : []));
      expect(logprobs).toHaveLength(tokens);
    }
    // One vision pass for both prompts, reported once.
    expect(node.engine.stats.visionPasses - passesBefore).toBe(1);
    expect(dones.filter((d) => d.timings.vision_ms > 0)).toHaveLength(1);
    // Tokens that were ready together went out together.
    const tokenCount = dones.reduce((n, d) => n + d.usage.completion_tokens, 0);
    expect(chunks).toBeLessThan(tokenCount / 2);
    expect(events.filter((e) => e.type === "token").length).toBeLessThan(tokenCount);
  });

  it("refuses requests without the node secret or with a wrong one (401)", async () => {
    const { frame } = await textFrame();
    for (const secret of [null, "wrong-secret", `${SECRET}x`, ""]) {
      const res = await postFrame(node.url, frame, { secret });
      expect(res.status, String(secret)).toBe(401);
      expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
      expect(await res.json()).toEqual({
        error: { type: "unauthorized", code: "unauthorized", message: expect.any(String), retryable: false },
      });
    }
    const drain = await fetch(`${node.url}/v1/drain`, { method: "POST", headers: { authorization: "Bearer nope" } });
    expect(drain.status).toBe(401);
    expect(node.agent.admission.draining).toBe(false);
  });

  it("refuses every malformed frame with 400 and its code, and keeps serving", async () => {
    for (const c of await malformedFrames()) {
      const res = await postFrame(node.url, c.frame);
      expect(res.status, c.why).toBe(400);
      const body = (await res.json()) as { error: { type: string; code: string; retryable: boolean } };
      expect(body.error, c.why).toMatchObject({ type: "invalid_frame", code: c.code, retryable: false });
    }
    const { frame } = await textFrame("still there?");
    expect((await readEvents(await postFrame(node.url, frame))).events.at(-1)).toMatchObject({ type: "done" });
    const metrics = await node.metricsText();
    expect(sample(metrics, "qvl_node_errors_total", 'code="image_checksum_mismatch"')).toBe(1);
    expect(sample(metrics, "qvl_node_requests_total", 'outcome="invalid_frame"')).toBeGreaterThanOrEqual(13);
  });

  it("refuses a frame over the size cap (declared or streamed) and a variant it does not serve", async () => {
    const small = await startTestNode({}, { limits: { maxFrameBytes: 2_000 } });
    try {
      const { frame } = await textFrame("x".repeat(3_000));
      const res = await postFrame(small.url, frame);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("frame_too_large");
      // Without a Content-Length: the cap applies while reading.
      const streamed = await fetch(`${small.url}/v1/generate`, {
        method: "POST",
        headers: { authorization: `Bearer ${SECRET}` },
        body: new ReadableStream({
          start(c) {
            for (let i = 0; i < 4; i++) c.enqueue(frame.subarray(i * 1_000, (i + 1) * 1_000));
            c.close();
          },
        }),
        duplex: "half",
      } as RequestInit);
      expect(streamed.status).toBe(400);
      expect(((await streamed.json()) as { error: { code: string } }).error.code).toBe("frame_too_large");
    } finally {
      await small.drain();
    }
    const { frame } = await textFrame("hi", { variant: "qwen-vl" });
    const res = await postFrame(node.url, frame);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { type: "invalid_frame", code: "unsupported_variant", retryable: true } });
  });

  it("answers wrong methods and unknown routes with the JSON envelope", async () => {
    const get = await fetch(`${node.url}/v1/generate`);
    expect(get.status).toBe(405);
    const missing = await fetch(`${node.url}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { type: "not_found" } });
  });
});

describe("health, node info, metrics", () => {
  it("GET /v1/node describes the node", async () => {
    const info = await (await fetch(`${node.url}/v1/node`)).json();
    expect(info).toEqual({
      id: null,
      variant: "qwen-vl-chat",
      engine: "simulated",
      version: "sim-1",
      capacity: 4,
      max_queue: 8,
      load: { active: 0, queued: 0 },
      draining: false,
      healthy: true,
    });
  });

  it("GET /healthz is 200 while the engine is healthy, 503 when not; generate then fails fast", async () => {
    expect(await (await fetch(`${node.url}/healthz`)).json()).toEqual({ status: "ok", engine: "simulated" });
    node.engine.setHealth({ ok: false, detail: "worker restarting" });
    try {
      const res = await fetch(`${node.url}/healthz`);
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ status: "unhealthy", detail: "worker restarting" });
      const gen = await postFrame(node.url, (await textFrame()).frame);
      expect(gen.status).toBe(503);
      expect(gen.headers.get("retry-after")).toBe("5");
      expect(await gen.json()).toMatchObject({ error: { type: "engine_unavailable", retryable: true } });
    } finally {
      node.engine.setHealth({ ok: true });
    }
  });

  it("GET /metrics exposes requests by outcome, errors by code, queue, active, TTFT and tokens", async () => {
    const { frame } = await textFrame("count me");
    await readEvents(await postFrame(node.url, frame));
    const text = await node.metricsText();
    for (const name of [
      "qvl_node_requests_total",
      "qvl_node_errors_total",
      "qvl_node_queue_depth",
      "qvl_node_active_requests",
      "qvl_node_capacity",
      "qvl_node_draining",
      "qvl_node_engine_healthy",
      "qvl_node_queue_wait_seconds_bucket",
      "qvl_node_time_to_first_token_seconds_bucket",
      "qvl_node_request_duration_seconds_count",
      "qvl_node_generated_tokens_total",
      "qvl_node_decode_tokens_per_second_bucket",
    ]) {
      expect(text, name).toContain(name);
    }
    expect(sample(text, "qvl_node_requests_total", 'outcome="ok"')).toBeGreaterThanOrEqual(1);
    expect(sample(text, "qvl_node_generated_tokens_total")).toBeGreaterThan(10);
    expect(sample(text, "qvl_node_time_to_first_token_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "qvl_node_capacity")).toBe(4);
    // One structured log line per request.
    expect(node.logs.filter((l) => l.msg === "generate" && l.outcome === "ok").length).toBeGreaterThanOrEqual(1);
  });
});

describe("engine failures", () => {
  it("turns faults into error events, and an engine that throws into engine_failed", async () => {
    const failing = await startTestNode({ fault: "fail_mid_stream", faultAfter: 3 });
    try {
      const { events } = await readEvents(await postFrame(failing.url, (await textFrame()).frame));
      expect(events.at(-1)).toMatchObject({ type: "error", code: "engine_failed", retryable: true });
      // An engine whose iterator throws: the agent reports it and keeps running.
      failing.engine.generate = async function* () {
        yield { type: "token", prompt: 0, text: "a", tokens: 1 };
        throw new Error("boom");
      };
      const thrown = await readEvents(await postFrame(failing.url, (await textFrame()).frame));
      expect(thrown.events).toEqual([
        { type: "token", prompt: 0, text: "a", tokens: 1 },
        { type: "error", code: "engine_failed", message: "The engine failed.", retryable: true },
      ]);
      // An engine that ends without a done event.
      failing.engine.generate = async function* () {};
      const empty = await readEvents(await postFrame(failing.url, (await textFrame()).frame));
      expect(empty.events).toEqual([expect.objectContaining({ type: "error", code: "engine_failed" })]);
      expect(failing.agent.admission.active).toBe(0);
      const metrics = await failing.metricsText();
      expect(sample(metrics, "qvl_node_errors_total", 'code="engine_failed"')).toBe(3);
    } finally {
      await failing.drain();
    }
  });

  it("rejects a frame whose header lies about the tensor layout", async () => {
    const { header } = await textFrame();
    const res = await postFrame(node.url, encodeFrame({ ...header, images: [] }, [new Uint8Array(5)]));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("trailing_bytes");
  });
});
