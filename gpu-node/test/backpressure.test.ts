/**
 * Admission over real HTTP: a burst gets 429 (queue full) and 503 (draining) with Retry-After, a deadline
 * expires in the queue (504) and while streaming (error event), a client that disconnects cancels the
 * engine's work, whether it is running or queued.
 */
import { afterEach, describe, expect, it } from "vitest";
import { gate, sample, startTestNode, type TestNode } from "./support/agent";
import { textFrame } from "./support/frames";
import { postFrame, readEvents, waitFor } from "./support/node-client";

let node: TestNode | undefined;
afterEach(async () => {
  await node?.drain("test over");
  node = undefined;
});

describe("back-pressure", () => {
  it("admits capacity + queue of a burst, refuses the rest with 429 + Retry-After, then 503 while draining", async () => {
    // Capacity 2 + queue 2 of a burst of 10; the engine is held until the refusals are in.
    node = await startTestNode({ capacity: 2 }, { maxQueue: 2 });
    const held = gate(node.engine);
    const { frame } = await textFrame();
    type Answer = { status: number; retryAfter: string | null; body?: unknown; last?: unknown };
    const answers: Answer[] = [];
    const burst = Array.from({ length: 10 }, async (): Promise<Answer> => {
      const res = await postFrame(node!.url, frame);
      if (res.status === 200) return { status: 200, last: (await readEvents(res)).events.at(-1), retryAfter: null };
      const answer = { status: res.status, retryAfter: res.headers.get("retry-after"), body: await res.json() };
      answers.push(answer);
      return answer;
    });
    await waitFor(() => answers.length === 6, 5_000, "six refusals");
    expect(node.agent.admission).toMatchObject({ active: 2, queued: 2 });
    held.open();
    const all = await Promise.all(burst);
    const ok = all.filter((r) => r.status === 200);
    const refused = all.filter((r) => r.status === 429);
    expect(ok).toHaveLength(4);
    for (const r of ok) expect(r.last).toMatchObject({ type: "done" });
    expect(refused).toHaveLength(6);
    for (const r of refused) {
      expect(r.retryAfter).toBe("1");
      expect(r).toMatchObject({ body: { error: { type: "overloaded", retryable: true } } });
    }
    let metrics = await node.metricsText();
    expect(sample(metrics, "qvl_node_requests_total", 'outcome="overloaded"')).toBe(6);
    expect(sample(metrics, "qvl_node_queue_wait_seconds_count")).toBe(4);

    // Draining: one request running, then drain; a new burst gets 503 + Retry-After.
    node.engine.options.prefillMs = 300;
    const running = postFrame(node.url, frame);
    await waitFor(() => node!.agent.admission.active === 1, 2_000, "a running request");
    node.agent.drain();
    const late = await Promise.all(Array.from({ length: 5 }, () => postFrame(node!.url, frame)));
    for (const res of late) {
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("5");
      expect(await res.json()).toMatchObject({ error: { type: "draining", retryable: true } });
    }
    expect((await readEvents(await running)).events.at(-1)).toMatchObject({ type: "done" });
    expect(await (await fetch(`${node.url}/healthz`)).json()).toMatchObject({ status: "draining" });
    expect(await (await fetch(`${node.url}/v1/node`)).json()).toMatchObject({ draining: true });
    metrics = await node.metricsText();
    expect(sample(metrics, "qvl_node_requests_total", 'outcome="draining"')).toBe(5);
    expect(sample(metrics, "qvl_node_draining")).toBe(1);
  });

  it("refuses queued requests with 503 when the drain starts", async () => {
    node = await startTestNode({ capacity: 1 }, { maxQueue: 4 });
    const held = gate(node.engine);
    const { frame } = await textFrame();
    const running = postFrame(node.url, frame);
    await waitFor(() => node!.agent.admission.active === 1, 2_000, "a running request");
    const queued = postFrame(node.url, frame);
    await waitFor(() => node!.agent.admission.queued === 1, 2_000, "a queued request");
    node.agent.drain();
    expect((await queued).status).toBe(503);
    held.open();
    expect((await readEvents(await running)).events.at(-1)).toMatchObject({ type: "done" });
  });
});

describe("deadlines", () => {
  it("refuses with 504 a request whose deadline passes while it is queued", async () => {
    node = await startTestNode({ capacity: 1 }, { maxQueue: 2 });
    const held = gate(node.engine);
    const { frame } = await textFrame();
    const running = postFrame(node.url, frame);
    await waitFor(() => node!.agent.admission.active === 1, 2_000, "a running request");
    const { frame: hurried } = await textFrame("quick", { deadline_ms: 100 });
    const t0 = performance.now();
    const res = await postFrame(node.url, hurried);
    expect(res.status).toBe(504);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(90);
    expect(await res.json()).toMatchObject({ error: { type: "deadline_exceeded", retryable: false } });
    expect(node.agent.admission.queued).toBe(0);
    held.open();
    expect((await readEvents(await running)).events.at(-1)).toMatchObject({ type: "done" });
    expect(sample(await node.metricsText(), "qvl_node_requests_total", 'outcome="deadline_exceeded"')).toBe(1);
  });

  it("ends a stream with a deadline_exceeded error event and aborts the engine when the deadline passes mid-way", async () => {
    node = await startTestNode({ fault: "stall", faultAfter: 2 });
    const { frame } = await textFrame("stall after two tokens", { deadline_ms: 150 });
    const t0 = performance.now();
    const { events } = await readEvents(await postFrame(node.url, frame));
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect(events[0]).toMatchObject({ type: "token", tokens: 2 });
    expect(events.at(-1)).toMatchObject({ type: "error", code: "deadline_exceeded", retryable: false });
    await waitFor(() => node!.engine.stats.aborted === 1, 2_000, "the engine to see the abort");
    expect(node.agent.admission.active).toBe(0);
  });
});

describe("cancellation", () => {
  it("aborts the engine's generation when the client disconnects mid-stream", async () => {
    node = await startTestNode({ tokensPerS: 20 });
    const before = node.engine.stats.aborted;
    const client = new AbortController();
    const res = await postFrame(node.url, (await textFrame()).frame, { signal: client.signal });
    const reader = res.body!.getReader();
    await reader.read(); // the first token arrived: the engine is decoding
    expect(node.engine.stats.running).toBe(1);
    client.abort();
    await waitFor(() => node!.engine.stats.aborted === before + 1, 3_000, "the engine to be aborted");
    expect(node.engine.stats).toMatchObject({ running: 0, completed: 0 });
    await waitFor(() => node!.agent.admission.active === 0, 2_000, "the slot to be released");
    await waitFor(() => node!.logs.some((l) => l.msg === "generate" && l.outcome === "cancelled"), 2_000, "the log line");
    expect(sample(await node.metricsText(), "qvl_node_requests_total", 'outcome="cancelled"')).toBe(1);
  });

  it("takes a queued request out of the queue when its client disconnects", async () => {
    node = await startTestNode({ capacity: 1 }, { maxQueue: 2 });
    const held = gate(node.engine);
    const { frame } = await textFrame();
    const running = postFrame(node.url, frame);
    await waitFor(() => node!.agent.admission.active === 1, 2_000, "a running request");
    const client = new AbortController();
    const queued = postFrame(node.url, frame, { signal: client.signal }).catch((e: Error) => e);
    await waitFor(() => node!.agent.admission.queued === 1, 2_000, "a queued request");
    client.abort();
    await waitFor(() => node!.agent.admission.queued === 0, 2_000, "the queue to empty");
    expect(await queued).toBeInstanceOf(Error);
    held.open();
    expect((await running).status).toBe(200);
    expect(node.engine.stats.generations).toBe(1);
  });
});
