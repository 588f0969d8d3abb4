/**
 * POST /v1/tensors inside workerd over every fixture: the u8 image equals Pillow's byte for byte, the
 * f16 tensor's sha256 equals the reference, EXIF orientation is applied by default, and every bad
 * input gets its specific error.
 */
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import manifest from "../fixtures/images/MANIFEST.json";
import { fixture, type ManifestItem, sha256Hex, TOKEN } from "./helpers";

const items = manifest.items as ManifestItem[];
const worker = exports.default;

function postTensor(body: BodyInit, query: string, headers: Record<string, string> = {}) {
  return worker.fetch(`http://edge.test/v1/tensors?${query}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/octet-stream", ...headers },
    body,
  });
}

describe("every fixture image matches Pillow", () => {
  it.each(items.map((i) => [i.file, i] as const))("%s", async (_name, item) => {
    const bytes = await fixture(`fixtures/${item.file}`);

    const u8 = await postTensor(bytes, "format=u8&orientation=ignore");
    expect(u8.status).toBe(200);
    expect(u8.headers.get("x-tensor-shape")).toBe("448,448,3");
    expect(u8.headers.get("x-tensor-dtype")).toBe("uint8");
    const rgb = new Uint8Array(await u8.arrayBuffer());
    const reference = await fixture(`fixtures/${item.file}.rgb`);
    expect(rgb.length).toBe(reference.length);
    // Byte for byte (compared as a whole: a failure names the first differing offset).
    const firstDiff = rgb.findIndex((v, i) => v !== reference[i]);
    expect(firstDiff).toBe(-1);
    expect(await sha256Hex(rgb)).toBe(item.reference_rgb_sha256);

    const f16 = await postTensor(bytes, "format=f16&orientation=ignore");
    expect(f16.status).toBe(200);
    expect(f16.headers.get("x-tensor-shape")).toBe("3,448,448");
    expect(f16.headers.get("x-tensor-dtype")).toBe("float16");
    const tensor = await f16.arrayBuffer();
    expect(tensor.byteLength).toBe(3 * 448 * 448 * 2);
    expect(await sha256Hex(tensor)).toBe(item.reference_f16_sha256);
    expect(f16.headers.get("x-tensor-sha256")).toBe(item.reference_f16_sha256);
    expect(f16.headers.get("x-request-id")).toMatch(/\S+/);
    expect(f16.headers.get("server-timing")).toMatch(/fetch;dur=[\d.]+, decode;dur=[\d.]+, resize;dur=[\d.]+, normalize;dur=[\d.]+/);

    // Default orientation: applied. Equal to the reference unless the file has an EXIF orientation.
    const oriented = await postTensor(bytes, "format=u8");
    const orientedBytes = new Uint8Array(await oriented.arrayBuffer());
    if (item.oriented_rgb_sha256) {
      const expected = await fixture(`fixtures/${item.file}.oriented.rgb`);
      expect(orientedBytes.findIndex((v, i) => v !== expected[i])).toBe(-1);
      expect(await sha256Hex(orientedBytes)).toBe(item.oriented_rgb_sha256);
      expect(oriented.headers.get("x-orientation-applied")).toBe("true");
      expect(Number(oriented.headers.get("x-image-width"))).toBe(item.height); // rotated 90°
    } else {
      expect(await sha256Hex(orientedBytes)).toBe(item.reference_rgb_sha256);
    }
  });

  it("the oriented f16 tensor of the EXIF photo matches too", async () => {
    const item = items.find((i) => i.oriented_f16_sha256)!;
    const res = await postTensor(await fixture(`fixtures/${item.file}`), "format=f16&orientation=apply");
    expect(res.headers.get("x-tensor-sha256")).toBe(item.oriented_f16_sha256);
  });
});

const BAD: Array<[file: string, status: number, code: string]> = [
  ["empty.jpg", 400, "missing_image"],
  ["html_as_image.jpg", 415, "unsupported_image_format"],
  ["svg.svg", 415, "unsupported_image_format"],
  ["random_4k.bin", 415, "unsupported_image_format"],
  ["jpeg_sof_65500x65500.jpg", 413, "image_too_large"],
  ["png_bomb_30000x30000.png", 413, "image_too_large"],
  ["png_bad_crc.png", 422, "image_decode_failed"],
  ["truncated_half.jpg", 422, "image_decode_failed"],
];

describe("bad inputs get their specific error", () => {
  it.each(BAD)("%s → %i %s", async (file, status, code) => {
    const res = await postTensor(await fixture(`bad/${file}`), "format=f16");
    expect(res.status).toBe(status);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const body = (await res.json()) as { error: { code: string; message: string; type: string; param: string | null } };
    expect(body.error.code).toBe(code);
    expect(body.error.message.length).toBeGreaterThan(10);
    expect(body.error.message).not.toMatch(/at \w+ \(|\.ts:\d+|wasm-function/); // no stack or internals
    expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
  });

  it("the edge still works after every bad input", async () => {
    const res = await postTensor(await fixture("fixtures/upscale_120x80.jpg"), "format=u8&orientation=ignore");
    expect(res.status).toBe(200);
    expect(await sha256Hex(await res.arrayBuffer())).toBe(items.find((i) => i.file === "upscale_120x80.jpg")!.reference_rgb_sha256);
  });

  it("a configurable pixel cap is enforced from the header", async () => {
    // 20 MP photo against the default 50 MP cap: accepted. The cap itself is covered in probe tests.
    const res = await postTensor(await fixture("fixtures/kleiber_20mp.jpg"), "format=u8&orientation=ignore");
    expect(res.status).toBe(200);
  });
});

describe("the route's own contract", () => {
  it("refuses a missing or wrong bearer token with 401 and WWW-Authenticate", async () => {
    for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: "Basic abc" }] as Record<string, string>[]) {
      const res = await worker.fetch("http://edge.test/v1/tensors", { method: "POST", headers, body: "x" });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_api_key");
    }
  });

  it("refuses bad query parameters with 400 naming the parameter", async () => {
    const res = await postTensor(new Uint8Array([0xff, 0xd8, 0xff]), "format=f32");
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; param: string } };
    expect(body.error).toMatchObject({ code: "invalid_request", param: "format" });
  });

  it("refuses an unsupported content type with 415", async () => {
    const res = await postTensor("hello", "format=u8", { "content-type": "text/plain" });
    expect(res.status).toBe(415);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unsupported_media_type");
  });

  it("refuses a body over the byte cap with 413 while reading it", async () => {
    const big = new Uint8Array(20_000_001);
    big.set([0xff, 0xd8, 0xff]);
    const res = await postTensor(big, "format=u8");
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("image_too_large");
  });

  it("takes JSON with a data: URI", async () => {
    const item = items.find((i) => i.file === "palette_trns.png")!;
    const bytes = await fixture(`fixtures/${item.file}`);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    const res = await postTensor(JSON.stringify({ image_url: `data:image/png;base64,${btoa(binary)}` }), "format=f16", {
      "content-type": "application/json",
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-tensor-sha256")).toBe(item.reference_f16_sha256);
  });

  it("takes JSON with an image URL (loopback allowed in this test configuration)", async () => {
    const { env } = await import("cloudflare:workers");
    const item = items.find((i) => i.file === "photo.webp")!;
    const res = await postTensor(JSON.stringify({ image_url: `${env.LOOPBACK_ORIGIN}/fixtures/${item.file}` }), "format=f16", {
      "content-type": "application/json",
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-tensor-sha256")).toBe(item.reference_f16_sha256);
    expect(res.headers.get("server-timing")).toMatch(/^fetch;dur=\d/);
  });

  it("answers JSON errors for malformed JSON and missing image_url", async () => {
    for (const body of ["{not json", JSON.stringify({ url: "x" })]) {
      const res = await postTensor(body, "format=f16", { "content-type": "application/json" });
      expect(res.status).toBe(400);
    }
  });

  it("answers 404 in the error shape for unknown routes, with a request id", async () => {
    const res = await worker.fetch("http://edge.test/nope");
    expect(res.status).toBe(404);
    expect(res.headers.get("x-request-id")).toMatch(/\S+/);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });
});
