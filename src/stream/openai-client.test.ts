// The official `openai` client (6.30.1) reading what the relay writes, inside workerd: its SSE parser
// is the one real clients use, so this checks the shape end to end without a server.
import OpenAI, { APIError } from "openai";
import { describe, expect, it } from "vitest";
import type { NodeEvent } from "../protocol/events";
import { type ChatCompletionOptions, collectChatCompletion, relayChatCompletion } from "./openai";
import { sseResponse } from "./sse";
import { controlledSource, done, nodeError, tok } from "./test-support";

const OPTIONS: ChatCompletionOptions = { id: "chatcmpl-client", created: 1_700_000_000, model: "qwen-vl-chat", choices: 1 };
const MESSAGES = [
  {
    role: "user" as const,
    content: [
      { type: "image_url" as const, image_url: { url: "https://example.com/dog.jpg" } },
      { type: "text" as const, text: "What is this?" },
    ],
  },
];

/** A client whose fetch answers with the given Response factory (no network). */
function client(answer: () => Response | Promise<Response>) {
  return new OpenAI({ apiKey: "x", baseURL: "http://edge.test/v1", maxRetries: 0, fetch: async () => answer() });
}

function streamed(events: NodeEvent[], options: Partial<ChatCompletionOptions> = {}, pushLater?: (push: (e: NodeEvent) => void) => void) {
  const src = controlledSource(events);
  if (pushLater) pushLater((e) => src.push(e));
  return () => sseResponse(relayChatCompletion(src.stream, { ...OPTIONS, ...options }, { keepAliveMs: 5 }));
}

describe("the official openai client against the relay", () => {
  it("streams content, finish_reason and the usage chunk", async () => {
    const answer = streamed([tok(0, "A dog")], { includeUsage: true }, (push) => {
      setTimeout(() => push(tok(0, " on a beach.")), 20);
      setTimeout(() => push(done(0, 300, 5)), 30);
    });
    const stream = await client(answer).chat.completions.create({
      model: "qwen-vl-chat",
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let roles = 0;
    for await (const chunk of stream) {
      expect(chunk.object).toBe("chat.completion.chunk");
      expect(chunk.id).toBe("chatcmpl-client");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role) roles += 1;
        text += c.delta.content ?? "";
        finish = c.finish_reason ?? finish;
      }
    }
    expect(text).toBe("A dog on a beach.");
    expect(roles).toBe(1);
    expect(finish).toBe("stop");
    expect(usage).toEqual({ prompt_tokens: 300, completion_tokens: 5, total_tokens: 305 });
  });

  it("keep-alive comments before the first token are ignored by the client", async () => {
    const answer = streamed([], {}, (push) => {
      setTimeout(() => push(tok(0, "late")), 40);
      setTimeout(() => push(done(0)), 45);
    });
    const stream = await client(answer).chat.completions.create({ model: "qwen-vl-chat", messages: MESSAGES, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text).toBe("late");
  });

  it("n > 1: the client sees each choice by index", async () => {
    const answer = streamed([tok(1, "b"), tok(0, "a"), done(0), tok(1, "b"), done(1)], { choices: 2 });
    const stream = await client(answer).chat.completions.create({ model: "qwen-vl-chat", messages: MESSAGES, stream: true, n: 2 });
    const texts = ["", ""];
    for await (const chunk of stream) for (const c of chunk.choices) texts[c.index] += c.delta.content ?? "";
    expect(texts).toEqual(["a", "bb"]);
  });

  it("an error after the first byte raises an APIError instead of a truncated answer", async () => {
    const answer = streamed([tok(0, "A do")], {}, (push) => setTimeout(() => push(nodeError("engine_failed")), 20));
    const stream = await client(answer).chat.completions.create({ model: "qwen-vl-chat", messages: MESSAGES, stream: true });
    let text = "";
    let caught: unknown;
    try {
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    } catch (err) {
      caught = err;
    }
    expect(text).toBe("A do");
    expect(caught).toBeInstanceOf(APIError);
    expect((caught as APIError).message).toContain("The model server failed while generating the answer.");
    expect((caught as APIError).code).toBe("internal_error");
  });

  it("a broken upstream raises too", async () => {
    const src = controlledSource([tok(0, "A do")]);
    setTimeout(() => src.error(new Error("reset")), 20);
    const answer = () => sseResponse(relayChatCompletion(src.stream, OPTIONS, { keepAliveMs: 0 }));
    const stream = await client(answer).chat.completions.create({ model: "qwen-vl-chat", messages: MESSAGES, stream: true });
    await expect(
      (async () => {
        for await (const _ of stream);
      })(),
    ).rejects.toBeInstanceOf(APIError);
  });

  it("the helper's stream runner accumulates the final completion", async () => {
    const answer = streamed([tok(0, "Hello"), tok(0, " world"), done(0, 12, 2)]);
    const runner = client(answer).chat.completions.stream({ model: "qwen-vl-chat", messages: MESSAGES });
    const final = await runner.finalChatCompletion();
    expect(final.choices[0].message.content).toBe("Hello world");
    expect(final.choices[0].finish_reason).toBe("stop");
  });

  it("reads the non-streaming chat.completion", async () => {
    const r = await collectChatCompletion(controlledSource([tok(0, "A dog."), done(0, 300, 3)]).stream, OPTIONS);
    if (!r.ok) throw r.error;
    const completion = await client(() => Response.json(r.completion)).chat.completions.create({
      model: "qwen-vl-chat",
      messages: MESSAGES,
    });
    expect(completion.choices[0].message).toMatchObject({ role: "assistant", content: "A dog." });
    expect(completion.usage).toEqual({ prompt_tokens: 300, completion_tokens: 3, total_tokens: 303 });
  });
});
