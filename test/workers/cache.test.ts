/**
 * The caches inside workerd, with the real bindings (Cache API, R2, KV) and a simulated GPU node on
 * loopback whose /metrics counts the generate requests that reached it (this file is its only user,
 * so a count is this file's GPU calls). Each test uses its own seed or question, so no test depends on
 * what another one cached.
 */
import { env } from "cloudflare:workers";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { beforeAll, describe, expect, it } from "vitest";
import { PREPROCESS_VERSION } from "../../src/image/pipeline";
import { bearer, createKey, edge, envWithNode, fixture, type ManifestItem, nodeRequests, sha256Hex } from "./helpers";

const NODE = env.COUNTED_NODE_URL ?? "";
const E = envWithNode(NODE);
let key = "";
let manifest: ManifestItem[] = [];
let small: Uint8Array;
let seedCounter = Math.floor(Math.random() * 1e9);
const nextSeed = () => ++seedCounter;

beforeAll(async () => {
  key = (await createKey(E, { name: "cache tests", scopes: ["caption", "vqa", "grounding", "chat"], rate: "100000/min" })).key;
  manifest = JSON.parse(new TextDecoder().decode(await fixture("fixtures/MANIFEST.json"))).items;
  small = await fixture("fixtures/upscale_120x80.jpg");
});

/** The node's request count once it has stopped moving (a request is counted when it ends). */
async function gpuCalls(): Promise<number> {
  let last = await nodeRequests(NODE);
  for (;;) {
    await new Promise((r) => setTimeout(r, 60));
    const now = await nodeRequests(NODE);
    if (now === last) return now;
    last = now;
  }
}

function raw(path: string, image: Uint8Array, headers: Record<string, string> = {}) {
  return edge(E, path, {
    method: "POST",
    headers: { ...bearer(key), "content-type": "image/jpeg", ...headers },
    body: image as Uint8Array<ArrayBuffer>,
  });
}

function json(path: string, body: unknown, headers: Record<string, string> = {}) {
  return edge(E, path, {
    method: "POST",
    headers: { ...bearer(key), "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

async function events(res: Response): Promise<EventSourceMessage[]> {
  const out: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (e) => out.push(e) });
  parser.feed(await res.text());
  return out;
}

const detail = (res: Response) => res.headers.get("x-cache-detail") ?? "";

describe("result cache", () => {
  it("a deterministic caption: MISS, then HIT with no GPU call, the same answer and its own id; streamed, the HIT streams", async () => {
    const seed = nextSeed();
    const before = await gpuCalls();
    const first = await raw(`/v1/captions?seed=${seed}`, small);
    expect(first.status).toBe(200);
    expect(first.headers.get("x-cache")).toBe("MISS");
    expect(detail(first)).toMatch(/^result=miss; source=none; tensor=/);
    const a = (await first.json()) as { id: string; caption: string; usage: unknown; engine: string; image: unknown };
    await first.settled();
    expect(await gpuCalls()).toBe(before + 1);

    const second = await raw(`/v1/captions?seed=${seed}`, small);
    expect(second.headers.get("x-cache")).toBe("HIT");
    expect(detail(second)).toMatch(/^result=hit; source=none; tensor=hit/);
    expect(second.headers.get("x-engine")).toBe("simulated");
    const b = (await second.json()) as typeof a;
    expect(b).toEqual({ ...a, id: b.id });
    expect(b.id).not.toBe(a.id);

    const streamed = await raw(`/v1/captions?seed=${seed}&stream=true`, small);
    expect(streamed.headers.get("x-cache")).toBe("HIT");
    expect(streamed.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const evs = await events(streamed);
    expect(evs.map((e) => e.event).filter((e) => e !== "delta")).toEqual(["done"]);
    expect(
      evs
        .filter((e) => e.event === "delta")
        .map((e) => JSON.parse(e.data).text)
        .join("")
        .trim(),
    ).toBe(a.caption);
    expect(JSON.parse(evs.at(-1)!.data)).toMatchObject({ caption: a.caption, usage: a.usage, engine: "simulated" });
    expect(await gpuCalls()).toBe(before + 1);
  });

  it("grounding from the cache: the same boxes, in the pixels of this image, streamed as box events", async () => {
    const image = await fixture("fixtures/subsample422.jpg");
    const query = `?expression=${encodeURIComponent("the big cup")}&seed=${nextSeed()}`;
    const first = await raw(`/v1/grounding${query}`, image);
    const a = (await first.json()) as { boxes: unknown[]; image: { width: number } };
    await first.settled();
    expect(a.boxes.length).toBeGreaterThan(0);
    const before = await gpuCalls();
    const streamed = await raw(`/v1/grounding${query}&stream=true`, image);
    expect(streamed.headers.get("x-cache")).toBe("HIT");
    const evs = await events(streamed);
    expect(evs.filter((e) => e.event === "box").map((e) => JSON.parse(e.data))).toEqual(a.boxes);
    expect(JSON.parse(evs.at(-1)!.data)).toMatchObject({ boxes: a.boxes, image: a.image });
    expect(await gpuCalls()).toBe(before);
  });

  it("chat completions: a streamed HIT has the live stream's chunk shapes, the usage chunk and [DONE]", async () => {
    const body = {
      model: "qwen-vl-chat",
      stream: true,
      stream_options: { include_usage: true },
      seed: nextSeed(),
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: `data:image/jpeg;base64,${btoa(String.fromCharCode(...small))}` } },
            { type: "text", text: "What is this?" },
          ],
        },
      ],
    };
    const shape = (evs: EventSourceMessage[]) =>
      evs.map((e) => {
        if (e.data === "[DONE]") return "[DONE]";
        const c = JSON.parse(e.data) as { choices: Array<{ delta: Record<string, unknown>; finish_reason: unknown }>; usage?: unknown };
        return c.choices.length === 0
          ? "usage"
          : `${Object.keys(c.choices[0].delta).sort().join("+") || "{}"}:${c.choices[0].finish_reason}`;
      });
    const text = (evs: EventSourceMessage[]) =>
      evs
        .filter((e) => e.data !== "[DONE]")
        .map((e) => (JSON.parse(e.data) as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta.content ?? "")
        .join("");
    const live = await json("/v1/chat/completions", body);
    expect(live.headers.get("x-cache")).toBe("MISS");
    const liveEvents = await events(live);
    await live.settled();
    const before = await gpuCalls();
    const cached = await json("/v1/chat/completions", body);
    expect(cached.headers.get("x-cache")).toBe("HIT");
    const cachedEvents = await events(cached);
    expect(text(cachedEvents)).toBe(text(liveEvents));
    expect(text(cachedEvents)).toContain("[simulated]");
    const s = shape(cachedEvents);
    expect(s[0]).toBe("content+role:null");
    expect(s.slice(-3)).toEqual(["{}:stop", "usage", "[DONE]"]);
    expect(shape(liveEvents).slice(-3)).toEqual(["{}:stop", "usage", "[DONE]"]);
    expect(JSON.parse(cachedEvents.at(-2)!.data).usage).toEqual(JSON.parse(liveEvents.at(-2)!.data).usage);
    expect(await gpuCalls()).toBe(before);
  });

  it("Cache-Control: no-cache answers afresh (GPU, decode) and refreshes; no-store answers afresh and keeps nothing", async () => {
    const seed = nextSeed();
    const first = await raw(`/v1/captions?seed=${seed}`, small);
    await first.json();
    await first.settled();
    const before = await gpuCalls();
    const fresh = await raw(`/v1/captions?seed=${seed}`, small, { "cache-control": "no-cache" });
    expect(fresh.headers.get("x-cache")).toBe("MISS");
    expect(detail(fresh)).toBe("result=bypass; source=none; tensor=bypass");
    await fresh.json();
    await fresh.settled();
    expect(await gpuCalls()).toBe(before + 1);
    const again = await raw(`/v1/captions?seed=${seed}`, small);
    expect(again.headers.get("x-cache")).toBe("HIT");
    await again.json();

    const seed2 = nextSeed();
    const unkept = await raw(`/v1/captions?seed=${seed2}`, small, { "cache-control": "no-store" });
    expect(unkept.headers.get("x-cache")).toBe("MISS");
    await unkept.json();
    await unkept.settled();
    const after = await raw(`/v1/captions?seed=${seed2}`, small);
    expect(after.headers.get("x-cache")).toBe("MISS");
    expect(detail(after)).toMatch(/^result=miss/);
    await after.json();
    await after.settled();
    expect(await gpuCalls()).toBe(before + 3);
  });

  it("non-deterministic requests (temperature > 0, no seed) are neither cached nor shared; with a seed they are", async () => {
    const before = await gpuCalls();
    for (let i = 0; i < 2; i++) {
      const res = await raw("/v1/captions?temperature=0.7", small);
      expect(res.headers.get("x-cache")).toBe("MISS");
      expect(detail(res)).toMatch(/^result=off/);
      await res.json();
      await res.settled();
    }
    expect(await gpuCalls()).toBe(before + 2);
    const seed = nextSeed();
    const seeded = [];
    for (let i = 0; i < 2; i++) {
      const res = await raw(`/v1/captions?temperature=0.7&seed=${seed}`, small);
      seeded.push(res.headers.get("x-cache"));
      await res.json();
      await res.settled();
    }
    expect(seeded).toEqual(["MISS", "HIT"]);
  });

  it("the key is the whole input: any change of prompt, parameter or image misses; another API key with the same input hits", async () => {
    const seed = nextSeed();
    const base = await raw(`/v1/captions?seed=${seed}`, small);
    await base.json();
    await base.settled();
    const other = await fixture("fixtures/subsample422.jpg");
    for (const [query, image] of [
      [`?seed=${seed}&language=zh`, small],
      [`?seed=${seed}&max_tokens=17`, small],
      [`?seed=${seed}&top_p=0.9`, small],
      [`?seed=${seed}&stop=zz`, small],
      [`?seed=${seed + 1}`, small],
      [`?seed=${seed}`, other],
    ] as const) {
      const res = await raw(`/v1/captions${query}`, image);
      expect(res.headers.get("x-cache"), query).toBe("MISS");
      await res.json();
      await res.settled();
    }
    const stranger = (await createKey(E, { name: "another client", scopes: ["caption"] })).key;
    const same = await edge(E, `/v1/captions?seed=${seed}`, {
      method: "POST",
      headers: { ...bearer(stranger), "content-type": "image/jpeg" },
      body: small as Uint8Array<ArrayBuffer>,
    });
    expect(same.headers.get("x-cache")).toBe("HIT");
  });
});

describe("tensor cache (R2)", () => {
  it("keys tensors by sha256 of the source + PREPROCESS_VERSION + orientation + quality; a new question on the same image skips decode", async () => {
    const image = await fixture("fixtures/coffee.png");
    const item = manifest.find((i) => i.file === "coffee.png")!;
    const question = `What colour is the cup? (${nextSeed()})`;
    const first = await raw(`/v1/vqa?question=${encodeURIComponent(question)}`, image);
    expect(first.status).toBe(200);
    await first.json();
    await first.settled();
    const object = await env.TENSOR_CACHE.get(`tensors/${PREPROCESS_VERSION}/apply/exact/${await sha256Hex(image)}`);
    expect(object).not.toBeNull();
    expect(object!.customMetadata).toMatchObject({ sha256: item.reference_f16_sha256, width: "600", height: "400", dct_scale: "1" });
    const bytes = new Uint8Array(await object!.arrayBuffer());
    expect(bytes.byteLength).toBe(3 * 448 * 448 * 2);
    expect(await sha256Hex(bytes)).toBe(item.reference_f16_sha256);

    const second = await raw(`/v1/vqa?question=${encodeURIComponent(`${question}?`)}`, image);
    expect(second.headers.get("x-cache")).toBe("MISS");
    expect(detail(second)).toBe("result=miss; source=none; tensor=hit");
    expect(second.headers.get("server-timing")).toContain("decode;dur=0.0");
    const answer = (await second.json()) as { answer: string };
    expect(answer.answer).toContain(`sha256=${item.reference_f16_sha256}`); // the node got the cached tensor, intact
    await second.settled();

    const ignored = await raw(`/v1/vqa?orientation=ignore&question=${encodeURIComponent(question)}`, image);
    expect(detail(ignored)).toMatch(/tensor=miss/);
    await ignored.json();
    await ignored.settled();
    expect(await env.TENSOR_CACHE.head(`tensors/${PREPROCESS_VERSION}/ignore/exact/${await sha256Hex(image)}`)).not.toBeNull();
  });
});

describe("source cache (Cache API)", () => {
  const url = (cc: string | null, tag: string) =>
    `${env.CACHE_ORIGIN}/img/subsample422.jpg?${cc === null ? "" : `cc=${encodeURIComponent(cc)}&`}v=${tag}`;
  const count = async (u: string) => {
    const path = u.slice(u.indexOf("/img/"));
    return ((await (await fetch(`${env.CACHE_ORIGIN}/count?path=${encodeURIComponent(path)}`)).json()) as { count: number }).count;
  };
  const ask = async (image: string, headers: Record<string, string> = {}, e = E) => {
    const res = await edge(e, "/v1/vqa", {
      method: "POST",
      headers: { ...bearer(key), "content-type": "application/json", ...headers },
      body: JSON.stringify({ image, question: `Q${nextSeed()}` }),
    });
    expect(res.status).toBe(200);
    await res.json();
    await res.settled();
    return detail(res);
  };

  it("keeps an image as long as its origin's Cache-Control allows; no-cache refetches", async () => {
    const u = url("public, max-age=600", `${nextSeed()}`);
    expect(await ask(u)).toMatch(/^result=miss; source=miss; tensor=(miss|hit)$/); // the same bytes may be in R2 already
    expect(await ask(u)).toBe("result=miss; source=hit; tensor=hit");
    expect(await count(u)).toBe(1);
    expect(await ask(u, { "cache-control": "no-cache" })).toBe("result=bypass; source=bypass; tensor=bypass");
    expect(await count(u)).toBe(2);
  });

  it.each([
    ["no-store", "no-store"],
    ["private", "private, max-age=600"],
    ["max-age=0", "max-age=0"],
    ["no cache headers at all", null],
  ])("does not keep an image whose origin says %s", async (_name, cc) => {
    const u = url(cc, `${nextSeed()}`);
    expect(await ask(u)).toMatch(/source=miss/);
    expect(await ask(u)).toMatch(/source=miss; tensor=hit/);
    expect(await count(u)).toBe(2);
  });

  it("SOURCE_CACHE_MAX_TTL_S=0 keeps nothing, whatever the origin allows", async () => {
    const off = envWithNode(NODE, { SOURCE_CACHE_MAX_TTL_S: "0" });
    const u = url("max-age=600", `${nextSeed()}`);
    await ask(u, {}, off);
    await ask(u, {}, off);
    expect(await count(u)).toBe(2);
  });
});

describe("coalescing", () => {
  it("10 identical requests at once reach the GPU once; every client gets the whole answer, streamed or not", async () => {
    const seed = nextSeed();
    const image = await fixture("fixtures/brushes_1.5mp_prog444.jpg");
    const before = await gpuCalls();
    const responses = await Promise.all(
      Array.from({ length: 10 }, (_, i) => raw(`/v1/captions?seed=${seed}${i % 2 ? "&stream=true" : ""}`, image)),
    );
    const captions: string[] = [];
    for (const [i, res] of responses.entries()) {
      expect(res.status).toBe(200);
      if (i % 2) captions.push(JSON.parse((await events(res)).at(-1)!.data).caption);
      else captions.push(((await res.json()) as { caption: string }).caption);
    }
    await Promise.all(responses.map((r) => r.settled()));
    expect(new Set(captions).size).toBe(1);
    expect(captions[0]).toContain("[simulated]");
    expect(await gpuCalls()).toBe(before + 1);
    const verdicts = responses.map((r) => r.headers.get("x-cache"));
    expect(verdicts.filter((v) => v === "MISS")).toHaveLength(1);
    expect(verdicts.filter((v) => v === "HIT")).toHaveLength(9);
    // One decode too: the other nine joined the first one's preprocessing.
    expect(responses.filter((r) => /tensor=miss/.test(detail(r)))).toHaveLength(1);
  });

  it("a participant that leaves does not stop the others; the last one leaving cancels the GPU work", async () => {
    const cancelledOnNode = async () => {
      await gpuCalls();
      const text = await (await fetch(`${NODE}/metrics`)).text();
      return text
        .split("\n")
        .filter((l) => l.startsWith("qvl_node_requests_total{") && l.includes('outcome="cancelled"'))
        .reduce((n, l) => n + Number(l.split(" ").at(-1)), 0);
    };
    const start = (seed: number) => {
      const controller = new AbortController();
      const res = edge(E, `/v1/captions?seed=${seed}&stream=true`, {
        method: "POST",
        headers: { ...bearer(key), "content-type": "image/jpeg" },
        body: small as Uint8Array<ArrayBuffer>,
        signal: controller.signal,
      });
      return { controller, res };
    };
    const firstChunk = async (res: Response) => {
      const reader = res.body!.getReader();
      await reader.read();
      return reader;
    };

    // Two share one generation; the first leaves after its first bytes; the second gets the whole answer.
    const seed = nextSeed();
    const before = await gpuCalls();
    const a = start(seed);
    const b = start(seed);
    const [ra, rb] = await Promise.all([a.res, b.res]);
    const readerA = await firstChunk(ra);
    a.controller.abort();
    await readerA.cancel().catch(() => {});
    const done = (await events(rb)).at(-1)!;
    expect(done.event).toBe("done");
    expect(JSON.parse(done.data).caption).toContain("[simulated]");
    expect(await gpuCalls()).toBe(before + 1);

    // Alone, leaving cancels the node's work.
    const cancelledBefore = await cancelledOnNode();
    const c = start(nextSeed());
    const readerC = await firstChunk(await c.res);
    c.controller.abort();
    await readerC.cancel().catch(() => {});
    await new Promise((r) => setTimeout(r, 200));
    expect(await cancelledOnNode()).toBe(cancelledBefore + 1);
  });

  it("x-cache is on every response of the cached routes, errors included", async () => {
    const res = await raw("/v1/captions", new Uint8Array([1, 2, 3]));
    expect(res.status).toBe(415);
    expect(res.headers.get("x-cache")).toBe("MISS");
  });
});
