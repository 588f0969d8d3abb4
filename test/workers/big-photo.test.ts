/**
 * A 48 MP baseline JPEG (8064×6048, made from a fixture photo by scripts/lib/big-photo.ts and served by the
 * loopback test server) through POST /v1/tensors inside workerd: the streamed decode keeps the pipeline's
 * peak memory (wasm heap + pixel buffers, `x-peak-bytes`) within 64 MiB in exact and fast mode, where a
 * whole-image decode would hold 8064 × 6048 × 3 = 146 MB of pixels. The photo is the fixture upscaled 2×,
 * so its 448×448 image must come out close to the fixture's own Pillow reference. The same pixels as a
 * progressive JPEG need libjpeg's whole-image coefficient buffer (≈ 140 MiB): refused with 413 from the
 * header's budget, in both qualities (libjpeg keeps every coefficient of a progressive file whatever the scale).
 */
import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { fixture, TOKEN } from "./helpers";

const MiB = 1024 * 1024;
let photo: Uint8Array;
let progressive: Uint8Array;
let reference: Uint8Array;

beforeAll(async () => {
  photo = await fixture("generated/photo_48mp_baseline.jpg");
  progressive = await fixture("generated/photo_48mp_progressive.jpg");
  reference = await fixture("fixtures/exif_rot6_4032x3024.jpg.rgb");
}, 60_000);

function psnr(a: Uint8Array, b: Uint8Array): number {
  let sse = 0;
  for (let i = 0; i < a.length; i++) sse += (a[i] - b[i]) ** 2;
  return 10 * Math.log10((255 * 255) / (sse / a.length));
}

describe("a 48 MP baseline JPEG", () => {
  it.each(["exact", "fast"] as const)("quality=%s: 200, peak ≤ 64 MiB, the fixture's picture", async (quality) => {
    const res = await exports.default.fetch(`http://edge.test/v1/tensors?format=u8&orientation=ignore&quality=${quality}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "image/jpeg" },
      body: photo,
    });
    const body = new Uint8Array(await res.arrayBuffer());
    expect(res.status, new TextDecoder().decode(body.slice(0, 300))).toBe(200);
    expect(res.headers.get("x-tensor-shape")).toBe("448,448,3");
    expect(res.headers.get("x-dct-scale")).toBe(quality === "exact" ? "1" : "8");
    const peak = Number(res.headers.get("x-peak-bytes"));
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(64 * MiB);
    const similarity = psnr(body, reference);
    console.log(`48 MP ${quality}: peak ${(peak / MiB).toFixed(1)} MiB, PSNR vs the fixture's reference ${similarity.toFixed(1)} dB`);
    expect(similarity).toBeGreaterThan(45); // measured: 52.9 dB exact, 50.5 dB fast
  });

  it.each(["exact", "fast"] as const)(
    "progressive, quality=%s: 413 image_too_large before decoding (its coefficient buffer cannot fit)",
    async (quality) => {
      const res = await exports.default.fetch(`http://edge.test/v1/tensors?format=u8&quality=${quality}`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "image/jpeg" },
        body: progressive,
      });
      expect(res.status).toBe(413);
      const body = (await res.json()) as { error: { code: string; message: string; param?: string } };
      expect(body.error.code).toBe("image_too_large");
      expect(body.error.param).toBe("image");
      expect(body.error.message).toMatch(/memory/i);
      expect(body.error.message).toMatch(/baseline JPEG/);
    },
  );
});
