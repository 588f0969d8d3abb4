/**
 * `quality: "fast"` inside workerd: JPEGs decoded with libjpeg's DCT scaling at `fastDctScale` (the scale
 * Pillow's `draft()` picks when asked for 1.5 × 448), then the same Pillow-exact resampler. For every JPEG
 * fixture: the scale is `fastDctScale` of the stored size (the orientation does not change it), the u8
 * image equals Pillow's own `draft((672, 672))` + `resize` byte for byte, its PSNR against Pillow's exact
 * reference is ≥ 40 dB (bit for bit where the scale is 1), and the figures are printed.
 * Exact mode stays byte-identical (also checked here; the full matrix is in test/workers/tensors.test.ts).
 */
import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import manifest from "../../test/fixtures/images/MANIFEST.json";
import { fixture as fetchFixture, type ManifestItem, TOKEN } from "../../test/workers/helpers";
import { FAST_DRAFT_HEADROOM, fastDctScale, pillowDraftScale } from "./codecs/libjpeg-turbo/index";
import { getCodecs } from "./codecs/worker";
import { preprocessImage } from "./pipeline";

type Item = ManifestItem & { kind?: string };
const items = manifest.items as Item[];
const jpegs = items.filter((i) => i.format === "JPEG");

/** All fixtures fetched up front (see resample.test.ts: the loopback server drops idle connections). */
const files = new Map<string, Uint8Array>();
beforeAll(async () => {
  const paths = jpegs.flatMap((i) => [`fixtures/${i.file}`, `fixtures/${i.file}.rgb`]);
  for (const i of jpegs) if (i.oriented_rgb_sha256) paths.push(`fixtures/${i.file}.oriented.rgb`);
  paths.push("fixtures/astronaut.png", "fixtures/astronaut.png.rgb");
  for (const path of paths) files.set(path, await fetchFixture(path).catch(() => fetchFixture(path)));
});
const fixture = (path: string): Uint8Array => {
  const bytes = files.get(path);
  if (!bytes) throw new Error(`fixture ${path} was not fetched`);
  return bytes;
};

/** PSNR (dB, over all bytes, peak 255; Infinity when equal) and the largest absolute difference. */
function compare(a: Uint8Array, b: Uint8Array): { psnr: number; maxErr: number } {
  expect(a.length).toBe(b.length);
  let sse = 0;
  let maxErr = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    sse += d * d;
    if (d > maxErr) maxErr = d;
    else if (-d > maxErr) maxErr = -d;
  }
  const mse = sse / a.length;
  return { psnr: mse === 0 ? Number.POSITIVE_INFINITY : 10 * Math.log10((255 * 255) / mse), maxErr };
}

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)];

/**
 * sha256 of Pillow 9.4's own fast path for each file (Debian's python3-pil, same libjpeg-turbo 2.1.5), asked
 * for 1.5 × 448 (see fastDctScale): `im = Image.open(p); im.draft(im.mode, (672, 672));
 * im.convert("RGB").resize((448, 448), BICUBIC).tobytes()`. Fast mode reproduces it byte for byte; where
 * draft keeps the full scale (the 1.7 MP photos) that is Pillow's exact reference.
 */
const PILLOW_DRAFT_RGB_SHA256: Record<string, string> = {
  "sunset_12mp_prog.jpg": "ddd44613fcc9074629069d5e15c87bd39f135556d4f734e7b522c14419007911",
  "brushes_1.5mp_prog444.jpg": "f5248875c0ae9fede519fc1d7c9dc3a7997f4dbf34f29289a23a16148070a74f",
  "dune_1.8mp.jpg": "6f9fe9317c8c35e4e94cf1519b65b94b323e88437434f9b4f8b5feb0274e95ff",
  "kleiber_20mp.jpg": "4891fbe8c871a0a7e57a5fd537c212696a7f63e83dcc3f75c1dafb308c96239c",
  "gray.jpg": "916fb102227d3d81aff784d267b3482db07ba0b523039d669d226e7986e8b068",
  "cmyk.jpg": "ffcadc452b16e1ebea65c28b171812d835af33747a70787dbf3f4e8c675d9ef0",
  "exif_rot6_4032x3024.jpg": "4c17aebce725444e1268d2747b574ac4a0f7f97e56a81dd67b3f9063874feafa",
  "subsample422.jpg": "b8b303d92dbd29a325c5ac06fcdd59da1e86edf16df9e50c68c53d5a80e46815",
  "upscale_120x80.jpg": "205d663e1ce9cd5241dcbc9644a19a920e2650a7764c3ff1c53b09b6154ed40c",
};

describe("fast mode's scale rule", () => {
  it("is Pillow's draft() asked for 1.5× the output", () => {
    expect(FAST_DRAFT_HEADROOM).toBe(1.5);
    // brushes_1.5mp_prog444: draft((448, 448)) would take 1/2 (683×537, 38.6 dB); with 1.5× headroom: full scale
    expect(pillowDraftScale(1365, 1074, 448, 448)).toBe(2);
    expect(fastDctScale(1365, 1074, 448, 448)).toBe(1);
    expect(fastDctScale(4032, 3024, 448, 448)).toBe(4); // 1008×756 left: 1.69× for the resampler
    expect(fastDctScale(6028, 3391, 448, 448)).toBe(4);
    expect(fastDctScale(8064, 6048, 448, 448)).toBe(8); // 48 MP: 1008×756
    expect(fastDctScale(1344, 1344, 448, 448)).toBe(2); // exactly 2 × 672
    expect(fastDctScale(1343, 1344, 448, 448)).toBe(1);
  });
});

const report: string[] = [];

describe("fast mode against Pillow's exact reference", () => {
  it.each(jpegs.map((i) => [i.file, i] as const))("%s", async (_name, item) => {
    const bytes = fixture(`fixtures/${item.file}`);
    const reference = fixture(`fixtures/${item.file}.rgb`);
    const codecs = getCodecs();
    const scale = fastDctScale(item.width, item.height, 448, 448);

    const exact = await preprocessImage(bytes, codecs, { format: "u8", orientation: "ignore" });
    expect(exact.quality).toBe("exact");
    expect(exact.dctScale).toBe(1);
    expect(exact.tensor.findIndex((v, i) => v !== reference[i])).toBe(-1);

    const fast = await preprocessImage(bytes, codecs, { format: "u8", orientation: "ignore", quality: "fast" });
    expect(fast.quality).toBe("fast");
    expect(fast.dctScale).toBe(scale);
    expect(fast.shape).toEqual([448, 448, 3]);
    // the size reported is the stored image's, whatever the decode scale
    expect([fast.width, fast.height]).toEqual([item.width, item.height]);
    if (PILLOW_DRAFT_RGB_SHA256[item.file]) expect(fast.sha256).toBe(PILLOW_DRAFT_RGB_SHA256[item.file]);
    const { psnr, maxErr } = compare(fast.tensor, reference);
    if (scale === 1) expect(fast.tensor.findIndex((v, i) => v !== reference[i])).toBe(-1);
    else expect(psnr).toBeGreaterThanOrEqual(40);

    // the f16 tensor follows the u8 image (same normalization)
    const fastF16 = await preprocessImage(bytes, codecs, { format: "f16", orientation: "ignore", quality: "fast" });
    expect(fastF16.dctScale).toBe(scale);
    if (scale === 1) expect(fastF16.sha256).toBe(item.reference_f16_sha256);

    // timings (the isolate's clock advances on I/O only in production; in tests it is real time)
    const times = { exact: [] as number[], fast: [] as number[] };
    for (let r = 0; r < 3; r++) {
      for (const quality of ["exact", "fast"] as const) {
        const res = await preprocessImage(bytes, codecs, { format: "u8", orientation: "ignore", quality });
        times[quality].push(res.timingMs.total);
      }
    }
    const line =
      `${item.file.padEnd(28)} ${`${item.width}x${item.height}`.padStart(9)} 1/${scale}  ` +
      `PSNR ${Number.isFinite(psnr) ? `${psnr.toFixed(2)} dB` : "inf (identical)"}  max err ${maxErr}  ` +
      `exact ${median(times.exact).toFixed(0)} ms  fast ${median(times.fast).toFixed(0)} ms`;
    report.push(line);
    console.log(`fast mode: ${line}`);
  });

  it("applies the EXIF orientation after the scaled decode (draft picks the scale on the stored image)", async () => {
    for (const item of jpegs.filter((i) => i.oriented_rgb_sha256)) {
      const bytes = fixture(`fixtures/${item.file}`);
      const reference = fixture(`fixtures/${item.file}.oriented.rgb`);
      const codecs = getCodecs();
      const fast = await preprocessImage(bytes, codecs, { format: "u8", orientation: "apply", quality: "fast" });
      const ignored = await preprocessImage(bytes, codecs, { format: "u8", orientation: "ignore", quality: "fast" });
      // 448×448 is square: the stored and the oriented request give the same scale
      expect(fast.dctScale).toBe(fastDctScale(item.width, item.height, 448, 448));
      expect(fast.dctScale).toBe(fastDctScale(item.height, item.width, 448, 448));
      expect(fast.dctScale).toBe(ignored.dctScale);
      expect(fast.orientationApplied).toBe(true);
      expect([fast.width, fast.height]).toEqual([item.height, item.width]);
      const { psnr, maxErr } = compare(fast.tensor, reference);
      expect(psnr).toBeGreaterThanOrEqual(40);
      const line = `${item.file} (orientation ${item.exif_orientation} applied) 1/${fast.dctScale}  PSNR ${psnr.toFixed(2)} dB  max err ${maxErr}`;
      report.push(line);
      console.log(`fast mode: ${line}`);
    }
  });

  it("other formats ignore quality (always exact)", async () => {
    const bytes = fixture("fixtures/astronaut.png");
    const fast = await preprocessImage(bytes, getCodecs(), { format: "u8", orientation: "ignore", quality: "fast" });
    expect(fast.dctScale).toBe(1);
    const reference = fixture("fixtures/astronaut.png.rgb");
    expect(fast.tensor.findIndex((v, i) => v !== reference[i])).toBe(-1);
  });

  it("POST /v1/tensors?quality=fast", async () => {
    const item = jpegs.find((i) => i.file.startsWith("sunset"))!;
    const post = (query: string) =>
      exports.default.fetch(`http://edge.test/v1/tensors?${query}`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/octet-stream" },
        body: fixture(`fixtures/${item.file}`),
      });
    const fast = await post("format=u8&quality=fast");
    expect(fast.status).toBe(200);
    expect(fast.headers.get("x-quality")).toBe("fast");
    expect(fast.headers.get("x-dct-scale")).toBe(String(fastDctScale(item.width, item.height, 448, 448)));
    const { psnr } = compare(new Uint8Array(await fast.arrayBuffer()), fixture(`fixtures/${item.file}.rgb`));
    expect(psnr).toBeGreaterThanOrEqual(40);

    const exact = await post("format=u8");
    expect(exact.status).toBe(200);
    expect(exact.headers.get("x-quality")).toBe("exact");
    expect(exact.headers.get("x-dct-scale")).toBe("1");
    await exact.arrayBuffer();

    const bad = await post("quality=turbo");
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: { code: string; param?: string } };
    expect(body.error).toMatchObject({ code: "invalid_request", param: "quality" });
  });

  it("prints the figures", () => {
    console.log(`fast mode vs exact (u8 448×448, PSNR over all bytes):\n${report.join("\n")}`);
    expect(report.length).toBeGreaterThan(0);
  });
});
