import { describe, expect, it } from "vitest";
import { ApiError } from "../errors";
import { decodeEventStream, encodeEvents, type NodeEvent } from "../protocol/events";
import { type ChatCompletionOptions, chatCompletionId, collectChatCompletion, relayChatCompletion } from "./openai";
import { drainSource, type RelayOutcome } from "./sse";
import { controlledSource, done, nodeError, parseSse, readChunks, sleep, tok } from "./test-support";

const BASE: ChatCompletionOptions = { id: "chatcmpl-test", created: 1_700_000_000, model: "qwen-vl-chat", choices: 1 };
const head = { id: "chatcmpl-test", object: "chat.completion.chunk", created: 1_700_000_000, model: "qwen-vl-chat" };

const role = (index: number, fp: string | null = null) => ({
  ...head,
  system_fingerprint: fp,
  choices: [{ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
});
const content = (index: number, text: string, fp: string | null = null) => ({
  ...head,
  system_fingerprint: fp,
  choices: [{ index, delta: { content: text }, logprobs: null, finish_reason: null }],
});
const finish = (index: number, reason: string, fp: string | null = "simulated") => ({
  ...head,
  system_fingerprint: fp,
  choices: [{ index, delta: {}, logprobs: null, finish_reason: reason }],
});

/** The data payloads (JSON parsed; `[DONE]` kept as text). */
function payloads(text: string): unknown[] {
  return parseSse(text).messages.map((m) => (m.data === "[DONE]" ? "[DONE]" : JSON.parse(m.data)));
}

async function relayAll(events: NodeEvent[], options: Partial<ChatCompletionOptions> = {}) {
  const src = controlledSource(events);
  src.close();
  const chunks = await readChunks(relayChatCompletion(src.stream, { ...BASE, ...options }, { keepAliveMs: 0 }));
  return { chunks, text: chunks.join(""), src };
}

describe("relayChatCompletion", () => {
  it("one prompt: role chunk, content, finish, usage chunk, [DONE] — exact JSON, one write for what was ready", async () => {
    const { chunks, text } = await relayAll([tok(0, "Hel"), tok(0, "lo"), done(0, 300, 2)], { includeUsage: true });
    expect(chunks).toHaveLength(1);
    expect(payloads(text)).toEqual([
      { ...role(0), usage: null },
      { ...content(0, "Hello"), usage: null },
      { ...finish(0, "stop"), usage: null },
      { ...head, system_fingerprint: "simulated", choices: [], usage: { prompt_tokens: 300, completion_tokens: 2, total_tokens: 302 } },
      "[DONE]",
    ]);
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
  });

  it("events decoded from one network chunk of the node's SSE are relayed as one chunk", async () => {
    const events = [tok(0, "a"), tok(0, "b"), tok(0, "c"), tok(0, "d")];
    let node!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        node = c;
      },
    });
    const reader = relayChatCompletion(decodeEventStream(body), BASE, { keepAliveMs: 0 }).getReader();
    const decoder = new TextDecoder();
    node.enqueue(new TextEncoder().encode(encodeEvents(events)));
    expect(payloads(decoder.decode((await reader.read()).value))).toEqual([role(0), content(0, "abcd")]);
    node.enqueue(new TextEncoder().encode(encodeEvents([tok(0, "e"), done(0)])));
    node.close();
    expect(payloads(decoder.decode((await reader.read()).value))).toEqual([content(0, "e"), finish(0, "stop"), "[DONE]"]);
    expect((await reader.read()).done).toBe(true);
  });

  it("without include_usage there is no usage chunk and no usage field", async () => {
    const { text } = await relayAll([tok(0, "Hi"), done(0, 10, 1, "length")], { systemFingerprint: "qwen-vl-chat/trtllm" });
    expect(payloads(text)).toEqual([
      role(0, "qwen-vl-chat/trtllm"),
      content(0, "Hi", "qwen-vl-chat/trtllm"),
      finish(0, "length", "qwen-vl-chat/trtllm"),
      "[DONE]",
    ]);
  });

  it("tokens that arrive apart are separate chunks, each written as it comes", async () => {
    const src = controlledSource();
    const reader = relayChatCompletion(src.stream, BASE, { keepAliveMs: 0 }).getReader();
    const decoder = new TextDecoder();
    src.push(tok(0, "A"));
    expect(payloads(decoder.decode((await reader.read()).value))).toEqual([role(0), content(0, "A")]);
    src.push(tok(0, "B"));
    expect(payloads(decoder.decode((await reader.read()).value))).toEqual([content(0, "B")]);
    src.push(done(0));
    expect(payloads(decoder.decode((await reader.read()).value))).toEqual([finish(0, "stop"), "[DONE]"]);
    expect((await reader.read()).done).toBe(true);
  });

  it("two prompts interleave by choice index; each starts with its role and ends with its finish", async () => {
    const { text } = await relayAll(
      [tok(1, "B1"), tok(0, "A1"), tok(0, "A2"), tok(1, "B2"), done(1, 300, 2), tok(0, "A3"), done(0, 300, 3, "length")],
      { choices: 2, includeUsage: true },
    );
    const got = payloads(text).map((p) => (typeof p === "string" ? p : { ...(p as object), usage: undefined }));
    const strip = (o: object) => ({ ...o, usage: undefined });
    expect(got).toEqual([
      strip(role(1)),
      strip(content(1, "B1")),
      strip(role(0)),
      strip(content(0, "A1A2")),
      strip(content(1, "B2")),
      strip(finish(1, "stop")),
      strip(content(0, "A3", "simulated")),
      strip(finish(0, "length")),
      { ...head, system_fingerprint: "simulated", choices: [], usage: undefined },
      "[DONE]",
    ]);
    const usage = (payloads(text).at(-2) as { usage: unknown }).usage;
    expect(usage).toEqual({ prompt_tokens: 600, completion_tokens: 5, total_tokens: 605 });
  });

  it("n > 1 counts the shared prompt once", async () => {
    const { text } = await relayAll([done(0, 300, 4), done(1, 300, 6)], { choices: 2, includeUsage: true, promptTokens: "once" });
    const p = payloads(text);
    expect(p.slice(0, 4)).toEqual([
      { ...role(0), usage: null },
      { ...finish(0, "stop"), usage: null },
      { ...role(1, "simulated"), usage: null },
      { ...finish(1, "stop"), usage: null },
    ]);
    expect((p[4] as { usage: unknown }).usage).toEqual({ prompt_tokens: 300, completion_tokens: 10, total_tokens: 310 });
  });

  it("carries logprobs in OpenAI's shape when asked", async () => {
    const lp = [{ token: "é", logprob: -0.5, top: [{ token: "e", logprob: -1.25 }] }];
    const { text } = await relayAll([tok(0, "é", 1, lp), done(0)], { logprobs: true });
    expect(payloads(text)[1]).toEqual({
      ...head,
      system_fingerprint: null,
      choices: [
        {
          index: 0,
          delta: { content: "é" },
          logprobs: {
            content: [{ token: "é", logprob: -0.5, bytes: [195, 169], top_logprobs: [{ token: "e", logprob: -1.25, bytes: [101] }] }],
            refusal: null,
          },
          finish_reason: null,
        },
      ],
    });
    const { text: without } = await relayAll([tok(0, "é", 1, lp), done(0)]);
    expect(payloads(without)[1]).toEqual(content(0, "é"));
  });

  it("ignores events for unknown or finished prompts; `deadline` finishes as length, `cancelled` as stop", async () => {
    const { text } = await relayAll([tok(5, "x"), done(0, 1, 1, "deadline"), tok(0, "late"), done(1, 1, 1, "cancelled")], { choices: 2 });
    expect(payloads(text)).toEqual([role(0), finish(0, "length"), role(1, "simulated"), finish(1, "stop"), "[DONE]"]);
  });

  it("sends : keep-alive comments while nothing arrives, and not after output resumes", async () => {
    const src = controlledSource();
    const body = relayChatCompletion(src.stream, BASE, { keepAliveMs: 15 });
    const reading = readChunks(body);
    await sleep(80);
    src.push(tok(0, "Hi"), done(0));
    const text = (await reading).join("");
    const sse = parseSse(text);
    expect(sse.comments.length).toBeGreaterThanOrEqual(2);
    expect(sse.comments.every((c) => c.trim() === "keep-alive")).toBe(true);
    expect(text.startsWith(": keep-alive\n\n")).toBe(true);
    expect(sse.sequence.slice(sse.comments.length).map((s) => s.slice(0, 1))).toEqual(["|", "|", "|", "|"]);
  });

  it("a node error after the first byte: the error frame, then [DONE]; the node's message is not shown; the node is aborted", async () => {
    const src = controlledSource([tok(0, "Hel")]);
    const abort = new AbortController();
    const outcomes: RelayOutcome[] = [];
    const body = relayChatCompletion(src.stream, { ...BASE, choices: 2 }, { keepAliveMs: 0, abort, onEnd: (o) => outcomes.push(o) });
    const reader = body.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(payloads(first)).toEqual([role(0), content(0, "Hel")]);
    src.push(nodeError("engine_failed", 1));
    const rest = new TextDecoder().decode((await reader.read()).value);
    expect(payloads(rest)).toEqual([
      {
        error: {
          message: "The model server failed while generating the answer.",
          type: "server_error",
          param: null,
          code: "internal_error",
        },
      },
      "[DONE]",
    ]);
    expect(rest).not.toContain("CUDA");
    expect((await reader.read()).done).toBe(true);
    await src.whenCancelled;
    expect(abort.signal.aborted).toBe(true);
    await sleep(0);
    expect(outcomes).toEqual(["error"]);
  });

  it("overloaded/draining nodes map to no_capacity", async () => {
    const { text } = await relayAll([nodeError("draining")]);
    expect(payloads(text)[0]).toMatchObject({ error: { code: "no_capacity", type: "server_error" } });
  });

  it("a broken source after the first byte: error frame, then [DONE]", async () => {
    const src = controlledSource([tok(0, "Hel")]);
    const reader = relayChatCompletion(src.stream, BASE, { keepAliveMs: 0 }).getReader();
    await reader.read();
    src.error(new Error("socket reset"));
    const rest = new TextDecoder().decode((await reader.read()).value);
    expect(payloads(rest)).toEqual([
      {
        error: {
          message: "The connection to the model server was lost mid-answer.",
          type: "server_error",
          param: null,
          code: "internal_error",
        },
      },
      "[DONE]",
    ]);
  });

  it("a source that ends before every choice finished is an error, not a silent truncation", async () => {
    const { text } = await relayAll([tok(0, "Hel"), done(1)], { choices: 2 });
    const p = payloads(text);
    expect(p.at(-2)).toMatchObject({ error: { code: "internal_error" } });
    expect(p.at(-1)).toBe("[DONE]");
  });

  it("a source that closes after the last done is complete", async () => {
    const src = controlledSource([tok(0, "x"), done(0)]);
    src.close();
    const text = (await readChunks(relayChatCompletion(src.stream, BASE, { keepAliveMs: 0 }))).join("");
    expect(payloads(text).at(-1)).toBe("[DONE]");
    expect(text).not.toContain("error");
  });

  it("the client going away mid-stream cancels the source and aborts the node request (seen at the next write)", async () => {
    const src = controlledSource([tok(0, "Hel")]);
    const abort = new AbortController();
    const outcomes: RelayOutcome[] = [];
    const reader = relayChatCompletion(src.stream, BASE, { keepAliveMs: 0, abort, onEnd: (o) => outcomes.push(o) }).getReader();
    await reader.read();
    await reader.cancel(new Error("client disconnected"));
    src.push(tok(0, "lo"));
    await src.whenCancelled;
    expect(abort.signal.aborted).toBe(true);
    await sleep(0);
    expect(outcomes).toEqual(["cancelled"]);
  });

  it("the client going away before the first token is seen at the next keep-alive", async () => {
    const src = controlledSource();
    const abort = new AbortController();
    const reader = relayChatCompletion(src.stream, BASE, { keepAliveMs: 20, abort }).getReader();
    await sleep(5);
    await reader.cancel(new Error("client disconnected"));
    await src.whenCancelled;
    expect(abort.signal.aborted).toBe(true);
  });

  it("an aborted request signal cancels at once, even with nothing to write", async () => {
    const src = controlledSource();
    const abort = new AbortController();
    const client = new AbortController();
    const outcomes: RelayOutcome[] = [];
    const body = relayChatCompletion(src.stream, BASE, {
      keepAliveMs: 60_000,
      abort,
      signal: client.signal,
      onEnd: (o) => outcomes.push(o),
    });
    const reading = readChunks(body).catch((e: unknown) => e);
    await sleep(5);
    client.abort(new Error("client disconnected"));
    await src.whenCancelled;
    expect(abort.signal.aborted).toBe(true);
    expect(await reading).toBeInstanceOf(Error);
    await sleep(0);
    expect(outcomes).toEqual(["cancelled"]);

    // Already aborted before the relay starts.
    const src2 = controlledSource();
    const gone = AbortSignal.abort(new Error("gone"));
    relayChatCompletion(src2.stream, BASE, { signal: gone });
    await src2.whenCancelled;
  });

  it("a complete answer reads the source to its end (the node connection stays reusable), never aborting it", async () => {
    const src = controlledSource([tok(0, "x"), done(0)]);
    const abort = new AbortController();
    await readChunks(relayChatCompletion(src.stream, BASE, { keepAliveMs: 0, abort }));
    await sleep(5);
    src.close();
    await sleep(5);
    expect(src.cancelled).toBe(false);
    expect(abort.signal.aborted).toBe(false);
  });

  it("drainSource cancels a source that does not end in time", async () => {
    const src = controlledSource([tok(0, "trailing")]);
    await drainSource(src.stream.getReader(), null, 20);
    expect(src.cancelled).toBe(true);
    const ended = controlledSource([tok(0, "x")]);
    ended.close();
    await drainSource(ended.stream.getReader(), null, 20);
    expect(ended.cancelled).toBe(false);
  });

  it("refuses a negative keep-alive", () => {
    expect(() => relayChatCompletion(controlledSource().stream, BASE, { keepAliveMs: -1 })).toThrow(RangeError);
  });
});

describe("collectChatCompletion", () => {
  it("assembles chat.completion from the same events", async () => {
    const src = controlledSource([tok(1, "B"), tok(0, "A1"), tok(0, "A2"), done(0, 300, 2), done(1, 300, 1, "length")]);
    const r = await collectChatCompletion(src.stream, { ...BASE, choices: 2, promptTokens: "once" });
    expect(r).toEqual({
      ok: true,
      engine: "simulated",
      completion: {
        id: "chatcmpl-test",
        object: "chat.completion",
        created: 1_700_000_000,
        model: "qwen-vl-chat",
        system_fingerprint: "simulated",
        choices: [
          { index: 0, message: { role: "assistant", content: "A1A2", refusal: null }, logprobs: null, finish_reason: "stop" },
          { index: 1, message: { role: "assistant", content: "B", refusal: null }, logprobs: null, finish_reason: "length" },
        ],
        usage: { prompt_tokens: 300, completion_tokens: 3, total_tokens: 303 },
      },
    });
  });

  it("returns errors as values: node error (node aborted), broken source, early end", async () => {
    const abort = new AbortController();
    const a = await collectChatCompletion(controlledSource([tok(0, "x"), nodeError("overloaded")]).stream, BASE, abort);
    expect(a.ok).toBe(false);
    if (!a.ok) expect(a.error).toBeInstanceOf(ApiError);
    if (!a.ok) expect(a.error.code).toBe("no_capacity");
    expect(abort.signal.aborted).toBe(true);

    const broken = controlledSource([tok(0, "x")]);
    const pending = collectChatCompletion(broken.stream, BASE);
    broken.error(new Error("reset"));
    const b = await pending;
    expect(!b.ok && b.error.code).toBe("internal_error");

    const early = controlledSource([tok(0, "x")]);
    early.close();
    const c = await collectChatCompletion(early.stream, BASE);
    expect(!c.ok && c.error.message).toMatch(/lost mid-answer/);
  });

  it("chatCompletionId looks like OpenAI's", () => {
    expect(chatCompletionId()).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
    expect(chatCompletionId()).not.toBe(chatCompletionId());
  });
});
