/**
 * Output pacing (`streamIntervalMs`, `gpu-node serve --stream-interval-ms`): a prompt's first token goes
 * out alone and at once, later tokens go out together at most once per interval, done and error events
 * are never held back, the text and the counts are those of an unpaced stream, and 0 writes each token
 * as it comes. Chunks are counted twice: by the node (`qvl_node_stream_writes_total`, one per write)
 * and by the client (events grouped by the read that completed them). Bounds are generous: the assertions
 * are about grouping, not milliseconds, so a loaded machine does not fail them.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { NodeEvent } from "../../src/protocol/index";
import { startNode } from "../src/agent/node";
import { parseServeArgs } from "../src/commands/serve";
import { sample, startTestNode, type TestNode } from "./support/agent";
import { buildFrame, textFrame } from "./support/frames";
import { postFrame, SECRET, waitFor } from "./support/node-client";
import { type Step, scriptedEngine } from "./support/scripted-engine";

let nodes: TestNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.drain("test over")));
  nodes = [];
});

async function node(tokensPerS: number, streamIntervalMs: number): Promise<TestNode> {
  const n = await startTestNode({ tokensPerS, prefillMs: 0, visionMs: 0 }, { streamIntervalMs });
  nodes.push(n);
  return n;
}

interface Read {
  /** Milliseconds since the request was sent. */
  at: number;
  events: NodeEvent[];
}

/** The response read chunk by chunk: each complete SSE event is attributed to the read that completed it. */
async function readChunks(res: Response, t0: number): Promise<Read[]> {
  expect(res.status).toBe(200);
  const reads: Read[] = [];
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    const events: NodeEvent[] = [];
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const message = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const type = /^event: (\w+)$/m.exec(message)?.[1];
      const data = /^data: (.*)$/m.exec(message)?.[1];
      if (type && data) events.push({ type, ...JSON.parse(data) } as NodeEvent);
    }
    if (events.length > 0) reads.push({ at: performance.now() - t0, events });
  }
  expect(buffer).toBe("");
  return reads;
}

const tokensOf = (events: NodeEvent[]) => events.reduce((n, e) => n + (e.type === "token" ? e.tokens : 0), 0);
const textOf = (events: NodeEvent[], prompt = 0) => events.map((e) => (e.type === "token" && e.prompt === prompt ? e.text : "")).join("");

/** One request; the reads, every event, and the node's writes for it. */
async function run(n: TestNode, frame: Uint8Array) {
  const writes0 = sample(await n.metricsText(), "qvl_node_stream_writes_total");
  const t0 = performance.now();
  const reads = await readChunks(await postFrame(n.url, frame), t0);
  const writes = sample(await n.metricsText(), "qvl_node_stream_writes_total") - writes0;
  const events = reads.flatMap((r) => r.events);
  return { reads, events, writes, tokens: tokensOf(events), total: performance.now() - t0 };
}

// A text prompt the simulated engine answers in about 50 tokens.
const PROMPT = "Describe a quiet harbour at dawn in a few sentences.";

describe("output pacing", () => {
  it("sends the first token alone, groups the later ones, and keeps the text and counts of an unpaced stream", async () => {
    // Tokens 10 ms apart; at most one write per 50 ms after the first.
    const paced = await node(100, 50);
    const { frame } = await textFrame(PROMPT, { sampling: { max_tokens: 256, logprobs: 1 } });
    const a = await run(paced, frame);

    const done = a.events.at(-1);
    expect(done).toMatchObject({ type: "done", prompt: 0, finish_reason: "stop" });
    expect(a.events.filter((e) => e.type === "done")).toHaveLength(1);
    expect(a.tokens).toBeGreaterThanOrEqual(30);
    expect(done?.type === "done" && done.usage.completion_tokens).toBe(a.tokens);
    // Merged token events carry one logprob per token they merged.
    expect(a.events.flatMap((e) => (e.type === "token" ? (e.logprobs ?? []) : []))).toHaveLength(a.tokens);

    // The first chunk: the first token, not held for the interval (held, it would carry ≈ 5 tokens).
    expect(a.reads[0].events.every((e) => e.type === "token")).toBe(true);
    expect(tokensOf(a.reads[0].events)).toBeLessThanOrEqual(2);
    // Later tokens grouped: ≈ 500 ms of decoding in 50 ms windows is ≈ 11 writes for ≈ 50 tokens.
    expect(a.writes).toBeLessThanOrEqual(a.tokens / 2);
    expect(a.reads.length).toBeLessThanOrEqual(a.writes);
    // One token event per write (adjacent tokens merged), a done event besides.
    expect(a.events.filter((e) => e.type === "token").length).toBeLessThanOrEqual(a.writes);

    // The same request unpaced: the same text, token count and logprobs, in one chunk per token.
    const unpaced = await node(100, 0);
    const b = await run(unpaced, frame);
    expect(textOf(a.events)).toBe(textOf(b.events));
    expect(a.tokens).toBe(b.tokens);
    const logprobs = (events: NodeEvent[]) => events.flatMap((e) => (e.type === "token" ? (e.logprobs ?? []) : []));
    expect(logprobs(a.events)).toEqual(logprobs(b.events));
    // Interval 0: a write per token as it comes (tokens 10 ms apart; a busy event loop may merge a few).
    expect(b.writes).toBeGreaterThan(b.tokens / 2);
    expect(b.writes).toBeGreaterThan(2 * a.writes);
    expect(b.events.filter((e) => e.type === "token").length).toBeGreaterThan(b.tokens / 2);
  });

  it("never holds back the end: done goes out with the held tokens at once", async () => {
    // An interval far longer than the whole answer (≈ 500 ms): everything after the first token is held
    // until done, which must flush it at once rather than wait the interval out.
    const n = await node(100, 5_000);
    const { frame } = await textFrame(PROMPT);
    const r = await run(n, frame);
    expect(r.total).toBeLessThan(2_500);
    expect(r.writes).toBe(2);
    expect(r.reads).toHaveLength(2);
    expect(tokensOf(r.reads[0].events)).toBeLessThanOrEqual(2);
    const last = r.reads[1].events;
    expect(last.at(-1)).toMatchObject({ type: "done" });
    expect(last.filter((e) => e.type === "token")).toHaveLength(1);
    const end = last.at(-1);
    expect(tokensOf(r.events)).toBe(end?.type === "done" ? end.usage.completion_tokens : -1);
  });

  it("sends each prompt's first token at once, and merges each prompt's later tokens into one event per write", async () => {
    const n = await node(100, 5_000);
    const { frame } = await buildFrame([], [[{ type: "user", text: PROMPT }], [{ type: "user", text: "Name three colours of the sea." }]], {
      sampling: { max_tokens: 256, logprobs: 1 },
    });
    const r = await run(n, frame);
    const first = r.reads[0].events;
    expect(first.map((e) => (e.type === "token" ? e.prompt : -1)).sort()).toEqual([0, 1]);
    const dones = r.events.filter((e): e is Extract<NodeEvent, { type: "done" }> => e.type === "done");
    expect(dones.map((d) => d.prompt).sort()).toEqual([0, 1]);
    for (const d of dones) {
      const mine = r.events.filter((e) => e.type === "token" && e.prompt === d.prompt);
      expect(mine.reduce((s, e) => s + (e.type === "token" ? e.tokens : 0), 0)).toBe(d.usage.completion_tokens);
      expect(mine.flatMap((e) => (e.type === "token" ? (e.logprobs ?? []) : []))).toHaveLength(d.usage.completion_tokens);
      // Nothing of a prompt after its done.
      expect(r.events.slice(r.events.indexOf(d) + 1).some((e) => e.type !== "done" && "prompt" in e && e.prompt === d.prompt)).toBe(false);
    }
    // First tokens, then at most one write per done (the held tokens go with it).
    expect(r.writes).toBeLessThanOrEqual(3);
    expect(r.total).toBeLessThan(2_500);
  });

  it("ends a paced stream at its deadline with the error event, not at the interval", async () => {
    const n = await startTestNode({ tokensPerS: 100, fault: "stall", faultAfter: 3 }, { streamIntervalMs: 5_000 });
    nodes.push(n);
    const { frame } = await textFrame(PROMPT, { deadline_ms: 200 });
    const r = await run(n, frame);
    expect(r.total).toBeLessThan(2_500);
    expect(r.events.at(-1)).toMatchObject({ type: "error", code: "deadline_exceeded" });
    expect(r.tokens).toBe(3);
    await waitFor(() => n.engine.stats.aborted === 1, 2_000, "the engine to see the abort");
  });

  it("cancels a paced stream when the client goes away while tokens are held", async () => {
    const n = await node(50, 5_000);
    const client = new AbortController();
    const res = await postFrame(n.url, (await textFrame(PROMPT)).frame, { signal: client.signal });
    const reader = res.body!.getReader();
    await reader.read(); // the first token; the rest is being held for the interval
    await new Promise((r) => setTimeout(r, 100));
    expect(n.engine.stats.running).toBe(1);
    client.abort();
    await waitFor(() => n.engine.stats.aborted === 1, 3_000, "the engine to be aborted");
    await waitFor(() => n.agent.admission.active === 0, 2_000, "the slot to be released");
    expect(sample(await n.metricsText(), "qvl_node_requests_total", 'outcome="cancelled"')).toBe(1);
    // The node still serves, paced as before.
    const again = await run(n, (await textFrame("again")).frame);
    expect(again.events.at(-1)).toMatchObject({ type: "done" });
  });
});

const tok = (prompt: number, text: string): NodeEvent => ({
  type: "token",
  prompt,
  text,
  tokens: 1,
  logprobs: [{ token: text, logprob: -1 }],
});
const done = (prompt: number, completion: number): NodeEvent => ({
  type: "done",
  prompt,
  finish_reason: "stop",
  usage: { prompt_tokens: 5, completion_tokens: completion },
  timings: { queue_ms: 0, vision_ms: 0, prefill_ms: 0, decode_ms: 0 },
  engine: "scripted",
});

// Two prompts: prompt 1 starts after prompt 0 has streamed a while, prompt 0 ends before prompt 1.
const SCRIPT: Step[] = [
  [30, tok(0, "a")],
  [30, tok(0, "b")],
  [30, tok(0, "c")],
  [30, tok(1, "x")],
  [30, tok(0, "d")],
  [30, done(0, 4)],
  [30, tok(1, "y")],
  [30, done(1, 2)],
];

async function scriptedRun(streamIntervalMs: number) {
  const engine = scriptedEngine(SCRIPT);
  const n = await startNode({ engine, nodeSecret: SECRET, port: 0, streamIntervalMs });
  try {
    const { frame } = await buildFrame([], [[{ type: "user", text: "one" }], [{ type: "user", text: "two" }]]);
    const metrics = async () => sample(await (await fetch(`${n.url}/metrics`)).text(), "qvl_node_stream_writes_total");
    const writes0 = await metrics();
    const reads = await readChunks(await postFrame(n.url, frame), performance.now());
    return { events: reads.flatMap((r) => r.events), writes: (await metrics()) - writes0 };
  } finally {
    await n.drain("test over");
  }
}

const brief = (events: NodeEvent[]) =>
  events.map((e) => (e.type === "token" ? `${e.prompt}:${e.text}/${e.tokens}/${e.logprobs?.length}` : `${e.type}:${e.prompt}`));

describe("output pacing with prompts that start and end at different times (scripted engine)", () => {
  it("writes a later prompt's first token at once, and each done at once, with what is held", async () => {
    // Interval far longer than the script: only first tokens and done events cause writes.
    const { events, writes } = await scriptedRun(10_000);
    expect(brief(events)).toEqual([
      "0:a/1/1", // prompt 0's first token, alone
      "0:bc/2/2", // held, then written with prompt 1's first token
      "1:x/1/1",
      "0:d/1/1", // held, then written with prompt 0's done
      "done:0",
      "1:y/1/1", // held, then written with prompt 1's done
      "done:1",
    ]);
    expect(writes).toBe(4);
  });

  it("writes every event as it comes with interval 0", async () => {
    const { events, writes } = await scriptedRun(0);
    expect(brief(events)).toEqual(["0:a/1/1", "0:b/1/1", "0:c/1/1", "1:x/1/1", "0:d/1/1", "done:0", "1:y/1/1", "done:1"]);
    expect(writes).toBe(8);
  });
});

describe("gpu-node serve --stream-interval-ms", () => {
  const base = ["--engine", "simulated", "--node-secret", SECRET];
  it("defaults to 20 ms, reads the flag and QVL_STREAM_INTERVAL_MS (the flag wins), 0 turns pacing off", () => {
    expect(parseServeArgs(base, {}).streamIntervalMs).toBe(20);
    expect(parseServeArgs([...base, "--stream-interval-ms", "0"], {}).streamIntervalMs).toBe(0);
    expect(parseServeArgs(base, { QVL_STREAM_INTERVAL_MS: "35" }).streamIntervalMs).toBe(35);
    expect(parseServeArgs([...base, "--stream-interval-ms", "5"], { QVL_STREAM_INTERVAL_MS: "35" }).streamIntervalMs).toBe(5);
    for (const bad of ["-1", "1.5", "soon", "10001"]) {
      expect(() => parseServeArgs([...base, "--stream-interval-ms", bad], {}), bad).toThrow(/--stream-interval-ms/);
    }
  });
});
