/**
 * `npm run bench:cache`: the same caption request, answered three ways in one run, by the built Worker
 * served by workerd itself (Miniflare's direct socket, no Node proxy in front), with a simulated GPU node
 * (`gpu-node serve --engine simulated`, a test instrument) routed by POOL_STATIC_NODES, a loopback image
 * origin that allows caching (`Cache-Control: public, max-age=3600`), and a `qvl_` API key (so every
 * request pays the rate limiter's Durable Object call):
 *
 *   cold              `Cache-Control: no-cache`: the image fetched from the origin, decoded, resized,
 *                     normalized, and the GPU asked (the caches are refreshed, never read)
 *   tensor cache      a new seed each time (so no stored answer exists): the source image and its tensor
 *                     come from the caches, the GPU is asked
 *   result cache      the same request again: the stored answer, replayed; no GPU call
 *
 * plus two variants of the result-cache hit: with the root key (no rate-limiter call: the difference is
 * the Durable Object's cost) and with the image uploaded as the body (1 MB read and hashed at the edge).
 * GPU calls are counted on the node's /metrics. Writes its section of docs/benchmarks.md (between the
 * bench:cache markers) and the "cache" key of docs/benchmarks.json, leaving the rest as it is.
 *
 * Env: BENCH_RUNS (default 40 timed requests per configuration), BENCH_IMAGE (a fixture; default
 * dune_1.8mp.jpg), BENCH_SIMULATE (the node's --simulate spec).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { Miniflare, type MiniflareOptions } from "miniflare";
import { nodeRequests } from "../test/support/metrics";
import { type SimulatedNode, startSimulatedNode } from "../test/support/simulated-node";
import { writeBenchSection } from "./lib/report";

const root = fileURLToPath(new URL("..", import.meta.url));
const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const WARMUP = 3;
/** Requests per configuration per turn. */
const BLOCK = 5;
const IMAGE = process.env.BENCH_IMAGE ?? "dune_1.8mp.jpg";
const SIMULATE = process.env.BENCH_SIMULATE ?? "vision_ms=15,prefill_ms=30,tokens_per_s=2000";
const ROOT_KEY = "bench-cache-root";
const NODE_SECRET = "bench-cache-node-secret";

interface Config {
  name: string;
  what: string;
  /** Request i (0-based, warm-up included). */
  request: (i: number) => { body: string | Uint8Array; headers: Record<string, string>; query?: string };
  key: "api" | "root";
}

interface Row {
  name: string;
  what: string;
  runs: number;
  p50_ms: number;
  p90_ms: number;
  min_ms: number;
  gpu_calls: number;
  x_cache: Record<string, number>;
  detail: string;
  server_timing_p50: Record<string, number>;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
};

function buildWorker(): string {
  // Under a `dist` folder: biome (and git) leave build output alone.
  const outdir = `${root}.bench/cache/dist`;
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", outdir], {
    cwd: root,
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
  });
  return `${outdir}/index.js`;
}

async function startNode(): Promise<SimulatedNode> {
  return startSimulatedNode({ secret: NODE_SECRET, args: ["--simulate", SIMULATE] });
}

function parseServerTiming(values: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of values.split(",")) {
    const m = /^\s*([a-z]+);dur=([0-9.]+)/.exec(part);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
  }
  return out;
}

interface Samples {
  config: Config;
  times: number[];
  xCache: Record<string, number>;
  timings: Record<string, number[]>;
  detail: string;
  gpu: number;
  sent: number;
}

/** `n` requests of one configuration; the first `skip` are not recorded (warm-up). GPU calls are counted around the block. */
async function block(origin: string, nodeUrl: string, apiKey: string, s: Samples, n: number, skip: number): Promise<void> {
  const before = await nodeRequests(nodeUrl);
  for (let k = 0; k < n; k++) {
    const r = s.config.request(s.sent++);
    const t0 = performance.now();
    const res = await fetch(`${origin}/v1/captions${r.query ?? ""}`, {
      method: "POST",
      headers: { authorization: `Bearer ${s.config.key === "root" ? ROOT_KEY : apiKey}`, ...r.headers },
      body: r.body as BodyInit,
    });
    const text = await res.text();
    const elapsed = performance.now() - t0;
    if (res.status !== 200) throw new Error(`${s.config.name}: HTTP ${res.status} ${text.slice(0, 300)}`);
    // Let waitUntil work (cache writes, usage) finish outside the timed window.
    await new Promise((r) => setTimeout(r, 5));
    if (k < skip) continue;
    s.times.push(elapsed);
    const verdict = res.headers.get("x-cache") ?? "none";
    s.xCache[verdict] = (s.xCache[verdict] ?? 0) + 1;
    s.detail = res.headers.get("x-cache-detail") ?? "";
    for (const [key, v] of Object.entries(parseServerTiming(res.headers.get("server-timing") ?? ""))) {
      s.timings[key] ??= [];
      s.timings[key].push(v);
    }
  }
  await new Promise((r) => setTimeout(r, 200)); // the node counts a request when it has ended
  const gpu = (await nodeRequests(nodeUrl)) - before;
  if (skip === 0) s.gpu += gpu; // a warm-up block counts for nothing
}

/**
 * The configurations take turns in blocks of `BLOCK` requests, in a rotating order, so that whatever
 * else the machine is doing weighs on every row alike.
 */
async function runAll(origin: string, nodeUrl: string, apiKey: string, configs: Config[]): Promise<Row[]> {
  const samples: Samples[] = configs.map((config) => ({ config, times: [], xCache: {}, timings: {}, detail: "", gpu: 0, sent: 0 }));
  for (const s of samples) await block(origin, nodeUrl, apiKey, s, WARMUP, WARMUP);
  const rounds = Math.ceil(RUNS / BLOCK);
  for (let round = 0; round < rounds; round++) {
    for (let j = 0; j < samples.length; j++) {
      const s = samples[(round + j) % samples.length];
      await block(origin, nodeUrl, apiKey, s, Math.min(BLOCK, RUNS - s.times.length), 0);
    }
  }
  return samples.map((s) => ({
    name: s.config.name,
    what: s.config.what,
    runs: s.times.length,
    p50_ms: quantile(s.times, 0.5),
    p90_ms: quantile(s.times, 0.9),
    min_ms: Math.min(...s.times),
    gpu_calls: s.gpu,
    x_cache: s.xCache,
    detail: s.detail,
    server_timing_p50: Object.fromEntries(Object.entries(s.timings).map(([k, v]) => [k, quantile(v, 0.5)])),
  }));
}

const f1 = (x: number) => x.toFixed(1);

function renderMarkdown(rows: Row[], meta: Record<string, string>, doHopMs: number): string {
  const by = (name: string) => rows.find((r) => r.name === name)!;
  const st = (r: Row) =>
    ["auth", "ratelimit", "fetch", "lookup", "decode", "resize", "result", "queue"]
      .filter((k) => r.server_timing_p50[k] !== undefined)
      .map((k) => `${k} ${f1(r.server_timing_p50[k])}`)
      .join(", ");
  const result = by("result cache");
  const lines = [
    "<!-- bench:cache:start -->",
    "## Caches: the same caption request cold, from the tensor cache, from the result cache",
    "",
    `Command: \`npm run bench:cache\` (${meta.runs} timed requests per row after ${WARMUP} warm-up requests, one client, sequential, the rows taking turns in blocks of ${BLOCK}; ${meta.date}).`,
    `Machine: ${meta.cpu}, ${meta.cores} cores, load average ${meta.load} at the start; Node ${meta.node}. Image: \`${meta.image}\` (${meta.image_bytes} bytes) fetched by URL from a`,
    "loopback origin that sends `Cache-Control: public, max-age=3600`. The built Worker runs in workerd (Miniflare, direct socket)",
    `with local KV, R2, Cache API and Durable Objects; the GPU is a simulated node (\`--simulate ${meta.simulate}\`, a test instrument: no model runs).`,
    "Every request carries a `qvl_` key, so each pays the rate limiter's Durable Object call, except the root-key row.",
    "Times are wall time at the client on loopback (so they include the HTTP round trip); the edge's own figures are in `server-timing`",
    "(whole milliseconds: workerd's clock only moves across I/O, so CPU-only steps such as `auth` read 0).",
    "",
    "| configuration | what happens | p50 ms | p90 ms | GPU calls | x-cache | server-timing p50 (ms) |",
    "|---|---|---:|---:|---:|---|---|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.name} | ${r.what} | ${f1(r.p50_ms)} | ${f1(r.p90_ms)} | ${r.gpu_calls} of ${r.runs} | ${Object.entries(r.x_cache)
        .map(([k, v]) => `${k} ×${v}`)
        .join(", ")} | ${st(r)} |`,
    );
  }
  lines.push(
    "",
    `- Result-cache hit: **p50 ${f1(result.p50_ms)} ms** at the client (goal ≤ 5 ms at the edge), **${result.gpu_calls} GPU calls** in ${result.runs} requests.`,
    `- The rate limiter's Durable Object call (one RPC per request, sent before the route reads the request and awaited before any costly step): p50 of the result-cache hit with a \`qvl_\` key minus with the root key = **${f1(doHopMs)} ms** here (local workerd; in production the DO may be in another colo than the request, and its SQLite write is confirmed before it answers).`,
    `- Cold → tensor cache: ${f1(by("cold").p50_ms - by("tensor cache").p50_ms)} ms saved at p50 (fetch, decode, resize, normalize); tensor cache → result cache: ${f1(by("tensor cache").p50_ms - result.p50_ms)} ms (the GPU).`,
    "<!-- bench:cache:end -->",
  );
  return lines.join("\n");
}

async function main(): Promise<void> {
  const load = loadavg()[0].toFixed(2);
  const imageBytes = new Uint8Array(readFileSync(`${root}test/fixtures/images/${IMAGE}`));
  const origin = createServer((req, res) => {
    if (!req.url?.startsWith("/photo.jpg")) return void res.writeHead(404).end();
    res.writeHead(200, {
      "content-type": "image/jpeg",
      "content-length": String(imageBytes.length),
      "cache-control": "public, max-age=3600",
    });
    res.end(imageBytes);
  });
  await new Promise<void>((r) => origin.listen(0, "127.0.0.1", () => r()));
  const imageUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}/photo.jpg`;
  const node = await startNode();
  const mf = new Miniflare({
    cf: false, // placeholder Request.cf: no fetch of workers.cloudflare.com/cf.json (loopback only)
    modules: true,
    scriptPath: buildWorker(),
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    compatibilityDate: "2026-04-20",
    compatibilityFlags: ["enable_request_signal"],
    bindings: {
      EDGE_API_KEY: ROOT_KEY,
      NODE_SECRET,
      ALLOW_HTTP_LOOPBACK: "true",
      POOL_STATIC_NODES: JSON.stringify([{ id: "bench-node", url: node.url, variant: "qwen-vl-chat", capacity: 16, engine: "simulated" }]),
    },
    durableObjects: {
      POOL: { className: "PoolObject", useSQLite: true },
      KEY_LIMITER: { className: "KeyLimiter", useSQLite: true },
    },
    kvNamespaces: ["API_KEYS", "RESULT_CACHE"],
    r2Buckets: ["TENSOR_CACHE"],
    cache: true,
    // Production has no such hop: by default Miniflare sends every outbound fetch through a JS worker.
    stripCfConnectingIp: false,
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    host: "127.0.0.1",
    port: 0,
  } as MiniflareOptions);
  const rows: Row[] = [];
  try {
    await mf.ready;
    const edge = (await mf.unsafeGetDirectURL()).origin;
    const created = await fetch(`${edge}/v1/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ROOT_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "bench", scopes: ["caption"], rate: "1000000/min" }),
    });
    if (created.status !== 201) throw new Error(`creating the bench key: HTTP ${created.status} ${await created.text()}`);
    const apiKey = ((await created.json()) as { key: string }).key;
    const json = (seed: number, extra: Record<string, string> = {}) => ({
      body: JSON.stringify({ image: imageUrl, seed }),
      headers: { "content-type": "application/json", ...extra },
    });
    const configs: Config[] = [
      {
        name: "cold",
        what: "`Cache-Control: no-cache`: fetch, decode, resize, GPU",
        key: "api",
        request: () => json(1, { "cache-control": "no-cache" }),
      },
      { name: "tensor cache", what: "new seed each time: source + tensor from cache, GPU", key: "api", request: (i) => json(1_000 + i) },
      { name: "result cache", what: "the same request: the stored answer", key: "api", request: () => json(1) },
      { name: "result cache, root key", what: "as above, no rate-limiter call", key: "root", request: () => json(1) },
      {
        name: "result cache, image uploaded",
        what: "the image as the request body (read + sha256 at the edge)",
        key: "api",
        request: () => ({ body: imageBytes, headers: { "content-type": "image/jpeg" }, query: "?seed=1" }),
      },
    ];
    rows.push(...(await runAll(edge, node.url, apiKey, configs)));
    for (const row of rows) {
      console.error(
        `${row.name.padEnd(30)} p50 ${f1(row.p50_ms).padStart(7)} ms  p90 ${f1(row.p90_ms).padStart(7)} ms  GPU calls ${row.gpu_calls}/${row.runs}  ${JSON.stringify(row.x_cache)}  ${row.detail}`,
      );
    }
  } finally {
    await mf.dispose();
    node.child.kill("SIGTERM");
    origin.close();
  }
  const doHopMs = rows.find((r) => r.name === "result cache")!.p50_ms - rows.find((r) => r.name === "result cache, root key")!.p50_ms;
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    runs: String(RUNS),
    cpu: cpus()[0]?.model ?? "unknown",
    cores: String(cpus().length),
    load,
    node: process.version,
    image: IMAGE,
    image_bytes: String(imageBytes.length),
    simulate: SIMULATE,
  };
  writeBenchSection("cache", renderMarkdown(rows, meta, doHopMs), { meta, rate_limiter_hop_p50_ms: doHopMs, rows });
  console.error("wrote the bench:cache sections of docs/benchmarks.md and docs/benchmarks.json");
}

await main();
