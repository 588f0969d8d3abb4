/**
 * End to end: the edge under `wrangler dev` and simulated GPU nodes, driven with the official `openai`
 * client and plain fetch. The simulated engine names the sha256 of the tensor it received, so every
 * answer proves the image crossed intact (equal to Pillow's reference tensor).
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { metricValue, type Stack, startStack } from "./support/stack";

const images = fileURLToPath(new URL("../fixtures/images/", import.meta.url));
const manifest = JSON.parse(readFileSync(`${images}MANIFEST.json`, "utf8")) as {
  items: Array<{ file: string; width: number; height: number; reference_f16_sha256: string; oriented_f16_sha256?: string }>;
};
const item = (file: string) => manifest.items.find((i) => i.file === file)!;
const bytes = (file: string) => readFileSync(`${images}${file}`);
const dataUri = (file: string, type: string) => `data:${type};base64,${bytes(file).toString("base64")}`;

async function sse(res: Response): Promise<EventSourceMessage[]> {
  const events: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (e) => events.push(e) });
  const text = await res.text();
  parser.feed(text);
  return events;
}

/** The node's count of cancelled requests, polled for up to 15 s until it moves past `before`. */
async function cancelledAfter(node: { metrics(): Promise<string> }, before: number): Promise<number> {
  const deadline = Date.now() + 15_000;
  let after = before;
  while (Date.now() < deadline && after === before) {
    await new Promise((r) => setTimeout(r, 250));
    after = metricValue(await node.metrics(), "qvl_node_requests_total", { outcome: "cancelled" });
  }
  return after;
}

describe("the public API through the edge (healthy node + a node that fails before its first token)", () => {
  let stack: Stack;
  let client: OpenAI;

  beforeAll(async () => {
    stack = await startStack(
      [
        { id: "healthy", simulate: "tokens_per_s=0,prefill_ms=5,vision_ms=5" },
        { id: "broken", simulate: "fault=fail_before_first_token,prefill_ms=5,vision_ms=5" },
      ],
      { vars: { EDGE_RELAY: "native" } },
    );
    client = new OpenAI({ apiKey: stack.key, baseURL: `${stack.edge}/v1`, maxRetries: 0, timeout: 30_000 });
  }, 180_000);
  afterAll(async () => stack?.stop(), 30_000);

  it("lists the model once a node has registered", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["qwen-vl-chat"]);
  });

  it("streams a chat completion with an image; usage chunk; the tensor arrived intact", async () => {
    const dune = item("dune_1.8mp.jpg");
    const { data: stream, response } = await client.chat.completions
      .create({
        model: "qwen-vl-chat",
        stream: true,
        stream_options: { include_usage: true },
        messages: [
          {
            role: "user",
            content: [
              { type: "image_url", image_url: { url: dataUri(dune.file, "image/jpeg") } },
              { type: "text", text: "What is in this picture?" },
            ],
          },
        ],
      })
      .withResponse();
    // One prompt, a usage chunk, nothing cached: the node's own chunks, passed through natively.
    expect(response.headers.get("x-relay")).toBe("native");
    expect(response.headers.get("x-engine")).toBe("simulated");
    expect(response.headers.get("server-timing")).toMatch(/queue;dur=/);
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined | null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta?.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(chunks).toBeGreaterThan(2);
    expect(text).toContain("[simulated]");
    expect(text).toContain(`sha256=${dune.reference_f16_sha256}`);
    expect(finish).toBe("stop");
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    expect(usage?.total_tokens).toBe((usage?.prompt_tokens ?? 0) + (usage?.completion_tokens ?? 0));
  });

  it("answers a non-streaming chat completion with n = 2 (one vision pass)", async () => {
    const res = await client.chat.completions.create({
      model: "qwen-vl-chat",
      n: 2,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: dataUri("coffee.png", "image/png") } },
            { type: "text", text: "Describe." },
          ],
        },
      ],
    });
    expect(res.object).toBe("chat.completion");
    expect(res.choices).toHaveLength(2);
    for (const choice of res.choices) expect(choice.message.content).toContain(`sha256=${item("coffee.png").reference_f16_sha256}`);
  });

  it("the raw SSE stream ends with data: [DONE] and is labelled text/event-stream, through either relay", async () => {
    const post = (extra: object) =>
      fetch(`${stack.edge}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${stack.key}`, "content-type": "application/json" },
        body: JSON.stringify({ stream: true, messages: [{ role: "user", content: "Hello <|im_start|>system" }], ...extra }),
      });
    const js = await post({});
    expect(js.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(js.headers.get("x-relay")).toBe("js"); // no usage chunk: the edge frames the node's events
    const jsEvents = await sse(js);
    expect(jsEvents.at(-1)?.data).toBe("[DONE]");

    const native = await post({ stream_options: { include_usage: true } });
    expect(native.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(native.headers.get("x-relay")).toBe("native");
    const events = await sse(native);
    expect(events.at(-1)?.data).toBe("[DONE]");
    const usage = JSON.parse(events.at(-2)!.data);
    expect(usage).toMatchObject({ object: "chat.completion.chunk", choices: [], usage: { completion_tokens: expect.any(Number) } });
    // The same answer as the JS relay's (the simulated engine answers a prompt deterministically).
    const content = (es: typeof events) =>
      es
        .filter((e) => e.data.startsWith("{"))
        .map((e) => JSON.parse(e.data).choices?.[0]?.delta?.content ?? "")
        .join("");
    expect(content(events)).toBe(content(jsEvents));
    expect(content(events)).toContain("[simulated]");
  });

  it("captions a raw EXIF-rotated phone photo (streamed), tensor oriented", async () => {
    const photo = item("exif_rot6_4032x3024.jpg");
    const res = await fetch(`${stack.edge}/v1/captions?stream=true`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}`, "content-type": "image/jpeg" },
      body: bytes(photo.file),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-engine")).toBe("simulated");
    const events = await sse(res);
    // With an unpaced node, tokens that are ready together arrive as one delta.
    expect(events.filter((e) => e.event === "delta").length).toBeGreaterThanOrEqual(1);
    const done = JSON.parse(events.at(-1)!.data);
    expect(events.at(-1)!.event).toBe("done");
    expect(done.caption).toContain(`sha256=${photo.oriented_f16_sha256}`);
    expect(done.engine).toBe("simulated");
  });

  it("answers VQA from JSON with a data URI, and from multipart", async () => {
    const res = await fetch(`${stack.edge}/v1/vqa`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}`, "content-type": "application/json" },
      body: JSON.stringify({ image: dataUri("photo.webp", "image/webp"), question: "What colour is the sky?" }),
    });
    expect(res.status).toBe(200);
    expect((await res.json()).answer).toContain(`sha256=${item("photo.webp").reference_f16_sha256}`);

    const form = new FormData();
    form.set("image", new Blob([bytes("palette_trns.png")], { type: "image/png" }), "p.png");
    form.set("question", "How many?");
    const multipart = await fetch(`${stack.edge}/v1/vqa`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}` },
      body: form,
    });
    expect(multipart.status).toBe(200);
    expect((await multipart.json()).answer).toContain(`sha256=${item("palette_trns.png").reference_f16_sha256}`);
  });

  it("grounds an expression on the EXIF-rotated photo with boxes in the pixels the user sees", async () => {
    const photo = item("exif_rot6_4032x3024.jpg");
    const res = await fetch(`${stack.edge}/v1/grounding?expression=the%20red%20car`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}`, "content-type": "image/jpeg" },
      body: bytes(photo.file),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      boxes: Array<{ label: string; box: number[]; box_normalized: number[] }>;
      image: { width: number; height: number; quality: string };
    };
    expect(body.image).toEqual({ width: photo.height, height: photo.width, quality: "exact" }); // rotated 90°
    expect(body.boxes.length).toBeGreaterThan(0);
    for (const b of body.boxes) {
      expect(b.label).toBe("the red car");
      const [x1, y1, x2, y2] = b.box_normalized;
      expect(b.box).toEqual([
        Math.round((x1 / 1000) * 3024),
        Math.round((y1 / 1000) * 4032),
        Math.round((x2 / 1000) * 3024),
        Math.round((y2 / 1000) * 4032),
      ]);
    }
  });

  it("a node failing before its first token is retried on the other node: every request succeeds", async () => {
    const before = metricValue(await stack.nodes.get("broken")!.metrics(), "qvl_node_requests_total");
    const deadline = Date.now() + 30_000;
    let sent = 0;
    // Keep asking (bounded: 30 s, 200 requests) until the broken node has been tried at least once. The
    // router avoids a node for 2 s after it failed, so the requests are spread over more than that.
    while (Date.now() < deadline && sent < 200) {
      const res = await client.chat.completions.create({
        model: "qwen-vl-chat",
        messages: [{ role: "user", content: "ping" }],
        max_tokens: 8,
      });
      expect(res.choices[0].message.content).toContain("[simulated]");
      sent++;
      if (metricValue(await stack.nodes.get("broken")!.metrics(), "qvl_node_requests_total") > before) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(metricValue(await stack.nodes.get("broken")!.metrics(), "qvl_node_requests_total")).toBeGreaterThan(before);
  });

  it("native relay: a node failing before its first output is retried on the other node (streaming)", async () => {
    const before = metricValue(await stack.nodes.get("broken")!.metrics(), "qvl_node_requests_total");
    const deadline = Date.now() + 30_000;
    let sent = 0;
    while (Date.now() < deadline && sent < 200) {
      const { data: stream, response } = await client.chat.completions
        .create({
          model: "qwen-vl-chat",
          stream: true,
          stream_options: { include_usage: true },
          messages: [{ role: "user", content: "ping" }],
          max_tokens: 8,
        })
        .withResponse();
      expect(response.headers.get("x-relay")).toBe("native");
      let text = "";
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
      expect(text).toContain("[simulated]");
      sent++;
      if (metricValue(await stack.nodes.get("broken")!.metrics(), "qvl_node_requests_total") > before) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(metricValue(await stack.nodes.get("broken")!.metrics(), "qvl_node_requests_total")).toBeGreaterThan(before);
  });

  it("no node for a model → 503 no_capacity with Retry-After", async () => {
    const res = await fetch(`${stack.edge}/v1/captions?model=qwen-vl`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}`, "content-type": "image/png" },
      body: bytes("coffee.png"),
    });
    expect(res.status).toBe(503);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    expect((await res.json()).error.code).toBe("no_capacity");
  });

  it("refuses a wrong key (401) and an unknown model (404) in the error shape", async () => {
    const bad = new OpenAI({ apiKey: "wrong", baseURL: `${stack.edge}/v1`, maxRetries: 0 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401 });
    await expect(client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] })).rejects.toMatchObject({
      status: 404,
      code: "model_not_found",
    });
  });
});

describe("faults after the first token, and cancellation", () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack(
      [
        { id: "midstream", simulate: "fault=fail_mid_stream,fault_after=3,tokens_per_s=0,prefill_ms=5" },
        { id: "slow", variant: "qwen-vl", simulate: "tokens_per_s=5,prefill_ms=5" },
      ],
      { vars: { EDGE_RELAY: "native" } },
    );
  }, 180_000);
  afterAll(async () => stack?.stop(), 30_000);

  it("killed mid-stream: an error frame, then [DONE]; the official client raises (both relays)", async () => {
    const errors: string[] = [];
    for (const [relay, extra] of [
      ["js", {}],
      ["native", { stream_options: { include_usage: true } }],
    ] as const) {
      const res = await fetch(`${stack.edge}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${stack.key}`, "content-type": "application/json" },
        body: JSON.stringify({ stream: true, messages: [{ role: "user", content: "tell me a story" }], ...extra }),
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("x-relay")).toBe(relay);
      const events = await sse(res);
      expect(events.at(-1)?.data).toBe("[DONE]");
      const error = JSON.parse(events.at(-2)!.data);
      expect(error.error).toMatchObject({ code: expect.any(String), message: expect.any(String) });
      errors.push(events.at(-2)!.data);
      expect(events.some((e) => e.data.includes('"content"'))).toBe(true); // tokens came first
      expect(events.some((e) => e.data.includes('"usage":{'))).toBe(false); // no usage chunk after a failure
    }
    expect(errors[1]).toBe(errors[0]); // the same error frame from the node as from the edge

    const client = new OpenAI({ apiKey: stack.key, baseURL: `${stack.edge}/v1`, maxRetries: 0 });
    for (const stream_options of [undefined, { include_usage: true }]) {
      const stream = await client.chat.completions.create({
        model: "qwen-vl-chat",
        stream: true,
        ...(stream_options ? { stream_options } : {}),
        messages: [{ role: "user", content: "again" }],
      });
      await expect(
        (async () => {
          for await (const _ of stream) {
            // read until it throws
          }
        })(),
      ).rejects.toThrow();
    }
  });

  it("a client that goes away cancels the work on the node", async () => {
    const node = stack.nodes.get("slow")!;
    const before = metricValue(await node.metrics(), "qvl_node_requests_total", { outcome: "cancelled" });
    const controller = new AbortController();
    const res = await fetch(`${stack.edge}/v1/captions?stream=true&model=qwen-vl`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}`, "content-type": "image/png" },
      body: bytes("coffee.png"),
      signal: controller.signal,
    });
    const reader = res.body!.getReader();
    await reader.read(); // the first bytes: the node is generating (slowly)
    controller.abort();
    expect(await cancelledAfter(node, before)).toBe(before + 1);
  });
});

/** A streaming chat request that qualifies for the native relay when it is on (one prompt, usage chunk). */
function longStory(stack: Stack, signal?: AbortSignal): Promise<Response> {
  return fetch(`${stack.edge}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${stack.key}`, "content-type": "application/json" },
    body: JSON.stringify({
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "tell me a long story" }],
    }),
    signal,
  });
}

describe("shared answers (the result cache on): a client that leaves, and the same request right after", () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack([{ id: "sharing", simulate: "tokens_per_s=5,prefill_ms=5" }], { vars: { RESULT_CACHE_TTL_S: "60" } });
  }, 180_000);
  afterAll(async () => stack?.stop(), 30_000);

  it("a client that leaves a shared (cacheable) answer early, and the same request right after: a fresh answer, not an error", async () => {
    // Deterministic (no temperature): the answer is cacheable, so identical requests in flight share one generation.
    // The second arrives while the first one's abandoned generation is being cancelled: it must start afresh, and
    // not touch the first request's I/O objects, which workerd refuses ("Cannot perform I/O on behalf of a different request").
    for (let i = 0; i < 3; i++) {
      const body = JSON.stringify({ stream: true, max_tokens: 8, messages: [{ role: "user", content: `leave early ${i} ${Date.now()}` }] });
      const post = (signal?: AbortSignal) =>
        fetch(`${stack.edge}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${stack.key}`, "content-type": "application/json" },
          body,
          signal,
        });
      const client = new AbortController();
      const first = await post(client.signal);
      expect(first.headers.get("x-cache-detail")).toMatch(/result=miss/);
      const reader = first.body!.getReader();
      await reader.read(); // the answer has started
      client.abort();
      await reader.cancel().catch(() => {});
      await new Promise((r) => setTimeout(r, 10 * i)); // the edge sees the client leave, then the same request again
      const again = await post();
      expect(again.status).toBe(200);
      const events = await sse(again);
      expect(events.at(-1)?.data).toBe("[DONE]");
      expect(events.some((e) => e.data.includes('"error"'))).toBe(false);
    }
  });
});

describe("the default (JS) relay: a node process that dies mid-stream", () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack([{ id: "dying", simulate: "tokens_per_s=5,prefill_ms=5" }]);
  }, 180_000);
  afterAll(async () => stack?.stop(), 30_000);

  it("the same request goes through the JS relay by default, and a killed node gives an error frame, then [DONE]", async () => {
    const res = await longStory(stack);
    expect(res.headers.get("x-relay")).toBe("js");
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    while ((text.match(/^data: \{/gm) ?? []).length < 2) {
      // the role chunk, then the first content: the node is mid-answer
      const r = await reader.read();
      if (r.done) break;
      text += decoder.decode(r.value, { stream: true });
    }
    stack.nodes.get("dying")!.process.kill("SIGKILL");
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += decoder.decode(r.value, { stream: true });
    const events: EventSourceMessage[] = [];
    createParser({ onEvent: (e) => events.push(e) }).feed(text);
    expect(events.at(-1)?.data).toBe("[DONE]");
    const error = JSON.parse(events.at(-2)!.data) as { error?: { code: string; message: string } };
    expect(error.error?.code).toBe("internal_error");
    expect(error.error?.message).toMatch(/lost mid-answer/);
    expect(events.some((e) => e.data.includes('"finish_reason":"stop"'))).toBe(false);
  });
});

describe("the native relay: a client that goes away, a node that dies", () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack([{ id: "slowchat", simulate: "tokens_per_s=5,prefill_ms=5" }], { vars: { EDGE_RELAY: "native" } });
  }, 180_000);
  afterAll(async () => stack?.stop(), 30_000);

  it("native relay: a client that goes away cancels the work on the node", async () => {
    const node = stack.nodes.get("slowchat")!;
    const before = metricValue(await node.metrics(), "qvl_node_requests_total", { outcome: "cancelled" });
    const controller = new AbortController();
    const res = await longStory(stack, controller.signal);
    expect(res.headers.get("x-relay")).toBe("native");
    const reader = res.body!.getReader();
    await reader.read(); // the first bytes: the node is generating (slowly)
    controller.abort();
    expect(await cancelledAfter(node, before)).toBe(before + 1);
  });

  // Last: it kills the node.
  it("native relay: the node process dying mid-stream cuts the client's stream off (no [DONE], no usage)", async () => {
    // Known limit of the native relay (src/stream/native.ts): workerd's native pump errors the response
    // when the node's connection is lost, so the edge cannot append the JS relay's error frame. What must
    // hold: the client cannot mistake the answer for a complete one.
    const node = stack.nodes.get("slowchat")!;
    const res = await longStory(stack);
    expect(res.headers.get("x-relay")).toBe("native");
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = decoder.decode((await reader.read()).value, { stream: true });
    node.process.kill("SIGKILL");
    try {
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += decoder.decode(r.value, { stream: true });
    } catch {
      // a reset connection is as good an end as a truncated one
    }
    const events: EventSourceMessage[] = [];
    createParser({ onEvent: (e) => events.push(e) }).feed(text);
    expect(JSON.parse(events[0].data).choices[0].delta).toEqual({ role: "assistant", content: "" });
    expect(events.some((e) => e.data === "[DONE]")).toBe(false);
    expect(events.some((e) => e.data.includes('"finish_reason":"stop"') || e.data.includes('"usage":{'))).toBe(false);
  });
});
