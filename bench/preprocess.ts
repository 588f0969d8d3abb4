/**
 * `npm run bench:preprocess`: per fixture image, our pipeline inside workerd (the built Worker served
 * by workerd through Miniflare, timed by the client around POST /v1/tensors?format=f16), Pillow
 * (Qwen-VL's reference: `/usr/bin/python3` with Debian's python3-pil) and sharp (libvips, native,
 * not exact), side by side in one run. Writes docs/benchmarks.md (the preprocessing section) and
 * docs/benchmarks.json.
 *
 * Every path computes the full f16 tensor with EXIF orientation ignored (the reference's semantics).
 * JPEG rows also time fast mode (`quality=fast`: DCT-scaled decode at Pillow's `draft()` scale, same
 * resampler) and give its PSNR / max |Δ| against Pillow's exact uint8 image.
 * Env: BENCH_RUNS (default 7, median reported), BENCH_ONLY (substring filter on file names).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import sharp from "sharp";
import { float16Bytes, normalizeToFloat16 } from "../src/image/normalize";
import { sha256Hex } from "../src/image/pipeline";

const root = fileURLToPath(new URL("..", import.meta.url));
const images = `${root}test/fixtures/images/`;
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const WARMUP = 2;
const ONLY = process.env.BENCH_ONLY ?? "";
const PYTHON = "/usr/bin/python3";
const TOKEN = "bench-token";

interface Item {
  file: string;
  format: string;
  width: number;
  height: number;
  kind: string;
  reference_f16_sha256: string;
}

interface Row {
  file: string;
  megapixels: number;
  bytes: number;
  ours: { median_ms: number; peak_bytes: number; exact: boolean; server_timing: string };
  pillow: { median_ms: number; peak_rss_growth_bytes: number } | null;
  sharp: { median_ms: number; max_abs_diff_u8: number } | null;
  /** quality=fast (JPEG only). */
  fast: { median_ms: number; dct_scale: number; psnr_db: number; max_abs_diff_u8: number } | null;
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

async function postTensor(origin: string, item: Item, bytes: Uint8Array, query: string) {
  const res = await fetch(`${origin}/v1/tensors?${query}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/octet-stream" },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
  const body = await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`${item.file}: HTTP ${res.status} ${new TextDecoder().decode(body)}`);
  return { res, body };
}

async function timeTensor(origin: string, item: Item, bytes: Uint8Array, query: string) {
  const times: number[] = [];
  let last: Awaited<ReturnType<typeof postTensor>> | undefined;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t = performance.now();
    last = await postTensor(origin, item, bytes, query);
    if (i >= WARMUP) times.push(performance.now() - t);
  }
  return { times, res: last!.res, body: last!.body };
}

async function benchOurs(mf: Miniflare, origin: string, item: Item, bytes: Uint8Array): Promise<Row["ours"]> {
  const { times, res, body } = await timeTensor(origin, item, bytes, "format=f16&orientation=ignore");
  void mf;
  return {
    median_ms: median(times),
    peak_bytes: Number(res!.headers.get("x-peak-bytes")),
    exact: (await sha256Hex(new Uint8Array(body))) === item.reference_f16_sha256,
    server_timing: res!.headers.get("server-timing") ?? "",
  };
}

/** Fast mode (JPEG only): timed like ours (f16), PSNR and max |Δ| of its uint8 image against Pillow's exact one. */
async function benchFast(origin: string, item: Item, file: string, bytes: Uint8Array): Promise<Row["fast"]> {
  if (item.format !== "JPEG") return null;
  const { times } = await timeTensor(origin, item, bytes, "format=f16&orientation=ignore&quality=fast");
  const { res, body } = await postTensor(origin, item, bytes, "format=u8&orientation=ignore&quality=fast");
  const rgb = new Uint8Array(body);
  const reference = readFileSync(`${file}.rgb`);
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
    dct_scale: Number(res.headers.get("x-dct-scale")),
    psnr_db: mse === 0 ? Number.POSITIVE_INFINITY : 10 * Math.log10((255 * 255) / mse),
    max_abs_diff_u8: maxDiff,
  };
}

function benchPillow(file: string): Row["pillow"] {
  if (!existsSync(PYTHON)) return null;
  const r = spawnSync(PYTHON, [`${root}bench/pillow_preprocess.py`, file, String(RUNS + WARMUP)], { encoding: "utf8" });
  if (r.status !== 0) {
    if (/No module named/.test(r.stderr)) return null;
    throw new Error(`pillow failed on ${file}: ${r.stderr}`);
  }
  const out = JSON.parse(r.stdout) as { times_ms: number[]; peak_rss_growth_bytes: number };
  return { median_ms: median(out.times_ms.slice(WARMUP)), peak_rss_growth_bytes: out.peak_rss_growth_bytes };
}

async function benchSharp(file: string, bytes: Uint8Array): Promise<Row["sharp"]> {
  const reference = readFileSync(`${file}.rgb`);
  const times: number[] = [];
  let maxDiff = 0;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t = performance.now();
    const { data } = await sharp(bytes, { limitInputPixels: 50_000_000 })
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

function renderMarkdown(rows: Row[], meta: Record<string, string>): string {
  const lines = [
    "<!-- bench:preprocess:start -->",
    "## Preprocessing: image → Qwen-VL's 3×448×448 float16 tensor",
    "",
    `Command: \`npm run bench:preprocess\` (${meta.runs} timed runs after ${WARMUP} warm-up runs, medians; ${meta.date}).`,
    `Machine: ${meta.cpu}, ${meta.cores} cores; Node ${meta.node}; Pillow ${meta.pillow}; sharp ${meta.sharp}.`,
    "",
    "- **ours**: the built Worker inside workerd (Miniflare), wall time of `POST /v1/tensors?format=f16&orientation=ignore`",
    "  from a client on loopback (upload, decode, resize, normalize, 1.2 MB response). Peak = wasm heap + pixel buffers (`x-peak-bytes`).",
    "- **Pillow**: Qwen-VL's reference `Image.open().convert('RGB').resize((448,448), BICUBIC)` + numpy float32 normalize → float16,",
    "  in-process time; peak = growth of the process's max RSS.",
    "- **sharp**: libvips `resize(448, 448, {fit: 'fill', kernel: 'cubic'})` + the same normalization; not Pillow-exact",
    "  (max |Δ| against Pillow's uint8 image shown), for scale.",
    "- **fast** (JPEG only): ours with `quality=fast` (libjpeg DCT-scaled decode at the 1/N Pillow's `draft()` picks for 448×448,",
    "  then the same resampler); PSNR and max |Δ| of its uint8 image against Pillow's exact one.",
    "",
    "| image | MP | ours ms | Pillow ms | ours / Pillow | sharp ms | ours / sharp | ours peak MiB | Pillow peak MiB | exact | sharp max Δ | fast ms | fast / Pillow | fast 1/N | fast PSNR dB | fast max Δ |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    const p = r.pillow;
    const s = r.sharp;
    const f = r.fast;
    const fast = f
      ? `${ms(f.median_ms)} | ${p ? (f.median_ms / p.median_ms).toFixed(2) : "—"} | ${f.dct_scale} | ${Number.isFinite(f.psnr_db) ? f.psnr_db.toFixed(1) : "∞ (exact)"} | ${f.max_abs_diff_u8}`
      : "— | — | — | — | —";
    lines.push(
      `| ${r.file} | ${r.megapixels.toFixed(1)} | ${ms(r.ours.median_ms)} | ${p ? ms(p.median_ms) : "—"} | ${p ? (r.ours.median_ms / p.median_ms).toFixed(2) : "—"} | ${s ? ms(s.median_ms) : "—"} | ${s ? (r.ours.median_ms / s.median_ms).toFixed(1) : "—"} | ${mib(r.ours.peak_bytes)} | ${p ? mib(p.peak_rss_growth_bytes) : "—"} | ${r.ours.exact ? "yes" : "**NO**"} | ${s ? s.max_abs_diff_u8 : "—"} | ${fast} |`,
    );
  }
  lines.push("<!-- bench:preprocess:end -->");
  return lines.join("\n");
}

function writeReport(section: string, rows: Row[], meta: Record<string, string>): void {
  const path = `${root}docs/benchmarks.md`;
  const header = "# Benchmarks\n\nFigures are produced by the commands named in each section; rerun them to refresh.\n\n";
  let doc = existsSync(path) ? readFileSync(path, "utf8") : header;
  const re = /<!-- bench:preprocess:start -->[\s\S]*<!-- bench:preprocess:end -->/;
  doc = re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(path, doc);
  // Other benches keep their own keys in the same file.
  const jsonPath = `${root}docs/benchmarks.json`;
  const all = existsSync(jsonPath) ? (JSON.parse(readFileSync(jsonPath, "utf8")) as Record<string, unknown>) : {};
  all.preprocess = { meta, rows };
  writeFileSync(jsonPath, `${JSON.stringify(all, null, 2)}\n`);
}

async function main(): Promise<void> {
  const manifest = JSON.parse(readFileSync(`${images}MANIFEST.json`, "utf8")) as { items: Item[] };
  const items = manifest.items.filter((i) => i.file.includes(ONLY));
  const pillowVersion = spawnSync(PYTHON, ["-c", "import PIL; print(PIL.__version__)"], { encoding: "utf8" });
  if (pillowVersion.status !== 0) console.error("Pillow not found (/usr/bin/python3 with python3-pil): its columns are skipped.");
  const mf = new Miniflare({
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
    for (const item of items) {
      const file = `${images}${item.file}`;
      const bytes = new Uint8Array(readFileSync(file));
      const ours = await benchOurs(mf, origin, item, bytes);
      const pillow = benchPillow(file);
      const sharpRow = await benchSharp(file, bytes);
      const fast = await benchFast(origin, item, file, bytes);
      const row: Row = {
        file: item.file,
        megapixels: (item.width * item.height) / 1e6,
        bytes: bytes.length,
        ours,
        pillow,
        sharp: sharpRow,
        fast,
      };
      rows.push(row);
      console.error(
        `${item.file.padEnd(28)} ours ${ms(ours.median_ms).padStart(5)} ms  pillow ${pillow ? ms(pillow.median_ms).padStart(5) : "  n/a"} ms  sharp ${ms(sharpRow!.median_ms).padStart(4)} ms  peak ${mib(ours.peak_bytes)} MiB  ${ours.exact ? "exact" : "NOT EXACT"}${fast ? `  fast 1/${fast.dct_scale} ${ms(fast.median_ms)} ms PSNR ${fast.psnr_db.toFixed(1)} dB` : ""}`,
      );
    }
  } finally {
    await mf.dispose();
  }
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    runs: String(RUNS),
    cpu: cpus()[0]?.model ?? "unknown",
    cores: String(cpus().length),
    node: process.version,
    pillow: pillowVersion.status === 0 ? pillowVersion.stdout.trim() : "absent",
    sharp: sharp.versions.sharp ?? "?",
  };
  writeReport(renderMarkdown(rows, meta), rows, meta);
  console.error("wrote docs/benchmarks.md and docs/benchmarks.json");
}

await main();
