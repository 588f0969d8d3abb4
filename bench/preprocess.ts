/**
 * `npm run bench:preprocess`: per fixture image (and a 48 MP baseline JPEG made from one, see
 * scripts/lib/big-photo.ts), side by side in one run:
 *   - ours inside workerd: the built Worker served by workerd through Miniflare; the pipeline's own time
 *     (`server-timing`: decode + resize + normalize) and the client's wall time around POST /v1/tensors;
 *   - ours in Node: the same wasm and JS, in-process (scripts/lib/node-codecs.ts);
 *   - the previous decoder: @jsquash/jpeg (MozJPEG, whole image to RGBA) + our JS Pillow resampler, in Node;
 *   - Pillow (Qwen-VL's reference: `/usr/bin/python3` with Debian's python3-pil), in-process; for JPEGs also
 *     Pillow's full-size decode alone (`Image.open(p).load()`) and its own DCT-scaled decode (`draft()`, the
 *     same 1/N as our fast mode) + the same resize: the native (SIMD) floor under the exact and fast goals;
 *   - sharp (libvips, native, not exact), for scale.
 * Every path computes the full f16 tensor with EXIF orientation ignored (the reference's semantics).
 * JPEG rows also time fast mode (`quality=fast`) and give its PSNR / max |Δ| against Pillow's exact uint8
 * image, and whether its tensor is byte-identical to Pillow's draft() one. Writes docs/benchmarks.md (the
 * preprocessing section) and docs/benchmarks.json.
 * Env: BENCH_RUNS (default 7, median reported), BENCH_ONLY (substring filter on file names; the 48 MP photo is
 * only generated when it matches), BENCH_RENDER_ONLY=1 (rewrite the section from docs/benchmarks.json without
 * running anything), BENCH_WRITE=0 (print the section and the rows to stdout instead of writing docs/).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import decodeMozjpeg, { init as initMozjpeg } from "@jsquash/jpeg/decode.js";
import { Miniflare } from "miniflare";
import sharp from "sharp";
import { BIG_PHOTO, makeBigPhoto } from "../scripts/lib/big-photo";
import { createNodeCodecs } from "../scripts/lib/node-codecs";
import type { Codecs } from "../src/image/codecs/index";
import { float16Bytes, normalizeToFloat16 } from "../src/image/normalize";
import { orientedView } from "../src/image/orient";
import { preprocessImage, sha256Hex } from "../src/image/pipeline";
import { resizeBicubic } from "../src/image/resize";
import { writeBenchSection } from "./lib/report";

const require = createRequire(import.meta.url);
const root = fileURLToPath(new URL("..", import.meta.url));
const images = `${root}test/fixtures/images/`;
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const WARMUP = 2;
const ONLY = process.env.BENCH_ONLY ?? "";
const WRITE = process.env.BENCH_WRITE !== "0";
const PYTHON = "/usr/bin/python3";
const TOKEN = "bench-token";

interface Item {
  file: string;
  format: string;
  width: number;
  height: number;
  kind: string;
  /** Pillow's f16 sha256 (from the manifest; for the generated photo, from this run's Pillow). */
  reference_f16_sha256: string;
  progressive?: boolean;
}

interface Row {
  file: string;
  megapixels: number;
  bytes: number;
  progressive: boolean;
  /** In workerd: `in_worker_ms` is the pipeline's own time (server-timing), `median_ms` the client's wall time. */
  ours: { median_ms: number; in_worker_ms: number; peak_bytes: number; exact: boolean; server_timing: string };
  /** The same code in Node, in-process. */
  node: { median_ms: number; exact: boolean };
  /** @jsquash/jpeg + the JS resampler in Node (JPEG only); error when it cannot decode the file. */
  previous: { median_ms: number; pixels_bytes: number; exact: boolean } | { error: string } | null;
  pillow: { median_ms: number; peak_rss_growth_bytes: number } | null;
  /**
   * JPEG only: Pillow's own fast path, `im.draft("RGB", (672, 672))` + the same convert, resize and normalize
   * (native libjpeg-turbo, DCT-scaled at 1/dct_scale); sha256 of its f16 tensor. Absent in older JSON.
   */
  pillow_draft?: { median_ms: number; dct_scale: number; sha256: string } | null;
  /** JPEG only: Pillow's full-size decode alone, `Image.open(p).load()` (no convert, no resize). Absent in older JSON. */
  pillow_decode?: { median_ms: number } | null;
  sharp: { median_ms: number; max_abs_diff_u8: number } | null;
  /** quality=fast (JPEG only). */
  fast: {
    median_ms: number;
    in_worker_ms: number;
    node_ms: number;
    dct_scale: number;
    psnr_db: number;
    max_abs_diff_u8: number;
    /** sha256 of the f16 tensor, from workerd and from Node (absent in older JSON). */
    sha256?: string;
    node_sha256?: string;
  } | null;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function buildWorker(): string {
  const outdir = `${root}.bench/dist`;
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", outdir], {
    cwd: root,
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
  });
  return `${outdir}/index.js`;
}

/** A pooled connection that sat idle (Pillow's runs of the same file take seconds) may have been closed by workerd. */
const staleConnection = (err: unknown) =>
  err instanceof TypeError && /EPIPE|ECONNRESET|UND_ERR_SOCKET|other side closed/.test(String((err as { cause?: unknown }).cause));

async function postTensor(
  origin: string,
  item: Item,
  bytes: Uint8Array,
  query: string,
  retried = false,
): Promise<{ res: Response; body: ArrayBuffer }> {
  let res: Response;
  try {
    res = await fetch(`${origin}/v1/tensors?${query}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/octet-stream" },
      body: bytes as Uint8Array<ArrayBuffer>,
    });
  } catch (err) {
    if (!retried && staleConnection(err)) return postTensor(origin, item, bytes, query, true);
    throw err;
  }
  const body = await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`${item.file}: HTTP ${res.status} ${new TextDecoder().decode(body)}`);
  return { res, body };
}

/** decode + resize + normalize from a `server-timing` header (the pipeline's steps; not auth or fetch). */
function pipelineMs(serverTiming: string): number {
  let sum = 0;
  for (const m of serverTiming.matchAll(/(decode|resize|normalize);dur=([\d.]+)/g)) sum += Number(m[2]);
  return sum;
}

async function timeTensor(origin: string, item: Item, bytes: Uint8Array, query: string) {
  const times: number[] = [];
  const inWorker: number[] = [];
  let last: Awaited<ReturnType<typeof postTensor>> | undefined;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t = performance.now();
    last = await postTensor(origin, item, bytes, query);
    if (i >= WARMUP) {
      times.push(performance.now() - t);
      inWorker.push(pipelineMs(last.res.headers.get("server-timing") ?? ""));
    }
  }
  return { times, inWorker, res: last!.res, body: last!.body };
}

async function benchOurs(mf: Miniflare, origin: string, item: Item, bytes: Uint8Array): Promise<Row["ours"]> {
  const { times, inWorker, res, body } = await timeTensor(origin, item, bytes, "format=f16&orientation=ignore");
  void mf;
  return {
    median_ms: median(times),
    in_worker_ms: median(inWorker),
    peak_bytes: Number(res!.headers.get("x-peak-bytes")),
    exact: (await sha256Hex(new Uint8Array(body))) === item.reference_f16_sha256,
    server_timing: res!.headers.get("server-timing") ?? "",
  };
}

/** Fast mode (JPEG only): timed like ours (f16), PSNR and max |Δ| of its uint8 image against Pillow's exact one. */
async function benchFast(origin: string, codecs: Codecs, item: Item, referencePath: string, bytes: Uint8Array): Promise<Row["fast"]> {
  if (item.format !== "JPEG") return null;
  const { times, inWorker, body: f16 } = await timeTensor(origin, item, bytes, "format=f16&orientation=ignore&quality=fast");
  const node = await timeNode(codecs, bytes, "fast");
  const { res, body } = await postTensor(origin, item, bytes, "format=u8&orientation=ignore&quality=fast");
  const rgb = new Uint8Array(body);
  const reference = readFileSync(referencePath);
  let sse = 0;
  let maxDiff = 0;
  for (let j = 0; j < rgb.length; j++) {
    const d = rgb[j] - reference[j];
    sse += d * d;
    maxDiff = Math.max(maxDiff, Math.abs(d));
  }
  const mse = sse / rgb.length;
  return {
    median_ms: median(times),
    in_worker_ms: median(inWorker),
    node_ms: node.median_ms,
    dct_scale: Number(res.headers.get("x-dct-scale")),
    psnr_db: mse === 0 ? Number.POSITIVE_INFINITY : 10 * Math.log10((255 * 255) / mse),
    max_abs_diff_u8: maxDiff,
    sha256: await sha256Hex(new Uint8Array(f16)),
    node_sha256: node.sha,
  };
}

/** Our pipeline in Node, in-process: the same wasm and JS as the Worker. */
async function timeNode(codecs: Codecs, bytes: Uint8Array, quality: "exact" | "fast") {
  const times: number[] = [];
  let sha = "";
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t = performance.now();
    const out = await preprocessImage(bytes, codecs, { format: "f16", orientation: "ignore", quality });
    if (i >= WARMUP) times.push(performance.now() - t);
    sha = out.sha256;
  }
  return { median_ms: median(times), sha };
}

async function benchNode(codecs: Codecs, item: Item, bytes: Uint8Array): Promise<Row["node"]> {
  const { median_ms, sha } = await timeNode(codecs, bytes, "exact");
  return { median_ms, exact: sha === item.reference_f16_sha256 };
}

let mozjpegReady: Promise<void> | undefined;

/** The previous JPEG path: MozJPEG (@jsquash/jpeg) decodes the whole image to RGBA, then the JS resampler. */
async function benchPrevious(item: Item, bytes: Uint8Array): Promise<Row["previous"]> {
  if (item.format !== "JPEG") return null;
  mozjpegReady ??= WebAssembly.compile(readFileSync(require.resolve("@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm"))).then((module) =>
    initMozjpeg(module),
  );
  await mozjpegReady;
  const times: number[] = [];
  let sha = "";
  let pixels = 0;
  try {
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const t = performance.now();
      const image = await decodeMozjpeg(bytes.slice().buffer as ArrayBuffer);
      const data = new Uint8Array(image.data.buffer, image.data.byteOffset, image.data.byteLength);
      const rgb = resizeBicubic(
        { width: image.width, height: image.height, data, stride: 4, gray: false },
        orientedView(image.width, image.height, 1),
      );
      const tensor = float16Bytes(normalizeToFloat16(rgb, 448, 448));
      if (i >= WARMUP) times.push(performance.now() - t);
      pixels = data.byteLength;
      if (i === 0) sha = await sha256Hex(tensor);
    }
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
  return { median_ms: median(times), pixels_bytes: pixels, exact: sha === item.reference_f16_sha256 };
}

interface PillowRun {
  median_ms: number;
  peak_rss_growth_bytes: number;
  /** null in decode mode (no tensor). */
  sha256: string | null;
  /** draft mode only. */
  dct_scale?: number;
}

/**
 * bench/pillow_preprocess.py in its own process: `exact` (Qwen-VL's reference), `draft` (DCT-scaled decode at
 * Pillow's 1/N for 672×672, then the same resize) or `decode` (`Image.open(p).load()` alone).
 */
function benchPillow(file: string, mode: "exact" | "draft" | "decode" = "exact", rgbOut?: string): PillowRun | null {
  if (!existsSync(PYTHON)) return null;
  const args = [`${root}bench/pillow_preprocess.py`, file, String(RUNS + WARMUP), ...(rgbOut ? [rgbOut] : []), "--mode", mode];
  const r = spawnSync(PYTHON, args, { encoding: "utf8" });
  if (r.status !== 0) {
    if (/No module named/.test(r.stderr)) return null;
    throw new Error(`pillow (${mode}) failed on ${file}: ${r.stderr}`);
  }
  const out = JSON.parse(r.stdout) as { times_ms: number[]; peak_rss_growth_bytes: number; sha256: string | null; dct_scale?: number };
  return {
    median_ms: median(out.times_ms.slice(WARMUP)),
    peak_rss_growth_bytes: out.peak_rss_growth_bytes,
    sha256: out.sha256,
    ...(out.dct_scale === undefined ? {} : { dct_scale: out.dct_scale }),
  };
}

/**
 * Whether our fast tensor is Pillow's draft() one: same 1/N and same f16 sha256 (workerd's, and Node's where
 * recorded). undefined where either side is missing (not a JPEG, no Pillow, older JSON).
 */
function sameAsPillowDraft(r: Row): boolean | undefined {
  const f = r.fast;
  const d = r.pillow_draft;
  if (!f || !d || !f.sha256) return undefined;
  return d.dct_scale === f.dct_scale && d.sha256 === f.sha256 && (f.node_sha256 === undefined || f.node_sha256 === f.sha256);
}

async function benchSharp(referencePath: string, bytes: Uint8Array): Promise<Row["sharp"]> {
  const reference = readFileSync(referencePath);
  const times: number[] = [];
  let maxDiff = 0;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t = performance.now();
    const { data } = await sharp(bytes, { limitInputPixels: 60_000_000 })
      .resize(448, 448, { fit: "fill", kernel: "cubic" })
      .removeAlpha()
      .toColourspace("srgb")
      .raw()
      .toBuffer({ resolveWithObject: true });
    const rgb = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    float16Bytes(normalizeToFloat16(rgb, 448, 448));
    if (i >= WARMUP) times.push(performance.now() - t);
    if (i === 0) for (let j = 0; j < rgb.length; j++) maxDiff = Math.max(maxDiff, Math.abs(rgb[j] - reference[j]));
  }
  return { median_ms: median(times), max_abs_diff_u8: maxDiff };
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const ms = (x: number) => x.toFixed(0);
const ratio = (a: number, b: number | undefined) => (b ? (a / b).toFixed(2) : "—");
const BIG_MP = 8;

interface GoalLine {
  goal: string;
  met: boolean;
  detail: string;
  /** The native floor under this goal on the same files, when this run measured it. */
  floor?: string;
}

const xPillow = (v: number) => `${v.toFixed(2)}×`;

/**
 * "… takes 0.29× (a.jpg), 0.19× (b.jpg) of Pillow's exact time on these files (goal 0.1×)": a Pillow
 * variant's median over Pillow's exact median, for the rows that have it; undefined when none does.
 */
function nativeFloor(list: Row[], what: string, value: (r: Row) => number | undefined, goal: number): string | undefined {
  const parts = list.flatMap((r) => {
    const v = r.pillow ? value(r) : undefined;
    return v === undefined ? [] : [`${xPillow(v / r.pillow!.median_ms)} (${r.file})`];
  });
  if (!parts.length) return undefined;
  return `native floor: ${what} takes ${parts.join(", ")} of Pillow's exact time (goal ${goal}×)`;
}

/** The issue's goals (issue 5), judged on the pipeline's own time in workerd and, for reference, in Node. */
function goals(rows: Row[]): GoalLine[] {
  const out: GoalLine[] = [];
  const big = rows.filter((r) => r.megapixels >= BIG_MP && r.pillow && r.file.endsWith(".jpg"));
  const judge = (
    goal: string,
    list: Row[],
    value: (r: Row) => number,
    ok: (v: number) => boolean,
    show: (v: number) => string = xPillow,
    floor?: string,
  ) => {
    if (!list.length) return;
    const parts = list.map((r) => ({ r, v: value(r) }));
    out.push({
      goal,
      met: parts.every((x) => ok(x.v)),
      detail: parts.map((x) => `${x.r.file} ${show(x.v)}${ok(x.v) ? "" : " ✗"}`).join(", "),
      floor,
    });
  };
  const atMost = (limit: number) => (v: number) => v <= limit;
  const vsPillow = (ms: (r: Row) => number) => (r: Row) => ms(r) / r.pillow!.median_ms;
  const decodeFloor = nativeFloor(
    big,
    "Pillow's full-size decode alone (native libjpeg-turbo with SIMD, no resize)",
    (r) => r.pillow_decode?.median_ms,
    0.5,
  );
  judge(
    "exact ≤ 0.5× Pillow on every photo ≥ 8 MP (workerd, pipeline time)",
    big,
    vsPillow((r) => r.ours.in_worker_ms),
    atMost(0.5),
    xPillow,
    decodeFloor,
  );
  judge(
    "exact ≤ 0.5× Pillow on every photo ≥ 8 MP (Node, same code)",
    big,
    vsPillow((r) => r.node.median_ms),
    atMost(0.5),
    xPillow,
    decodeFloor,
  );
  const fastRows = rows.filter((r) => r.fast && r.pillow && r.fast.dct_scale > 1);
  const baseline = fastRows.filter((r) => !r.progressive);
  const progressive = fastRows.filter((r) => r.progressive);
  const draftFloor = (list: Row[], goal: number) =>
    nativeFloor(list, "Pillow's own DCT-scaled decode + resize (draft(), libjpeg-turbo with SIMD)", (r) => r.pillow_draft?.median_ms, goal);
  judge(
    "fast ≤ 0.1× Pillow on baseline JPEGs (workerd, pipeline time)",
    baseline,
    vsPillow((r) => r.fast!.in_worker_ms),
    atMost(0.1),
    xPillow,
    draftFloor(baseline, 0.1),
  );
  judge(
    "fast ≤ 0.25× Pillow on progressive JPEGs (workerd, pipeline time)",
    progressive,
    vsPillow((r) => r.fast!.in_worker_ms),
    atMost(0.25),
    xPillow,
    draftFloor(progressive, 0.25),
  );
  judge(
    "fast ≤ 0.1× Pillow on baseline JPEGs (Node, same code)",
    baseline,
    vsPillow((r) => r.fast!.node_ms),
    atMost(0.1),
    xPillow,
    draftFloor(baseline, 0.1),
  );
  judge(
    "fast ≤ 0.25× Pillow on progressive JPEGs (Node, same code)",
    progressive,
    vsPillow((r) => r.fast!.node_ms),
    atMost(0.25),
    xPillow,
    draftFloor(progressive, 0.25),
  );
  judge(
    "fast PSNR ≥ 40 dB against exact (every JPEG)",
    rows.filter((r) => r.fast),
    (r) => r.fast!.psnr_db ?? Number.POSITIVE_INFINITY, // JSON keeps Infinity (identical) as null
    (v) => v >= 40,
    (v) => (Number.isFinite(v) ? `${v.toFixed(1)} dB` : "identical"),
  );
  judge(
    "peak ≤ 64 MB (61.0 MiB) for every accepted image",
    rows,
    (r) => r.ours.peak_bytes,
    (v) => v <= 64e6,
    (v) => `${mib(v)} MiB`,
  );
  return out;
}

/**
 * The sentence under the "Pillow decode alone" bullet, from this run's figures: how much of Pillow's exact time
 * its full-size decode takes on the JPEG photos ≥ 8 MP, against the exact goal's 0.5× budget.
 */
function decodeShare(rows: Row[]): string {
  const big = rows.filter((r) => r.megapixels >= BIG_MP && r.pillow && r.pillow_decode && r.file.endsWith(".jpg"));
  if (!big.length) return "Not measured in this run.";
  const shares = big.map((r) => ({ file: r.file, v: r.pillow_decode!.median_ms / r.pillow!.median_ms }));
  const over = shares.filter((s) => s.v > 0.25);
  const list = shares.map((s) => `${xPillow(s.v)} (${s.file})`).join(", ");
  const verdict = over.length
    ? `more than half of the exact goal's 0.5× budget on ${over.map((s) => s.file).join(", ")}`
    : "less than half of the exact goal's 0.5× budget on each of them";
  return `In this run it takes ${list} of Pillow's exact time on the JPEG photos ≥ 8 MP: ${verdict}.`;
}

function renderMarkdown(rows: Row[], meta: Record<string, string>): string {
  const lines = [
    "<!-- bench:preprocess:start -->",
    "## Preprocessing: image → Qwen-VL's 3×448×448 float16 tensor",
    "",
    `Command: \`npm run bench:preprocess\` (${meta.runs} timed runs after ${WARMUP} warm-up runs, medians; ${meta.date}).`,
    `Machine: ${meta.cpu}, ${meta.cores} cores, load average ${meta.load} at the start; Node ${meta.node}; Pillow ${meta.pillow}; sharp ${meta.sharp}; libjpeg-turbo.wasm ${meta.wasm}.`,
    "",
    "- **ours, workerd**: the built Worker inside workerd (Miniflare), `POST /v1/tensors?format=f16&orientation=ignore`.",
    "  *pipeline* = the Worker's own `server-timing` (decode + resize + normalize, what Pillow's figure also covers);",
    "  *wall* = the client's time on loopback (adds the upload, the request and the 1.2 MB response). Peak = wasm heap + pixel buffers (`x-peak-bytes`).",
    "- **ours, Node**: the same wasm and JS in-process in Node (`scripts/lib/node-codecs.ts`): what the code costs without workerd.",
    "- **previous**: the JPEG decoder before libjpeg-turbo.wasm, @jsquash/jpeg (MozJPEG, whole image to RGBA), then the JS",
    "  Pillow resampler, in Node; *pixels* = the RGBA image it holds at once.",
    "- **Pillow**: Qwen-VL's reference `Image.open().convert('RGB').resize((448,448), BICUBIC)` + numpy float32 normalize → float16,",
    "  in-process time; peak = growth of the process's max RSS.",
    "- **Pillow decode alone** (JPEG rows): `Image.open(p).load()` in its own process, Pillow's full-size decode by its native",
    "  libjpeg-turbo (with SIMD), no convert, no resize, no tensor: the floor any exact pipeline on this machine has to beat,",
    `  since exact needs every pixel decoded at full size. ${decodeShare(rows)}`,
    "- **sharp**: libvips `resize(448, 448, {fit: 'fill', kernel: 'cubic'})` + the same normalization; not Pillow-exact",
    "  (max |Δ| against Pillow's uint8 image shown), for scale.",
    `- **${BIG_PHOTO.name}**: ${BIG_PHOTO.source} upscaled to ${BIG_PHOTO.width}×${BIG_PHOTO.height} by sharp and saved as a baseline JPEG (scripts/lib/big-photo.ts);`,
    "  its reference is this run's Pillow output.",
    "",
    "| image | MP | ours workerd pipeline ms | ours workerd wall ms | ours Node ms | previous ms (pixels MiB) | Pillow ms | Pillow decode alone ms | pipeline / Pillow | Node / Pillow | sharp ms | ours peak MiB | Pillow peak MiB | exact |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
  ];
  for (const r of rows) {
    const p = r.pillow;
    const prev = r.previous;
    const previous = !prev
      ? "—"
      : "error" in prev
        ? "cannot decode"
        : `${ms(prev.median_ms)} (${mib(prev.pixels_bytes)})${prev.exact ? "" : " not exact"}`;
    const exact = r.ours.exact && r.node.exact ? "yes" : "**NO**";
    lines.push(
      `| ${r.file} | ${r.megapixels.toFixed(1)} | ${ms(r.ours.in_worker_ms)} | ${ms(r.ours.median_ms)} | ${ms(r.node.median_ms)} | ${previous} | ${p ? ms(p.median_ms) : "—"} | ${r.pillow_decode ? ms(r.pillow_decode.median_ms) : "—"} | ${ratio(r.ours.in_worker_ms, p?.median_ms)} | ${ratio(r.node.median_ms, p?.median_ms)} | ${r.sharp ? ms(r.sharp.median_ms) : "—"} | ${mib(r.ours.peak_bytes)} | ${p ? mib(p.peak_rss_growth_bytes) : "—"} | ${exact} |`,
    );
  }
  lines.push(
    "",
    "**Fast mode** (`quality=fast`, JPEG only): libjpeg's DCT-scaled decode at 1/N, N = the scale Pillow's `draft()` picks when asked",
    "for 672×672 (1.5 × 448: the bicubic resampler keeps at least the last 1.5× of the reduction), then the same resampler.",
    "PSNR and max |Δ| of its uint8 image against Pillow's exact one; ratios against Pillow's exact time.",
    "*Pillow draft* = Pillow doing the same natively: `im.draft('RGB', (672, 672))`, then the same convert + resize + normalize",
    "(its libjpeg-turbo with SIMD, DCT-scaled at the 1/N it picks), in its own process: the native floor under the fast goals.",
    "*same output* = Pillow draft's 1/N is ours and its float16 tensor's sha256 is our fast tensor's (workerd and Node).",
    "",
    "| image | progressive | 1/N | fast workerd pipeline ms | fast workerd wall ms | fast Node ms | Pillow ms | pipeline / Pillow | Node / Pillow | Pillow draft ms | Pillow draft / Pillow | same output as Pillow draft | PSNR dB | max Δ |",
    "|---|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|",
  );
  for (const r of rows) {
    const f = r.fast;
    if (!f) continue;
    const p = r.pillow;
    const d = r.pillow_draft;
    const same = sameAsPillowDraft(r);
    lines.push(
      `| ${r.file} | ${r.progressive ? "yes" : "no"} | ${f.dct_scale} | ${ms(f.in_worker_ms)} | ${ms(f.median_ms)} | ${ms(f.node_ms)} | ${p ? ms(p.median_ms) : "—"} | ${ratio(f.in_worker_ms, p?.median_ms)} | ${ratio(f.node_ms, p?.median_ms)} | ${d ? ms(d.median_ms) : "—"} | ${d ? ratio(d.median_ms, p?.median_ms) : "—"} | ${same === undefined ? "—" : same ? "yes" : "**NO**"} | ${Number.isFinite(f.psnr_db) ? f.psnr_db.toFixed(1) : "∞ (exact)"} | ${f.max_abs_diff_u8} |`,
    );
  }
  lines.push("", "**Goals** (issue 5), from this run:", "");
  for (const g of goals(rows)) lines.push(`- ${g.met ? "met" : "**not met**"}: ${g.goal}: ${g.detail}${g.floor ? `; ${g.floor}` : ""}`);
  lines.push("<!-- bench:preprocess:end -->");
  return lines.join("\n");
}

async function main(): Promise<void> {
  const manifest = JSON.parse(readFileSync(`${images}MANIFEST.json`, "utf8")) as { items: Item[] };
  const pillowVersion = spawnSync(PYTHON, ["-c", "import PIL; print(PIL.__version__)"], { encoding: "utf8" });
  if (pillowVersion.status !== 0) console.error("Pillow not found (/usr/bin/python3 with python3-pil): its columns are skipped.");
  const load = readFileSync("/proc/loadavg", "utf8").split(" ")[0];

  // The 48 MP photo: written beside the build, its reference made by this run's Pillow.
  const work = `${root}.bench/`;
  mkdirSync(work, { recursive: true });
  const bigPath = `${work}${BIG_PHOTO.name}`;
  if (BIG_PHOTO.name.includes(ONLY)) writeFileSync(bigPath, await makeBigPhoto());
  const items: Array<Item & { path: string; referencePath: string }> = manifest.items.map((i) => ({
    ...i,
    path: `${images}${i.file}`,
    referencePath: `${images}${i.file}.rgb`,
  }));
  items.push({
    file: BIG_PHOTO.name,
    format: "JPEG",
    width: BIG_PHOTO.width,
    height: BIG_PHOTO.height,
    kind: "generated",
    reference_f16_sha256: "",
    progressive: false,
    path: bigPath,
    referencePath: `${bigPath}.rgb`,
  });
  const selected = items.filter((i) => i.file.includes(ONLY));

  const codecs = await createNodeCodecs();
  const mf = new Miniflare({
    cf: false, // placeholder Request.cf: no fetch of workers.cloudflare.com/cf.json (loopback only)
    modules: true,
    scriptPath: buildWorker(),
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    compatibilityDate: "2026-04-20",
    bindings: { EDGE_API_KEY: TOKEN },
    host: "127.0.0.1",
    port: 0,
  });
  const origin = (await mf.ready).origin;
  const rows: Row[] = [];
  try {
    for (const item of selected) {
      const bytes = new Uint8Array(readFileSync(item.path));
      const generated = item.kind === "generated";
      const pillow = benchPillow(item.path, "exact", generated ? item.referencePath : undefined);
      if (generated) {
        if (!pillow) {
          console.error(`${item.file}: skipped (its reference needs Pillow)`);
          continue;
        }
        item.reference_f16_sha256 = pillow.sha256!;
      }
      const jpeg = item.format === "JPEG";
      const draft = jpeg && pillow ? benchPillow(item.path, "draft") : null;
      const decoded = jpeg && pillow ? benchPillow(item.path, "decode") : null;
      const progressive = item.progressive ?? /prog/.test(item.file);
      const ours = await benchOurs(mf, origin, item, bytes);
      const node = await benchNode(codecs, item, bytes);
      const previous = await benchPrevious(item, bytes);
      const sharpRow = await benchSharp(item.referencePath, bytes);
      const fast = await benchFast(origin, codecs, item, item.referencePath, bytes);
      const row: Row = {
        file: item.file,
        megapixels: (item.width * item.height) / 1e6,
        bytes: bytes.length,
        progressive,
        ours,
        node,
        previous,
        pillow: pillow ? { median_ms: pillow.median_ms, peak_rss_growth_bytes: pillow.peak_rss_growth_bytes } : null,
        pillow_draft: draft ? { median_ms: draft.median_ms, dct_scale: draft.dct_scale!, sha256: draft.sha256! } : null,
        pillow_decode: decoded ? { median_ms: decoded.median_ms } : null,
        sharp: sharpRow,
        fast,
      };
      rows.push(row);
      if (sameAsPillowDraft(row) === false) {
        console.error(
          `\n!!! ${item.file}: fast mode is NOT Pillow draft()'s output: ours 1/${fast!.dct_scale} f16 ${fast!.sha256} (Node ${fast!.node_sha256}), Pillow draft 1/${draft!.dct_scale} f16 ${draft!.sha256} !!!\n`,
        );
      }
      const prev = previous && !("error" in previous) ? `${ms(previous.median_ms)} ms` : previous ? "error" : "n/a";
      console.error(
        `${item.file.padEnd(28)} workerd ${ms(ours.in_worker_ms).padStart(5)} (wall ${ms(ours.median_ms)}) ms  node ${ms(node.median_ms)} ms  previous ${prev}  pillow ${pillow ? ms(pillow.median_ms).padStart(5) : "  n/a"} ms  sharp ${ms(sharpRow!.median_ms).padStart(4)} ms  peak ${mib(ours.peak_bytes)} MiB  ${ours.exact && node.exact ? "exact" : "NOT EXACT"}${fast ? `  fast 1/${fast.dct_scale} ${ms(fast.in_worker_ms)} ms (node ${ms(fast.node_ms)}) PSNR ${fast.psnr_db.toFixed(1)} dB` : ""}${draft ? `  pillow draft 1/${draft.dct_scale} ${ms(draft.median_ms)} ms` : ""}${decoded ? `  pillow decode ${ms(decoded.median_ms)} ms` : ""}`,
      );
    }
  } finally {
    await mf.dispose();
  }
  const wasm = readFileSync(`${root}src/image/codecs/libjpeg-turbo/libjpeg-turbo.wasm.sha256`, "utf8").slice(0, 12);
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    runs: String(RUNS),
    cpu: cpus()[0]?.model ?? "unknown",
    cores: String(cpus().length),
    load,
    node: process.version,
    pillow: pillowVersion.status === 0 ? pillowVersion.stdout.trim() : "absent",
    sharp: sharp.versions.sharp ?? "?",
    wasm: `sha256 ${wasm}…`,
  };
  output(renderMarkdown(rows, meta), { meta, rows });
}

/** Writes the section and the JSON key, or with BENCH_WRITE=0 prints them to stdout and leaves docs/ alone. */
function output(section: string, data: { meta: Record<string, string>; rows: Row[] }): void {
  if (WRITE) {
    writeBenchSection("preprocess", section, data);
    console.error("wrote docs/benchmarks.md and docs/benchmarks.json");
  } else {
    console.log(`${section}\n\n${JSON.stringify(data, null, 2)}`);
    console.error("BENCH_WRITE=0: printed the section and the rows, docs/ untouched");
  }
}

if (process.env.BENCH_RENDER_ONLY === "1") {
  // Rewrite the section from docs/benchmarks.json (after a change to the rendering), running nothing.
  const saved = JSON.parse(readFileSync(`${root}docs/benchmarks.json`, "utf8")).preprocess as { meta: Record<string, string>; rows: Row[] };
  output(renderMarkdown(saved.rows, saved.meta), saved);
  console.error("re-rendered the preprocessing section from docs/benchmarks.json");
} else {
  await main();
}
