/**
 * The relays of the node's own bytes (native.ts) in workerd, the native pipe (`relayNative`) and the
 * JavaScript loop (`relayBytes`) alike: the node's bytes pass through unchanged after the head, the end is
 * read from the last message (usage, error frame), a body that breaks or ends without [DONE] gets the JS
 * relay's closing error frame, and a client going away cancels the node's body.
 */
import { describe, expect, it } from "vitest";
import { sseErrorFrame } from "../errors";
import { chatTail, relayBytes, relayNative } from "./native";
import type { Usage } from "./openai";
import { type RelayOutcome, SSE_DONE, upstreamBrokenError } from "./sse";

const enc = new TextEncoder();
const chunk = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
const base = { id: "chatcmpl-x", object: "chat.completion.chunk", created: 1, model: "qwen-vl-chat", system_fingerprint: null };
const ROLE = chunk({
  ...base,
  choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
  usage: null,
});
const content = (t: string) =>
  chunk({ ...base, choices: [{ index: 0, delta: { content: t }, logprobs: null, finish_reason: null }], usage: null });
const FINISH = chunk({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }], usage: null });
const USAGE = chunk({ ...base, choices: [], usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } });

/** A byte source the test drives, recording whether it was cancelled. */
function byteSource() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let cancelled = false;
  let onCancel: () => void = () => {};
  const whenCancelled = new Promise<void>((r) => {
    onCancel = r;
  });
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    cancel() {
      cancelled = true;
      onCancel();
    },
  });
  return {
    stream,
    push: (text: string) => controller.enqueue(enc.encode(text)),
    close: () => controller.close(),
    error: (e: unknown) => controller.error(e),
    get cancelled() {
      return cancelled;
    },
    whenCancelled,
  };
}

type Relay = typeof relayNative;

function runWith(relay: Relay, head: string, source: ReadableStream<Uint8Array>, signal?: AbortSignal) {
  let resolveEnd!: (v: { outcome: RelayOutcome; usage: Usage | null }) => void;
  const ended = new Promise<{ outcome: RelayOutcome; usage: Usage | null }>((r) => {
    resolveEnd = r;
  });
  const body = relay(enc.encode(head), source, { signal, onEnd: (outcome, usage) => resolveEnd({ outcome, usage }) });
  return { body, ended };
}

describe("chatTail", () => {
  it("reads the usage chunk, a finish chunk, an error frame, and a missing [DONE]", () => {
    expect(chatTail(ROLE + content("a") + FINISH + USAGE + SSE_DONE)).toEqual({
      complete: true,
      closed: true,
      usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 },
    });
    expect(chatTail(ROLE + FINISH + SSE_DONE)).toEqual({ complete: true, closed: true, usage: null });
    expect(chatTail(ROLE + content("a") + sseErrorFrame(upstreamBrokenError()))).toEqual({ complete: false, closed: true, usage: null });
    expect(chatTail(ROLE + content("a"))).toEqual({ complete: false, closed: false, usage: null });
    // Content that looks like the protocol stays content (newlines are escaped inside a message).
    expect(chatTail(content('data: {"error":1}\n\ndata: [DONE]') + FINISH + USAGE + SSE_DONE).complete).toBe(true);
  });
});

describe.each([
  ["relayNative", relayNative],
  ["relayBytes", relayBytes],
] as const)("%s", (_name, relay) => {
  const run = (head: string, source: ReadableStream<Uint8Array>, signal?: AbortSignal) => runWith(relay, head, source, signal);

  it("writes the head, then the node's bytes unchanged; the outcome and usage from the last message", async () => {
    const src = byteSource();
    const { body, ended } = run(ROLE + content("Hel"), src.stream);
    src.push(content("lo"));
    src.push(FINISH + USAGE);
    src.push(SSE_DONE);
    src.close();
    expect(await new Response(body).text()).toBe(ROLE + content("Hel") + content("lo") + FINISH + USAGE + SSE_DONE);
    expect(await ended).toEqual({ outcome: "complete", usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } });
  });

  it("an answer that came whole with the head: complete, with its usage", async () => {
    const src = byteSource();
    const { body, ended } = run(ROLE + content("a") + FINISH + USAGE + SSE_DONE, src.stream);
    src.close();
    expect(await new Response(body).text()).toBe(ROLE + content("a") + FINISH + USAGE + SSE_DONE);
    expect(await ended).toEqual({ outcome: "complete", usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } });
  });

  it("passes the node's own error frame through, with outcome error", async () => {
    const src = byteSource();
    const { body, ended } = run(ROLE, src.stream);
    src.push(content("x") + sseErrorFrame(upstreamBrokenError()));
    src.close();
    expect(await new Response(body).text()).toBe(ROLE + content("x") + sseErrorFrame(upstreamBrokenError()));
    expect((await ended).outcome).toBe("error");
  });

  it("a body that breaks mid-stream gets the relay's error frame and [DONE]", async () => {
    const src = byteSource();
    const { body, ended } = run(ROLE, src.stream);
    src.push(content("x"));
    setTimeout(() => src.error(new Error("connection reset")), 10);
    const text = await new Response(body).text();
    expect(text).toBe(ROLE + content("x") + sseErrorFrame(upstreamBrokenError()));
    expect(await ended).toEqual({ outcome: "error", usage: null });
  });

  it("a body that ends without [DONE] gets the same closing error frame", async () => {
    const src = byteSource();
    const { body, ended } = run(ROLE, src.stream);
    src.push(content("x"));
    src.close();
    expect(await new Response(body).text()).toBe(ROLE + content("x") + sseErrorFrame(upstreamBrokenError()));
    expect((await ended).outcome).toBe("error");
  });

  it("the client going away (its signal): no error frame, outcome cancelled", async () => {
    // The node's body comes from a fetch made with the same signal: aborting it errors the body, which
    // is what ends a pipe that is waiting for the node (workerd does not end a pending pipe on the signal).
    const src = byteSource();
    const client = new AbortController();
    client.signal.addEventListener("abort", () => src.error(client.signal.reason));
    const { body, ended } = run(ROLE, src.stream, client.signal);
    const reader = body.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe(ROLE);
    src.push(content("x"));
    expect(new TextDecoder().decode((await reader.read()).value)).toBe(content("x"));
    client.abort(new Error("client went away"));
    expect((await ended).outcome).toBe("cancelled");
    await expect(reader.read()).rejects.toBeDefined(); // aborted, not closed with an error frame
  });

  it("the client cancelling the output cancels the node's body", async () => {
    const src = byteSource();
    const { body, ended } = run(ROLE, src.stream);
    const reader = body.getReader();
    await reader.read();
    await reader.cancel();
    src.push(content("x")); // the next write fails, and the pipe cancels the source
    src.push(content("y"));
    await src.whenCancelled;
    expect(src.cancelled).toBe(true);
    expect((await ended).outcome).toBe("cancelled");
  });
});

describe("relayBytes", () => {
  it("reads the usage from the end of an answer far longer than the tail it keeps", async () => {
    const src = byteSource();
    const { body, ended } = runWith(relayBytes, ROLE, src.stream);
    const words = Array.from({ length: 400 }, (_, i) => content(`word${i} `));
    for (const w of words) src.push(w);
    src.push(FINISH);
    src.push(USAGE);
    src.push(SSE_DONE);
    src.close();
    expect(await new Response(body).text()).toBe(ROLE + words.join("") + FINISH + USAGE + SSE_DONE);
    expect(await ended).toEqual({ outcome: "complete", usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } });
  });

  it("the client's signal alone (a body that does not error) cancels the node's body", async () => {
    const src = byteSource();
    const client = new AbortController();
    const { body, ended } = runWith(relayBytes, ROLE, src.stream, client.signal);
    const reader = body.getReader();
    await reader.read();
    client.abort(new Error("client went away"));
    await src.whenCancelled;
    expect((await ended).outcome).toBe("cancelled");
  });
});
