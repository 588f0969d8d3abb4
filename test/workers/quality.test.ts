/**
 * Image quality (`exact` | `fast`) on the generation routes, inside workerd with the real bindings (KV,
 * R2, the key's Durable Object) and a simulated GPU node on loopback, which names the sha256 of every
 * tensor it receives: a request's own `quality`, else its key's default, else `exact`; the tensor and
 * result caches never answer one quality with the other's tensor.
 */
import { env } from "cloudflare:workers";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { beforeAll, describe, expect, it } from "vitest";
import { PREPROCESS_VERSION } from "../../src/image/pipeline";
import { hashKey } from "../../src/keys/keys";
import { bearer, edge, envWithNode, fixture, type ManifestItem, sha256Hex, TOKEN } from "./helpers";

const E = envWithNode();
const ALL = ["caption", "vqa", "grounding", "chat"];
let seedCounter = Math.floor(Math.random() * 1e9);
const nextSeed = () => ++seedCounter;
let manifest: ManifestItem[] = [];

beforeAll(async () => {
  manifest = JSON.parse(new TextDecoder().decode(await fixture("fixtures/MANIFEST.json"))).items;
});

/** Creates a key through the admin route (the root key); returns the route's answer. */
async function createKey(
  e: Cloudflare.Env,
  body: { name: string; scopes: string[]; quality?: "exact" | "fast" },
): Promise<{ id: string; key: string; quality: string }> {
  const res = await edge(e, "/v1/keys", {
    method: "POST",
    headers: { ...bearer(TOKEN), "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`create key: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

/** What `POST /v1/tensors` (the preprocessing itself, uncached) gives for these bytes at a quality. */
async function tensorSha(image: Uint8Array, quality: "exact" | "fast"): Promise<{ sha: string; scale: string }> {
  const res = await edge(E, `/v1/tensors?quality=${quality}`, {
    method: "POST",
    headers: { ...bearer(TOKEN), "content-type": "application/octet-stream" },
    body: image as Uint8Array<ArrayBuffer>,
  });
  expect(res.status).toBe(200);
  const sha = res.headers.get("x-tensor-sha256")!;
  expect(await sha256Hex(await res.arrayBuffer())).toBe(sha);
  return { sha, scale: res.headers.get("x-dct-scale")! };
}

function raw(key: string, path: string, image: Uint8Array, headers: Record<string, string> = {}) {
  return edge(E, path, {
    method: "POST",
    headers: { ...bearer(key), "content-type": "image/jpeg", ...headers },
    body: image as Uint8Array<ArrayBuffer>,
  });
}

function json(key: string, path: string, body: unknown) {
  return edge(E, path, {
    method: "POST",
    headers: { ...bearer(key), "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

function multipart(key: string, path: string, image: Uint8Array, fields: Record<string, string>) {
  const form = new FormData();
  form.set("image", new Blob([image as Uint8Array<ArrayBuffer>], { type: "image/jpeg" }), "image.jpg");
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  return edge(E, path, { method: "POST", headers: bearer(key), body: form });
}

const dataUri = (bytes: Uint8Array) => {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return `data:image/jpeg;base64,${btoa(s)}`;
};

/** The sha256 the simulated node says it received (one image per request here). */
function shaSeen(text: string): string {
  const all = [...text.matchAll(/sha256=([0-9a-f]{64})/g)].map((m) => m[1]);
  expect(all).toHaveLength(1);
  return all[0];
}

async function taskText(res: Response): Promise<string> {
  expect(res.status).toBe(200);
  const body = (await res.json()) as { caption?: string; answer?: string; text?: string };
  return body.caption ?? body.answer ?? body.text ?? "";
}

const detail = (res: Response) => res.headers.get("x-cache-detail") ?? "";

describe("a key's default quality, and a request's own", () => {
  let image: Uint8Array;
  let exact: { sha: string; scale: string };
  let fast: { sha: string; scale: string };

  beforeAll(async () => {
    image = await fixture("fixtures/sunset_12mp_prog.jpg"); // 4272×2848: fast decodes it at 1/4
    exact = await tensorSha(image, "exact");
    fast = await tensorSha(image, "fast");
  });

  it("the two tensors differ: exact is Pillow's reference, fast is the 1/4-scale decode", () => {
    const item = manifest.find((i) => i.file === "sunset_12mp_prog.jpg")!;
    expect(exact.sha).toBe(item.reference_f16_sha256);
    expect(exact.scale).toBe("1");
    expect(fast.scale).toBe("4");
    expect(fast.sha).not.toBe(exact.sha);
  });

  it("a key made with quality fast says so, is listed so, and its requests get the fast tensor on every route", async () => {
    const made = await createKey(E, { name: "fast by default", scopes: ALL, quality: "fast" });
    expect(made).toMatchObject({ quality: "fast" });
    const list = (await (await edge(E, "/v1/keys", { headers: bearer(TOKEN) })).json()) as { data: Array<{ id: string; quality: string }> };
    expect(list.data.find((k) => k.id === made.id)).toMatchObject({ quality: "fast" });
    expect(await (await edge(E, `/v1/keys/${made.id}`, { headers: bearer(TOKEN) })).json()).toMatchObject({ quality: "fast" });

    // Captions, raw body.
    const caption = await raw(made.key, `/v1/captions?seed=${nextSeed()}`, image);
    expect(caption.headers.get("x-image-quality")).toBe("fast");
    expect(caption.headers.get("x-image-dct-scale")).toBe("4");
    const captionBody = (await caption.json()) as { caption: string; image: unknown };
    expect(shaSeen(captionBody.caption)).toBe(fast.sha);
    expect(captionBody.image).toEqual({ width: 4272, height: 2848, quality: "fast" });

    // VQA, JSON with a data URI.
    const vqa = await json(made.key, "/v1/vqa", { image: dataUri(image), question: `What is it? ${nextSeed()}` });
    expect(vqa.headers.get("x-image-quality")).toBe("fast");
    expect(shaSeen(await taskText(vqa))).toBe(fast.sha);

    // Grounding, multipart.
    const grounding = await multipart(made.key, "/v1/grounding", image, { expression: `the sunset ${nextSeed()}` });
    expect(grounding.headers.get("x-image-quality")).toBe("fast");
    expect(shaSeen(await taskText(grounding))).toBe(fast.sha);

    // Chat completions.
    const chat = await json(made.key, "/v1/chat/completions", {
      seed: nextSeed(),
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: dataUri(image) } },
            { type: "text", text: "Hi" },
          ],
        },
      ],
    });
    expect(chat.status).toBe(200);
    expect(chat.headers.get("x-image-quality")).toBe("fast");
    expect(chat.headers.get("x-image-dct-scale")).toBe("4");
    const completion = (await chat.json()) as { object: string; choices: Array<{ message: { content: string } }> };
    expect(completion.object).toBe("chat.completion");
    expect(shaSeen(completion.choices[0].message.content)).toBe(fast.sha);
  });

  it("an explicit quality exact overrides the key's fast default: JSON, query string, multipart field, chat", async () => {
    const { key } = await createKey(E, { name: "fast, overridden", scopes: ALL, quality: "fast" });

    const q = await raw(key, `/v1/captions?quality=exact&seed=${nextSeed()}`, image);
    expect(q.headers.get("x-image-quality")).toBe("exact");
    expect(q.headers.get("x-image-dct-scale")).toBe("1");
    expect(shaSeen(await taskText(q))).toBe(exact.sha);

    const j = await json(key, "/v1/vqa", { image: dataUri(image), question: `Q ${nextSeed()}`, quality: "exact" });
    expect(j.headers.get("x-image-quality")).toBe("exact");
    expect(shaSeen(await taskText(j))).toBe(exact.sha);

    const m = await multipart(key, "/v1/grounding", image, { expression: `the sky ${nextSeed()}`, quality: "exact" });
    expect(m.headers.get("x-image-quality")).toBe("exact");
    expect(shaSeen(await taskText(m))).toBe(exact.sha);

    const chat = await json(key, "/v1/chat/completions", {
      seed: nextSeed(),
      quality: "exact",
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: dataUri(image) } },
            { type: "text", text: "Hi" },
          ],
        },
      ],
    });
    expect(chat.headers.get("x-image-quality")).toBe("exact");
    expect(shaSeen(((await chat.json()) as { choices: Array<{ message: { content: string } }> }).choices[0].message.content)).toBe(
      exact.sha,
    );
  });

  it("defaults: a key made without a quality, the root key and a record from before the setting existed are exact; quality fast opts in", async () => {
    const plain = await createKey(E, { name: "default quality", scopes: ALL });
    expect(plain).toMatchObject({ quality: "exact" });
    const p = await raw(plain.key, `/v1/captions?seed=${nextSeed()}`, image);
    expect(p.headers.get("x-image-quality")).toBe("exact");
    expect(shaSeen(await taskText(p))).toBe(exact.sha);
    const opted = await raw(plain.key, `/v1/captions?quality=fast&seed=${nextSeed()}`, image);
    expect(opted.headers.get("x-image-quality")).toBe("fast");
    expect(shaSeen(await taskText(opted))).toBe(fast.sha);

    const root = await raw(TOKEN, `/v1/captions?seed=${nextSeed()}`, image);
    expect(root.headers.get("x-image-quality")).toBe("exact");
    expect(shaSeen(await taskText(root))).toBe(exact.sha);

    // A record as stored before keys had a quality: it still parses, as exact, and lists as exact.
    const old = `qvl_old_${crypto.randomUUID().replaceAll("-", "")}`;
    const hash = await hashKey(old);
    const record = {
      id: `key_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`,
      name: "from before",
      hash,
      prefix: old.slice(0, 8),
      scopes: ["caption"],
      rate: { limit: 60, window_s: 60 },
      quota: null,
      created_at: new Date().toISOString(),
      revoked_at: null,
      webhook_secret: "whsec_x",
    };
    await env.API_KEYS.put(`hash:${hash}`, JSON.stringify(record));
    const { hash: _h, webhook_secret: _w, ...view } = record;
    await env.API_KEYS.put(`id:${record.id}`, hash, { metadata: { ...view, object: "api_key", rate: "60/min" } });
    const before = await raw(old, `/v1/captions?seed=${nextSeed()}`, image);
    expect(before.headers.get("x-image-quality")).toBe("exact");
    expect(shaSeen(await taskText(before))).toBe(exact.sha);
    const list = (await (await edge(E, "/v1/keys", { headers: bearer(TOKEN) })).json()) as { data: Array<{ id: string; quality: string }> };
    expect(list.data.find((k) => k.id === record.id)).toMatchObject({ quality: "exact" });
  });

  it("PATCH /v1/keys/:id changes a key's default: its next request gets the other tensor", async () => {
    const made = await createKey(E, { name: "switched", scopes: ["caption"] });
    const seed = nextSeed();
    const a = await raw(made.key, `/v1/captions?seed=${seed}`, image);
    expect(shaSeen(await taskText(a))).toBe(exact.sha);
    const patched = await edge(E, `/v1/keys/${made.id}`, {
      method: "PATCH",
      headers: { ...bearer(TOKEN), "content-type": "application/json" },
      body: JSON.stringify({ quality: "fast" }),
    });
    expect(patched.status).toBe(200);
    expect(await patched.json()).toMatchObject({ id: made.id, quality: "fast", name: "switched", scopes: ["caption"] });
    const b = await raw(made.key, `/v1/captions?seed=${seed}`, image);
    expect(b.headers.get("x-image-quality")).toBe("fast");
    expect(shaSeen(await taskText(b))).toBe(fast.sha);
    const list = (await (await edge(E, "/v1/keys", { headers: bearer(TOKEN) })).json()) as { data: Array<{ id: string; quality: string }> };
    expect(list.data.find((k) => k.id === made.id)).toMatchObject({ quality: "fast" });
  });
});

describe("caches keep the qualities apart", () => {
  it("exact and fast requests for one image use two tensor-cache objects and two result-cache entries", async () => {
    const image = await fixture("fixtures/exif_rot6_4032x3024.jpg"); // 4032×3024: fast decodes it at 1/4
    const src = await sha256Hex(image);
    const exact = await tensorSha(image, "exact");
    const fast = await tensorSha(image, "fast");
    expect(fast.sha).not.toBe(exact.sha);
    const seed = nextSeed();
    const ask = async (quality: "exact" | "fast") => {
      const res = await raw(TOKEN, `/v1/captions?seed=${seed}&quality=${quality}`, image);
      const text = await taskText(res);
      await res.settled();
      return { res, sha: shaSeen(text), text };
    };

    const e1 = await ask("exact");
    expect(e1.res.headers.get("x-cache")).toBe("MISS");
    expect(e1.sha).toBe(exact.sha);
    const exactObject = await env.TENSOR_CACHE.head(`tensors/${PREPROCESS_VERSION}/apply/exact/${src}`);
    expect(exactObject?.customMetadata).toMatchObject({ sha256: exact.sha, dct_scale: "1" });
    expect(await env.TENSOR_CACHE.head(`tensors/${PREPROCESS_VERSION}/apply/fast/${src}`)).toBeNull();

    // Same image, same prompt, same seed, fast: neither the exact tensor nor the exact answer serves it.
    const f1 = await ask("fast");
    expect(f1.res.headers.get("x-cache")).toBe("MISS");
    expect(detail(f1.res)).toBe("result=miss; source=none; tensor=miss");
    expect(f1.sha).toBe(fast.sha);
    const fastObject = await env.TENSOR_CACHE.get(`tensors/${PREPROCESS_VERSION}/apply/fast/${src}`);
    expect(fastObject?.customMetadata).toMatchObject({ sha256: fast.sha, dct_scale: "4" });
    expect(await sha256Hex(await fastObject!.arrayBuffer())).toBe(fast.sha);
    // The exact object is still the exact tensor.
    const exactBytes = await env.TENSOR_CACHE.get(`tensors/${PREPROCESS_VERSION}/apply/exact/${src}`);
    expect(await sha256Hex(await exactBytes!.arrayBuffer())).toBe(exact.sha);

    // Each now hits its own entries, and only its own.
    const e2 = await ask("exact");
    expect(e2.res.headers.get("x-cache")).toBe("HIT");
    expect(detail(e2.res)).toBe("result=hit; source=none; tensor=hit");
    expect(e2.text).toBe(e1.text);
    const f2 = await ask("fast");
    expect(f2.res.headers.get("x-cache")).toBe("HIT");
    expect(f2.text).toBe(f1.text);
    expect(f2.sha).toBe(fast.sha);
  });

  it("where fast changes nothing (a PNG), both qualities give one tensor, so the answer is shared; the tensor objects stay apart", async () => {
    const image = await fixture("fixtures/rgba.png");
    const src = await sha256Hex(image);
    expect((await tensorSha(image, "fast")).sha).toBe((await tensorSha(image, "exact")).sha);
    const seed = nextSeed();
    const e = await raw(TOKEN, `/v1/captions?seed=${seed}&quality=exact`, image);
    const eText = await taskText(e);
    await e.settled();
    expect(e.headers.get("x-cache")).toBe("MISS");
    const f = await raw(TOKEN, `/v1/captions?seed=${seed}&quality=fast`, image);
    expect(f.headers.get("x-image-quality")).toBe("fast");
    expect(f.headers.get("x-image-dct-scale")).toBe("1");
    expect(detail(f)).toBe("result=hit; source=none; tensor=miss");
    expect(await taskText(f)).toBe(eText);
    await f.settled();
    const objects = await Promise.all(
      ["exact", "fast"].map((q) => env.TENSOR_CACHE.head(`tensors/${PREPROCESS_VERSION}/apply/${q}/${src}`)),
    );
    expect(objects.map((o) => o?.customMetadata?.sha256)).toEqual([shaSeen(eText), shaSeen(eText)]);
  });

  it("exact and fast requests in flight at the same time are not coalesced into one answer", async () => {
    const image = await fixture("fixtures/kleiber_20mp.jpg"); // 6028×3391: fast decodes it at 1/4
    const seed = nextSeed();
    const [a, b] = await Promise.all(
      (["exact", "fast"] as const).map((quality) => raw(TOKEN, `/v1/captions?seed=${seed}&quality=${quality}&stream=true`, image)),
    );
    const done = async (res: Response) => {
      const out: EventSourceMessage[] = [];
      const parser = createParser({ onEvent: (e) => out.push(e) });
      parser.feed(await res.text());
      return JSON.parse(out.at(-1)!.data) as { caption: string; image: { quality: string } };
    };
    const [da, db] = await Promise.all([done(a), done(b)]);
    expect([a.headers.get("x-cache"), b.headers.get("x-cache")]).toEqual(["MISS", "MISS"]);
    expect([detail(a), detail(b)].every((d) => /^result=miss; source=none; tensor=miss$/.test(d))).toBe(true);
    expect(da.image.quality).toBe("exact");
    expect(db.image.quality).toBe("fast");
    expect(shaSeen(da.caption)).toBe((await tensorSha(image, "exact")).sha);
    expect(shaSeen(db.caption)).toBe((await tensorSha(image, "fast")).sha);
  });
});

describe("validation", () => {
  it("an unknown quality is 400 invalid_request naming quality, in every way a request can carry it", async () => {
    const image = await fixture("fixtures/upscale_120x80.jpg");
    const responses: Array<[string, Response]> = [
      ["query", await raw(TOKEN, "/v1/captions?quality=turbo", image)],
      ["json", await json(TOKEN, "/v1/vqa", { image: dataUri(image), question: "Q", quality: "best" })],
      ["multipart", await multipart(TOKEN, "/v1/grounding", image, { expression: "x", quality: "FAST" })],
      [
        "chat",
        await json(TOKEN, "/v1/chat/completions", {
          quality: 1,
          messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: dataUri(image) } }] }],
        }),
      ],
      ["create key", await json(TOKEN, "/v1/keys", { name: "x", scopes: ["caption"], quality: "turbo" })],
    ];
    for (const [how, res] of responses) {
      expect(res.status, how).toBe(400);
      const body = (await res.json()) as { error: Record<string, unknown> };
      expect(body, how).toEqual({
        error: { message: expect.stringContaining("quality"), type: "invalid_request_error", param: "quality", code: "invalid_request" },
      });
    }
  });

  it("PATCH /v1/keys/:id validates: an unknown quality, an unknown field or nothing at all is 400; an unknown id 404; a revoked key 400", async () => {
    const made = await createKey(E, { name: "patched", scopes: ["caption"] });
    const patch = (id: string, body: unknown) =>
      edge(E, `/v1/keys/${id}`, {
        method: "PATCH",
        headers: { ...bearer(TOKEN), "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const bad = await patch(made.id, { quality: "turbo" });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: { code: "invalid_request", param: "quality" } });
    expect((await patch(made.id, { scopes: ["admin"] })).status).toBe(400); // scopes do not change
    expect((await patch(made.id, {})).status).toBe(400);
    expect((await patch("key_0123456789abcdef01234567", { quality: "fast" })).status).toBe(404);
    // Nothing changed by the refusals.
    expect(await (await edge(E, `/v1/keys/${made.id}`, { headers: bearer(TOKEN) })).json()).toMatchObject({
      quality: "exact",
      scopes: ["caption"],
    });
    // Other settings change too.
    const renamed = await patch(made.id, { name: "renamed", rate: "10/min", quota: 5 });
    expect(await renamed.json()).toMatchObject({ name: "renamed", rate: "10/min", quota: 5, quality: "exact" });
    expect(await (await patch(made.id, { quota: null })).json()).toMatchObject({ quota: null });
    await edge(E, `/v1/keys/${made.id}`, { method: "DELETE", headers: bearer(TOKEN) });
    const revoked = await patch(made.id, { quality: "fast" });
    expect(revoked.status).toBe(400);
    expect(await revoked.json()).toMatchObject({ error: { code: "invalid_request", param: "id" } });
  });

  it("a key without the admin scope cannot change keys", async () => {
    const { id, key } = await createKey(E, { name: "not admin", scopes: ALL });
    const res = await edge(E, `/v1/keys/${id}`, {
      method: "PATCH",
      headers: { ...bearer(key), "content-type": "application/json" },
      body: JSON.stringify({ quality: "fast" }),
    });
    expect(res.status).toBe(403);
  });
});
