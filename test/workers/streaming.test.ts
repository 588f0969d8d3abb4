/**
 * Streaming chat answers as soon as a node takes the request (src/serving/chat.ts, `serveStream`):
 * status and headers before the first token, keep-alives while the GPU works, and a node that fails
 * after taking the request (no other node left) answered with an error frame then [DONE] under the 200.
 * Real simulated nodes (test/node/support/workers-services.ts): one with a 600 ms prefill, one that fails
 * every request before its first token.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bearer, edge, envWithNode, fixture, TOKEN } from "./helpers";

const RELAYS = ["js", "native"] as const;

function chat(stream: boolean): RequestInit {
  return {
    method: "POST",
    headers: { ...bearer(TOKEN), "content-type": "application/json" },
    body: JSON.stringify({
      model: "qwen-vl-chat",
      messages: [{ role: "user", content: "ping" }],
      max_tokens: 4,
      temperature: 0.7, // not cached, not shared: straight from the node
      stream,
      ...(stream ? { stream_options: { include_usage: true } } : {}),
    }),
  };
}

/** The body's chunks as text, in the order they arrived. */
async function chunks(res: Response): Promise<string[]> {
  const out: string[] = [];
  const decoder = new TextDecoder();
  const reader = res.body!.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) out.push(decoder.decode(r.value, { stream: true }));
  return out;
}

describe.each(RELAYS)("streaming chat, %s relay", (relay) => {
  it("is answered when the node takes the request: headers, then keep-alives, then the tokens", async () => {
    const e = envWithNode(env.SLOW_NODE_URL, { EDGE_RELAY: relay, SSE_KEEP_ALIVE_MS: "100" });
    const res = await edge(e, "/v1/chat/completions", chat(true));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(res.headers.get("x-relay")).toBe(relay);
    expect(res.headers.get("x-engine")).toBe("simulated");
    expect(res.headers.get("x-cache-detail")).toBe("result=off");
    const parts = await chunks(res);
    // The node's prefill is 600 ms: the edge wrote keep-alives before the first token, on a response
    // that had already started (a response started at the first token would begin with data).
    expectKeepAlivesBefore(parts, "data: ");
    const text = parts.join("");
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    const messages = text
      .split("\n\n")
      .filter((f) => f.startsWith("data: {"))
      .map((f) => JSON.parse(f.slice(6)));
    expect(messages.map((c) => c.choices[0]?.delta?.content ?? "").join("")).toMatch(/^\[simulated\]/);
    expect(messages.at(-1).usage).toMatchObject({ completion_tokens: 4 });
    await res.settled();
  });

  it("a node that takes the request and fails before its first token, no other node left: 200, error frame, [DONE]", async () => {
    const e = envWithNode(env.FAILING_NODE_URL, { EDGE_RELAY: relay });
    const res = await edge(e, "/v1/chat/completions", chat(true));
    expect(res.status).toBe(200);
    const text = (await chunks(res)).join("");
    expect(text).not.toContain('"choices"');
    const frames = text.split("\n\n").filter((f) => f.startsWith("data: "));
    expect(frames).toHaveLength(2);
    const error = JSON.parse(frames[0].slice(6)).error;
    // The node failed, was set aside, and no other node serves the model: what a request that no node took gets.
    expect(error).toMatchObject({ type: "server_error", code: "no_capacity" });
    expect(error.message).not.toMatch(/simulated fault|engine_failed|127\.0\.0\.1/); // nothing internal
    expect(frames[1]).toBe("data: [DONE]");
    await res.settled();
  });
});

it("without streaming, the same failure is a status (503 no_capacity, Retry-After), as before", async () => {
  const res = await edge(envWithNode(env.FAILING_NODE_URL), "/v1/chat/completions", chat(false));
  expect(res.status).toBe(503);
  expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
  expect(((await res.json()) as { error: { code: string } }).error.code).toBe("no_capacity");
});

describe("streaming captions (the task routes start the same way)", () => {
  const caption = async (): Promise<RequestInit> => ({
    method: "POST",
    headers: { ...bearer(TOKEN), "content-type": "image/png" },
    body: await fixture("fixtures/coffee.png"),
  });

  it("headers when the node takes it, keep-alives, then delta events and done", async () => {
    const e = envWithNode(env.SLOW_NODE_URL, { SSE_KEEP_ALIVE_MS: "100" });
    const res = await edge(e, "/v1/captions?stream=true&temperature=0.7", await caption());
    expect(res.status).toBe(200);
    expect(res.headers.get("x-engine")).toBe("simulated");
    const parts = await chunks(res);
    expectKeepAlivesBefore(parts, "event: ");
    const text = parts.join("");
    expect(text).toContain("event: delta\n");
    expect(text).toMatch(/event: done\ndata: \{[^\n]*"caption":"\[simulated\]/);
    await res.settled();
  });

  it("a node that takes it and fails before its first token, no other node left: 200, then event: error", async () => {
    const res = await edge(envWithNode(env.FAILING_NODE_URL), "/v1/captions?stream=true&temperature=0.7", await caption());
    expect(res.status).toBe(200);
    const text = (await chunks(res)).join("");
    expect(text).not.toContain("event: delta");
    const error = /^event: error\ndata: (.*)\n\n$/m.exec(text.replace(/^(: keep-alive\n\n)*/, ""));
    expect(error).not.toBeNull();
    expect(JSON.parse(error![1]).error).toMatchObject({ type: "server_error", code: "no_capacity" });
    await res.settled();
  });
});

/** At least two `: keep-alive` comments, and nothing else, before the first part containing `marker`. */
function expectKeepAlivesBefore(parts: string[], marker: string): void {
  const first = parts.findIndex((p) => p.includes(marker));
  expect(first).toBeGreaterThanOrEqual(2);
  for (const p of parts.slice(0, first)) expect(p).toBe(": keep-alive\n\n");
}
