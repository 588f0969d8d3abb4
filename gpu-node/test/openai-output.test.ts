/**
 * The node's OpenAI output (the frame's `output: {format: "openai-chat"}`): the bytes the node writes
 * are the bytes the edge's JavaScript relay writes for the same events. Each case runs a scripted engine
 * twice on a real agent: once with `output` (the node frames), once without (protocol events, fed through
 * the edge's own relay: `openEventStream` → `relayChatCompletion`, as src/serving/chat.ts does), and the
 * two byte streams are compared. Steps are timers 30 ms apart with pacing off, so both sides see the
 * same events in the same writes.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { GenerateHeaderInput, NodeEvent, OpenAIChatOutputInput } from "../../src/protocol/index";
import { OpenAIChatOutput, OUTPUT_HEADER, openEventStream } from "../../src/protocol/index";
import { type ChatCompletionOptions, chatOptionsFromOutput, KEEP_ALIVE_COMMENT, relayChatCompletion } from "../../src/stream/index";
import { type RunningNode, startNode } from "../src/agent/node";
import { textFrame } from "./support/frames";
import { postFrame, SECRET } from "./support/node-client";
import { type Step, scriptedEngine } from "./support/scripted-engine";

const tok = (text: string, logprob = -0.5): NodeEvent => ({
  type: "token",
  prompt: 0,
  text,
  tokens: 1,
  logprobs: [{ token: text, logprob, top: [{ token: text, logprob }] }],
});
const done = (completion: number, finish: "stop" | "length" | "deadline" = "stop"): NodeEvent => ({
  type: "done",
  prompt: 0,
  finish_reason: finish,
  usage: { prompt_tokens: 7, completion_tokens: completion },
  timings: { queue_ms: 0, vision_ms: 0, prefill_ms: 0, decode_ms: 0 },
  engine: "scripted",
});
const failure = (code: "engine_failed" | "overloaded" = "engine_failed"): NodeEvent => ({
  type: "error",
  code,
  message: "CUDA out of memory at 0xdeadbeef",
  retryable: false,
});

const OUTPUT: OpenAIChatOutputInput = {
  format: "openai-chat",
  id: "chatcmpl-0123456789abcdef0123456789abcdef",
  created: 1_700_000_000,
  model: "qwen-vl-chat",
  include_usage: true,
  logprobs: false,
  keep_alive_ms: 0,
};

let nodes: RunningNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.drain("test over")));
  nodes = [];
});

async function nodeFor(script: Step[]): Promise<RunningNode> {
  const n = await startNode({ engine: scriptedEngine(script), nodeSecret: SECRET, port: 0, streamIntervalMs: 0, log: () => {} });
  nodes.push(n);
  return n;
}

const sampling: GenerateHeaderInput["sampling"] = { max_tokens: 64, logprobs: 1 };

/** The node's own OpenAI bytes, and its response headers. */
async function nodeOutput(script: Step[], output: OpenAIChatOutputInput): Promise<{ text: string; headers: Headers }> {
  const n = await nodeFor(script);
  const { frame } = await textFrame("one", { sampling, output });
  const res = await postFrame(n.url, frame);
  expect(res.status).toBe(200);
  return { text: await res.text(), headers: res.headers };
}

/** What the edge's JavaScript relay writes for the same script (the node sending protocol events). */
async function edgeRelay(script: Step[], options: ChatCompletionOptions): Promise<string> {
  const n = await nodeFor(script);
  const { frame } = await textFrame("one", { sampling });
  const res = await postFrame(n.url, frame);
  expect(res.headers.get(OUTPUT_HEADER)).toBeNull();
  const { events } = openEventStream(res.body!);
  return new Response(relayChatCompletion(events, options, { keepAliveMs: 0 })).text();
}

async function compare(script: Step[], output: OpenAIChatOutputInput = OUTPUT): Promise<string> {
  const [node, edge] = await Promise.all([
    nodeOutput(script, output),
    edgeRelay(script, chatOptionsFromOutput(OpenAIChatOutput.parse(output), 1)),
  ]);
  expect(node.headers.get(OUTPUT_HEADER)).toBe("openai-chat");
  expect(node.headers.get("content-type")).toMatch(/^text\/event-stream/);
  expect(node.text).toBe(edge);
  return node.text;
}

const dataOf = (text: string) =>
  text
    .split("\n\n")
    .filter((m) => m.startsWith("data: "))
    .map((m) => m.slice(6));

describe("the node's openai-chat output is the edge relay's bytes", () => {
  it("an answer with the usage chunk: role chunk, deltas, finish, usage, [DONE]", async () => {
    const text = await compare([
      [30, tok("Hello")],
      [30, tok(", world")],
      [30, tok(" — ünïcode ✓")],
      [30, done(3)],
    ]);
    const data = dataOf(text);
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" });
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("")).toBe("Hello, world — ünïcode ✓");
    expect(chunks.at(-2).choices[0].finish_reason).toBe("stop");
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 } });
    expect(chunks.every((c) => c.id === OUTPUT.id && c.created === OUTPUT.created && c.object === "chat.completion.chunk")).toBe(true);
  });

  it("without the usage chunk, with logprobs, and a length finish", async () => {
    const text = await compare(
      [
        [30, tok("a", -0.25)],
        [30, tok("b", -1.5)],
        [30, done(2, "deadline")],
      ],
      {
        ...OUTPUT,
        include_usage: false,
        logprobs: true,
      },
    );
    expect(text).not.toContain('"usage"');
    expect(text).toContain('"finish_reason":"length"');
    expect(text).toContain('"logprobs":{"content":[{"token":"b","logprob":-1.5');
  });

  it("an engine error after output: the error frame, then [DONE]", async () => {
    const text = await compare([
      [30, tok("x")],
      [30, tok("y")],
      [30, failure()],
    ]);
    const data = dataOf(text);
    expect(data.at(-1)).toBe("[DONE]");
    expect(JSON.parse(data.at(-2)!)).toEqual({
      error: { message: "The model server failed while generating the answer.", type: "server_error", param: null, code: "internal_error" },
    });
    expect(text).not.toContain("CUDA"); // the node's message stays in its logs
  });

  it("an engine that ends early: the same error frame, then [DONE]", async () => {
    const text = await compare([[30, tok("x")]]);
    // The agent turns an early end into engine_failed; both sides frame it the same way.
    expect(dataOf(text).at(-1)).toBe("[DONE]");
    expect(text).toContain('"code":"internal_error"');
  });

  it("an error before any output stays a protocol error event (so the edge can retry elsewhere)", async () => {
    const { text, headers } = await nodeOutput([[30, failure("overloaded")]], OUTPUT);
    expect(headers.get(OUTPUT_HEADER)).toBe("openai-chat");
    expect(text).toBe(
      `event: error\ndata: ${JSON.stringify({ code: "overloaded", message: "CUDA out of memory at 0xdeadbeef", retryable: false })}\n\n`,
    );
  });

  it("writes keep-alive comments while waiting for the first token; the rest is the relay's bytes", async () => {
    const script: Step[] = [
      [200, tok("late")],
      [30, done(1)],
    ];
    const { text } = await nodeOutput(script, { ...OUTPUT, keep_alive_ms: 40 });
    expect(text.startsWith(KEEP_ALIVE_COMMENT)).toBe(true);
    const keepAlives = text.split(KEEP_ALIVE_COMMENT).length - 1;
    expect(keepAlives).toBeGreaterThanOrEqual(2);
    const edge = await edgeRelay(script, chatOptionsFromOutput(OpenAIChatOutput.parse(OUTPUT), 1));
    expect(text.replaceAll(KEEP_ALIVE_COMMENT, "")).toBe(edge);
    // keep_alive_ms 0: none.
    expect((await nodeOutput(script, OUTPUT)).text).toBe(edge);
  });
});
