/**
 * `npm run bench:gateway`: what the edge adds to a token stream. One simulated GPU node
 * (`gpu-node serve --engine simulated`: a fixed 50 ms prefill, then tokens ≈ 5 ms apart, `max_tokens` 64;
 * output pacing at the node's default `--stream-interval-ms`) and the built Worker served by workerd
 * (Miniflare, with the bindings of wrangler.toml, reached through a direct socket: no entry worker, no
 * Node proxy in front), the node given as a static pool node.
 *
 * In one run, in rotating blocks so machine noise hits both sides alike, the same text-only chat request:
 *   - direct: `POST {node}/v1/generate` with the frame the edge would send (with `output`: the node writes the
 *             OpenAI chunks), the node's SSE read to its end;
 *   - edge:   `POST {edge}/v1/chat/completions` (`stream: true`, usage chunk) to the Worker with `EDGE_RELAY=native`
 *             (the opt-in native relay, `x-relay: native`; the default is the JS relay, measured in the breakdown),
 *             the SSE read to `data: [DONE]`;
 * at 1 and at 64 streams in flight. Time to first token (the first SSE event carrying text) and total
 * time are taken by the client; CPU time of each process (client, node, workerd, everything else on
 * the machine) is read from /proc around every block, and the node's writes (chunks) from its /metrics.
 *
 * Then a breakdown (BENCH_BREAKDOWN=0 skips it): short runs of bench/lib/gateway-variants.ts, the
 * edge's stream path taken apart (the node's bytes passed through; a JavaScript loop over them; the
 * stream path as the edge runs it), with the workerd CPU each costs per request; and the same request
 * against a second node with pacing off (`--stream-interval-ms 0`: one chunk per token), direct, through
 * the stream path and through a second edge, for comparison; and the edge with its JavaScript relay
 * (`EDGE_RELAY=js`, the default: a JavaScript loop copies the node's own bytes, a wake-up per chunk) against both nodes.
 *
 * Writes docs/benchmarks.md (between `<!-- bench:gateway:start -->` and `end`) and the `gateway` key of
 * docs/benchmarks.json, leaving other sections as they are (BENCH_WRITE=0: print the section instead;
 * BENCH_RENDER_ONLY=1: write the section again from the figures in docs/benchmarks.json, running nothing).
 *
 * Env: BENCH_ROUNDS (default 8; a round = one block per side at each concurrency), BENCH_C1_BLOCK
 * (requests per block at 1 stream, default 14), BENCH_C64_PER_STREAM (requests per stream per block at
 * 64 streams, default 4; each stream's first and last are not counted, so every counted request ran with
 * all 64 streams in flight), BENCH_BREAKDOWN (default 1), BENCH_WRITE (default 1), BENCH_PIN=1 (workerd alone on CPU 0,
 * the client and the node on CPU 1) or BENCH_PIN=node (the node alone on CPU 1, the client and workerd on CPU 0), with
 * BENCH_BREAKDOWN=0 and BENCH_WRITE=0 for a side measurement.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import type { Miniflare, MiniflareOptions } from "miniflare";
import { Agent } from "undici";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { DEFAULT_STREAM_INTERVAL_MS } from "../gpu-node/src/agent/generate";
import { chatPrompt } from "../src/prompt/index";
import { encodeFrame, type GenerateHeaderInput, PROTOCOL_VERSION } from "../src/protocol/index";
import { metricValue } from "../test/support/metrics";
import { type SimulatedNode, startSimulatedNode } from "../test/support/simulated-node";
import { BENCH_MESSAGES, BENCH_OUTPUT } from "./lib/chat-request";
import { writeBenchSection } from "./lib/report";
import { startDirectWorkerd } from "./lib/workerd";

const root = fileURLToPath(new URL("..", import.meta.url));
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 8);
const C1_BLOCK = Number(process.env.BENCH_C1_BLOCK ?? 14);
const C64_PER_STREAM = Math.max(3, Number(process.env.BENCH_C64_PER_STREAM ?? 4));
const BREAKDOWN = process.env.BENCH_BREAKDOWN !== "0";
const WRITE = process.env.BENCH_WRITE !== "0";
/**
 * BENCH_PIN=1: workerd (every thread) on CPU 0, this client and the node on CPU 1: the edge with a core of its own.
 * BENCH_PIN=node: the node alone on CPU 1, this client and workerd on CPU 0: the node with a core of its own (as a
 * GPU node would be), the edge sharing the client's.
 */
const PIN = process.env.BENCH_PIN === "1" ? "edge" : process.env.BENCH_PIN === "node" ? "node" : undefined;
/** The main edge rows' relay (BENCH_RELAY=js|native, default native); the breakdown has both. */
const MAIN_RELAY: "js" | "native" = process.env.BENCH_RELAY === "js" ? "js" : "native";
/**
 * BENCH_AA=0 leaves out the A/A control: a second direct path (`control`, the same requests to the same node)
 * that takes turns with the other two, so `control − direct` shows how far two runs of the *same* path land
 * apart in this run: the resolution of every "added" figure.
 */
const AA = process.env.BENCH_AA !== "0";
/**
 * BENCH_LADDER=1 (`npm run bench:gateway-ladder`): only the 64-stream tail, layer by layer, with enough samples per
 * path for a p99 (BENCH_ROUNDS, default 12, blocks of 6 requests per stream: 3,072 counted per path); see ladder().
 */
const LADDER = process.env.BENCH_LADDER === "1";

function pinTo(cpu: number, pid: number | undefined): void {
  if (pid) execFileSync("taskset", ["-a", "-p", "-c", String(cpu), String(pid)], { stdio: "ignore" });
}
const CONCURRENCY = [1, 64] as const;
/** Breakdown blocks: requests at 1 stream (CPU is read in 10 ms ticks: 20 requests resolve 0.5 ms each), per stream at 64. */
const BREAKDOWN_C1 = 20;
const BREAKDOWN_C64_PER_STREAM = 3;
const MAX_TOKENS = 64;
/** Not 0: the edge caches answers of deterministic requests, and this bench measures the relay. */
const TEMPERATURE = 0.7;
const SIMULATE = "prefill_ms=50,vision_ms=0,tokens_per_s=200";
const NODE_ARGS = ["--capacity", "128", "--max-queue", "256"];
const EDGE_KEY = `bench_${randomBytes(8).toString("hex")}`;
const NODE_SECRET = randomBytes(16).toString("hex");
/** Client keep-alive: under workerd's 5 s and the node's 4 s idle timeouts. */
const KEEP_ALIVE_MS = 3_000;
const MESSAGES = BENCH_MESSAGES;
const COMPAT_DATE = "2026-04-20";

interface Sample {
  ttft_ms: number;
  total_ms: number;
  completion_tokens: number;
}

interface Cpu {
  client: number;
  node: number;
  workerd: number;
  /** Every other process on the machine. */
  other: number;
}

interface Block {
  target: string;
  /** The node's output pacing for this block's requests (ms; 0 = one chunk per token). */
  interval_ms: number;
  concurrency: number;
  samples: Sample[];
  /** Requests sent, counted or not. */
  requests: number;
  /** Requests that failed (an HTTP error, an error frame, a truncated stream), and the first failure. */
  failed: number;
  first_failure?: string;
  wall_ms: number;
  /** CPU milliseconds per request sent, by process. */
  cpu_ms_per_request: Cpu;
  /** Every other process's CPU over the block, in cores. */
  other_cores: number;
  /** workerd's CPU over the block, in cores (its JavaScript runs on one thread: near 1, it is saturated). */
  workerd_cores: number;
  /** Every process's CPU over the block, in cores (client, node, workerd, other). */
  cores: Cpu;
  /** Chunks the node wrote per request sent (its `qvl_node_stream_writes_total`). */
  writes_per_request: number;
  /** Milliseconds per request sent that each process's threads spent runnable but waiting for a core (schedstat). */
  wait_ms_per_request?: Wait;
}

interface Wait {
  client: number;
  node: number;
  workerd: number;
}

// ---------------------------------------------------------------------------------------------------
// Processes

function wranglerBuild(args: string[]): void {
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", ...args], {
    cwd: root,
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
  });
}

/** The edge as `wrangler deploy` would upload it. */
function buildWorker(): string {
  const outdir = `${root}.bench/dist`;
  wranglerBuild(["--outdir", outdir]);
  return `${outdir}/index.js`;
}

/** bench/lib/gateway-variants.ts, bundled the same way. */
function buildVariants(): string {
  const dir = `${root}.bench`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    `${dir}/gateway-variants.toml`,
    `name = "bench-gateway-variants"\nmain = "../bench/lib/gateway-variants.ts"\ncompatibility_date = "${COMPAT_DATE}"\ncompatibility_flags = ["enable_request_signal"]\n`,
  );
  wranglerBuild(["--outdir", `${dir}/variants`, "--config", `${dir}/gateway-variants.toml`]);
  return `${dir}/variants/gateway-variants.js`;
}

/** The bench's node; `streamIntervalMs` undefined: the node's default output pacing. */
function startNode(streamIntervalMs?: number): Promise<SimulatedNode> {
  const pacing = streamIntervalMs === undefined ? [] : ["--stream-interval-ms", String(streamIntervalMs)];
  return startSimulatedNode({
    secret: NODE_SECRET,
    args: ["--variant", "qwen-vl-chat", "--simulate", SIMULATE, ...NODE_ARGS, ...pacing],
  });
}

/** Chunks the node has written to generate streams so far. */
async function nodeWrites(nodeUrl: string): Promise<number> {
  return metricValue(await (await fetch(`${nodeUrl}/metrics`)).text(), "qvl_node_stream_writes_total");
}

/** workerd in Miniflare, serving `scriptPath` through a direct socket; returns its origin and its pid. */
async function startWorkerd(options: MiniflareOptions): Promise<{ mf: Miniflare; origin: string; pid: number | undefined }> {
  return { ...(await startDirectWorkerd(options)), pid: findChild("workerd") };
}

const CLOCK_TICKS_PER_S = 100;

/** CPU time (user + system, ms) of a process, from /proc; 0 where it cannot be read. */
function procCpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // After "pid (comm) ": state is field 0, utime 11, stime 12.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
  } catch {
    return 0;
  }
}

/**
 * Time a process's threads spent runnable but waiting for a core (ms, summed over its threads), from
 * /proc/<pid>/task/<tid>/schedstat (its second field, in ns); 0 where it cannot be read.
 */
function procWaitMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  let ns = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[1]) || 0;
      } catch {
        // the thread ended
      }
    }
  } catch {
    return 0;
  }
  return ns / 1e6;
}

/** Busy CPU time of the whole machine (ms, all cores), from /proc/stat. */
function machineBusyMs(): number {
  try {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, _idle, _iowait, irq, softirq, steal] = cpu;
    return ((user + nice + system + irq + softirq + steal) * 1000) / CLOCK_TICKS_PER_S;
  } catch {
    return 0;
  }
}

/** A child of this process by command name (the workerd Miniflare started). */
function findChild(comm: string): number | undefined {
  if (!existsSync("/proc")) return undefined;
  let found: number | undefined;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (name === comm && ppid === process.pid) found = Number(entry);
    } catch {
      // gone
    }
  }
  return found;
}

// ---------------------------------------------------------------------------------------------------
// One request

interface Target {
  name: string;
  url: string;
  headers: Record<string, string>;
  body: () => string | Uint8Array;
  /** True when one complete SSE message (without its blank line) carries generated text. */
  hasText: (message: string) => boolean;
  /** Completion tokens from the whole response; throws on an error or a truncated stream. */
  finish: (text: string) => number;
  agent: Agent;
  /** The edge's relay this target must get (`x-relay`); checked on every response. */
  relay?: "native" | "js";
}

const newAgent = () => new Agent({ keepAliveTimeout: KEEP_ALIVE_MS, keepAliveMaxTimeout: KEEP_ALIVE_MS, connections: 256, pipelining: 1 });
const segments = chatPrompt("qwen-vl-chat", MESSAGES).segments;

/** The node's own SSE (`event: token` / `event: done`). */
function nodeSse(): Pick<Target, "hasText" | "finish"> {
  return {
    hasText: (m) => m.startsWith("event: token\n") && (JSON.parse(m.slice(m.indexOf("data: ") + 6)) as { text: string }).text !== "",
    finish: (text) => {
      const error = text.indexOf("event: error\n");
      if (error >= 0) throw new Error(`node error: ${text.slice(error, error + 400)}`);
      const m = /event: done\ndata: (.*)\n/.exec(text);
      if (!m) throw new Error("the node's stream ended without a done event");
      return (JSON.parse(m[1]) as { usage: { completion_tokens: number } }).usage.completion_tokens;
    },
  };
}

/** OpenAI `chat.completion.chunk` SSE with a usage chunk and `[DONE]`. */
function openAiSse(): Pick<Target, "hasText" | "finish"> {
  return {
    hasText: (m) => {
      if (!m.startsWith("data: {")) return false;
      const chunk = JSON.parse(m.slice(6)) as { choices?: Array<{ delta?: { content?: string } }> };
      return Boolean(chunk.choices?.[0]?.delta?.content);
    },
    finish: (text) => {
      const error = text.indexOf('data: {"error"');
      if (error >= 0) throw new Error(`error frame: ${text.slice(error, error + 400)}`);
      if (!text.trimEnd().endsWith("data: [DONE]")) throw new Error("the stream ended without [DONE]");
      const m = /"usage":\{"prompt_tokens":\d+,"completion_tokens":(\d+)/.exec(text.slice(text.lastIndexOf('"choices":[]')));
      if (!m) throw new Error("no usage chunk");
      return Number(m[1]);
    },
  };
}

const OUTPUT = BENCH_OUTPUT;

/** Straight to the node; `openai`: with the frame's `output` (the native relay's frame), else events (the JS relay's). */
function directTarget(nodeUrl: string, openai = true): Target {
  return {
    name: "direct",
    url: `${nodeUrl}/v1/generate`,
    headers: { authorization: `Bearer ${NODE_SECRET}`, "content-type": "application/octet-stream", accept: "text/event-stream" },
    // The frame the edge sends for the edge target's request (src/serving/generate.ts).
    body: () => {
      const header: GenerateHeaderInput = {
        version: PROTOCOL_VERSION,
        request_id: randomBytes(8).toString("hex"),
        variant: "qwen-vl-chat",
        prompts: [segments],
        images: [],
        sampling: { max_tokens: MAX_TOKENS, temperature: TEMPERATURE, top_p: 1, stop: [] },
        ...(openai ? { output: OUTPUT } : {}),
      };
      return encodeFrame(header, []);
    },
    ...(openai ? openAiSse() : nodeSse()),
    agent: newAgent(),
  };
}

const chatBody = JSON.stringify({
  model: "qwen-vl-chat",
  messages: MESSAGES,
  stream: true,
  stream_options: { include_usage: true },
  max_tokens: MAX_TOKENS,
  temperature: TEMPERATURE,
});

function edgeTarget(origin: string, relay: "native" | "js" = "native"): Target {
  return {
    name: "edge",
    relay,
    url: `${origin}/v1/chat/completions`,
    headers: { authorization: `Bearer ${EDGE_KEY}`, "content-type": "application/json", accept: "text/event-stream" },
    body: () => chatBody,
    ...openAiSse(),
    agent: newAgent(),
  };
}

/** A variant of the breakdown worker, against the paced node or (`unpaced`) the one with pacing off. */
function variantTarget(origin: string, variant: string, unpaced = false): Target {
  return {
    name: unpaced ? `${variant}@0` : variant,
    url: `${origin}/?variant=${variant}${unpaced ? "&node=unpaced" : ""}`,
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: () => chatBody,
    ...(variant === "pass" || variant === "raw-loop" ? nodeSse() : openAiSse()),
    agent: newAgent(),
  };
}

/**
 * One request, timed. The client is undici's dispatcher with a handler (its lowest-level API: no Node
 * stream or async iterator per response), so the load generator takes as little of the shared cores as it can.
 */
function once(target: Target): Promise<Sample> {
  const url = new URL(target.url);
  const decoder = new TextDecoder();
  let text = "";
  let scanned = 0;
  let ttft: number | undefined;
  let status = 0;
  let relay: string | undefined;
  const t0 = performance.now();
  return new Promise<Sample>((resolve, reject) => {
    target.agent.dispatch(
      { origin: url.origin, path: `${url.pathname}${url.search}`, method: "POST", headers: target.headers, body: target.body() },
      {
        // Its presence selects undici's handler API (onResponse*), not the deprecated one (onConnect, onHeaders, …).
        onRequestStart() {},
        onResponseStart(_controller, statusCode, headers) {
          status = statusCode;
          relay = headers["x-relay"] as string | undefined;
        },
        onResponseData(_controller, chunk) {
          text += decoder.decode(chunk, { stream: true });
          if (ttft !== undefined || status !== 200) return;
          for (let end = text.indexOf("\n\n", scanned); end >= 0; end = text.indexOf("\n\n", scanned)) {
            const message = text.slice(scanned, end);
            scanned = end + 2;
            if (target.hasText(message)) {
              ttft = performance.now() - t0;
              break;
            }
          }
        },
        onResponseEnd() {
          const total = performance.now() - t0;
          try {
            if (status !== 200) throw new Error(`${target.name}: HTTP ${status} ${text.slice(0, 300)}`);
            if (target.relay && relay !== target.relay) throw new Error(`${target.name}: x-relay ${relay}, expected ${target.relay}`);
            if (ttft === undefined) throw new Error(`${target.name}: no token in ${text.slice(0, 300)}`);
            resolve({ ttft_ms: ttft, total_ms: total, completion_tokens: target.finish(text) });
          } catch (err) {
            reject(err);
          }
        },
        onResponseError(_controller, error) {
          reject(error);
        },
      },
    );
  });
}

// ---------------------------------------------------------------------------------------------------
// Blocks

/** The processes a block's requests go through. */
interface Pids {
  node: number | undefined;
  workerd: number | undefined;
  nodeUrl: string;
  /** The node's output pacing (ms). */
  intervalMs: number;
}

/**
 * `concurrency` streams, each sending `perStream` requests one after another. At concurrency > 1 the
 * streams start spread over one request's duration (so they do not all hit prefill together) and each
 * stream's first and last requests are not counted (they overlap the ramp up and down).
 */
async function runBlock(target: Target, concurrency: number, perStream: number, pids: Pids, staggerMs: number): Promise<Block> {
  const writes0 = await nodeWrites(pids.nodeUrl);
  const wait0: Wait = { client: procWaitMs(process.pid), node: procWaitMs(pids.node), workerd: procWaitMs(pids.workerd) };
  const client0 = process.cpuUsage();
  const node0 = procCpuMs(pids.node);
  const workerd0 = procCpuMs(pids.workerd);
  const machine0 = machineBusyMs();
  const t0 = performance.now();
  const samples: Sample[] = [];
  let failed = 0;
  let firstFailure: string | undefined;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, stream) => {
      if (concurrency > 1) await new Promise((r) => setTimeout(r, stream * staggerMs));
      for (let i = 0; i < perStream; i++) {
        let sample: Sample;
        try {
          sample = await once(target);
        } catch (err) {
          failed++;
          firstFailure ??= String((err as Error)?.message ?? err).slice(0, 300);
          continue;
        }
        if (concurrency === 1 || (i > 0 && i < perStream - 1)) samples.push(sample);
      }
    }),
  );
  const wall = performance.now() - t0;
  const clientUsage = process.cpuUsage(client0);
  const client = (clientUsage.user + clientUsage.system) / 1000;
  const node = procCpuMs(pids.node) - node0;
  const workerd = procCpuMs(pids.workerd) - workerd0;
  const other = Math.max(0, machineBusyMs() - machine0 - client - node - workerd);
  const requests = concurrency * perStream;
  const writes = (await nodeWrites(pids.nodeUrl)) - writes0;
  return {
    target: target.name,
    interval_ms: pids.intervalMs,
    concurrency,
    samples,
    requests,
    failed,
    ...(firstFailure ? { first_failure: firstFailure } : {}),
    wall_ms: wall,
    cpu_ms_per_request: { client: client / requests, node: node / requests, workerd: workerd / requests, other: other / requests },
    other_cores: other / wall,
    workerd_cores: workerd / wall,
    cores: { client: client / wall, node: node / wall, workerd: workerd / wall, other: other / wall },
    writes_per_request: writes / requests,
    wait_ms_per_request: {
      client: (procWaitMs(process.pid) - wait0.client) / requests,
      node: (procWaitMs(pids.node) - wait0.node) / requests,
      workerd: (procWaitMs(pids.workerd) - wait0.workerd) / requests,
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Statistics

/** Linear-interpolated quantile of sorted values. */
function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

interface Dist {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

function dist(values: number[]): Dist {
  const s = [...values].sort((a, b) => a - b);
  return {
    n: s.length,
    p50: quantile(s, 0.5),
    p90: quantile(s, 0.9),
    p99: quantile(s, 0.99),
    max: s[s.length - 1],
    mean: s.reduce((a, b) => a + b, 0) / s.length,
  };
}

interface Summary {
  blocks: number;
  requests_sent: number;
  requests_counted: number;
  requests_failed: number;
  first_failure?: string;
  ttft_ms: Dist;
  total_ms: Dist;
  /** Distinct completion-token counts seen (the same request on both sides: one value). */
  completion_tokens: number[];
  cpu_ms_per_request: Cpu;
  /** Mean CPU of other processes during these blocks, in cores. */
  other_cores: number;
  /** Mean CPU of workerd during these blocks, in cores. */
  workerd_cores: number;
  /** Mean CPU of every process during these blocks, in cores. */
  cores: Cpu;
  /** Chunks the node wrote per request. */
  writes_per_request: number;
  /** Waiting for a core, ms per request, by process (absent in figures from before it was measured). */
  wait_ms_per_request?: Wait;
}

function summarize(blocks: Block[]): Summary {
  const samples = blocks.flatMap((b) => b.samples);
  const sent = blocks.reduce((n, b) => n + b.requests, 0);
  const wall = blocks.reduce((n, b) => n + b.wall_ms, 0);
  const cpu = (k: keyof Cpu) => blocks.reduce((n, b) => n + b.cpu_ms_per_request[k] * b.requests, 0) / sent;
  return {
    blocks: blocks.length,
    requests_sent: sent,
    requests_counted: samples.length,
    requests_failed: blocks.reduce((n, b) => n + b.failed, 0),
    ...(blocks.find((b) => b.first_failure) ? { first_failure: blocks.find((b) => b.first_failure)?.first_failure } : {}),
    ttft_ms: dist(samples.map((s) => s.ttft_ms)),
    total_ms: dist(samples.map((s) => s.total_ms)),
    completion_tokens: [...new Set(samples.map((s) => s.completion_tokens))].sort((a, b) => a - b),
    cpu_ms_per_request: { client: cpu("client"), node: cpu("node"), workerd: cpu("workerd"), other: cpu("other") },
    other_cores: blocks.reduce((n, b) => n + b.other_cores * b.wall_ms, 0) / wall,
    workerd_cores: blocks.reduce((n, b) => n + b.workerd_cores * b.wall_ms, 0) / wall,
    cores: {
      client: blocks.reduce((n, b) => n + b.cores.client * b.wall_ms, 0) / wall,
      node: blocks.reduce((n, b) => n + b.cores.node * b.wall_ms, 0) / wall,
      workerd: blocks.reduce((n, b) => n + b.cores.workerd * b.wall_ms, 0) / wall,
      other: blocks.reduce((n, b) => n + b.cores.other * b.wall_ms, 0) / wall,
    },
    writes_per_request: blocks.reduce((n, b) => n + b.writes_per_request * b.requests, 0) / sent,
    ...(blocks.every((b) => b.wait_ms_per_request)
      ? {
          wait_ms_per_request: {
            client: blocks.reduce((n, b) => n + (b.wait_ms_per_request?.client ?? 0) * b.requests, 0) / sent,
            node: blocks.reduce((n, b) => n + (b.wait_ms_per_request?.node ?? 0) * b.requests, 0) / sent,
            workerd: blocks.reduce((n, b) => n + (b.wait_ms_per_request?.workerd ?? 0) * b.requests, 0) / sent,
          },
        }
      : {}),
  };
}

interface Added {
  p50: number;
  p90: number;
  p99: number;
}

interface ConcurrencyResult {
  concurrency: number;
  direct: Summary;
  edge: Summary;
  /** Edge quantile minus direct quantile (separate requests, not pairs). */
  added_ms: { ttft: Added; total: Added };
  /** The A/A control (BENCH_AA): the direct path measured again, and its quantiles minus direct's. */
  control?: Summary;
  aa_ms?: { ttft: Added; total: Added };
}

const added = (edge: Dist, direct: Dist): Added => ({ p50: edge.p50 - direct.p50, p90: edge.p90 - direct.p90, p99: edge.p99 - direct.p99 });

// ---------------------------------------------------------------------------------------------------
// Report

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const signed = (x: number) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(1)}`;

const VARIANT_LABELS: Record<string, string> = {
  direct: "direct to the node (no workerd)",
  pass: "workerd passes the node's bytes through (no JS per chunk)",
  "raw-loop": "a JS loop reads each chunk and writes it on unchanged (no parsing, no framing)",
  stream: "`openNodeStream` (one-stage `openEventStream`, zod-validated events) → `relayChatCompletion`, no routes",
  edge: "the edge: `/v1/chat/completions`, everything; the opt-in native relay (`EDGE_RELAY=native`: the node writes the OpenAI chunks, no JS per chunk)",
  "edge-js":
    "the edge with its JS relay (`EDGE_RELAY=js`, the default): a JavaScript loop copies the node's own bytes, one wake-up per chunk",
};

/** The breakdown rows in order: the paced node's, then the same paths against the node with pacing off. */
const BREAKDOWN_PACED = ["direct", "pass", "raw-loop", "stream", "edge", "edge-js"] as const;
const BREAKDOWN_UNPACED = ["direct@0", "raw-loop@0", "stream@0", "edge-js@0"] as const;

function variantLabel(name: string): string {
  const [base, unpaced] = name.split("@");
  return `${VARIANT_LABELS[base] ?? base}${unpaced === undefined ? "" : "; node pacing off"}`;
}

type Breakdown = Record<string, Record<number, Summary>>;

/** workerd CPU per request through the JS relay = fixed + perChunk × chunks, solved from the paced and unpaced edge-js rows. */
function perChunkModel(breakdown: Breakdown, c: number) {
  const cpu = (name: string) => breakdown[name]?.[c]?.cpu_ms_per_request.workerd ?? Number.NaN;
  const writes = (name: string) => breakdown[name]?.[c]?.writes_per_request ?? Number.NaN;
  const [e20, e0, w20, w0] = [cpu("edge-js"), cpu("edge-js@0"), writes("edge-js"), writes("edge-js@0")];
  const perChunk = (e0 - e20) / (w0 - w20);
  return perChunk > 0 && Number.isFinite(perChunk) ? { e20, e0, w20, w0, perChunk, fixed: e20 - perChunk * w20 } : null;
}

/** What the figures of this run say, in words: every number and every verdict is computed from this run. */
function reading(results: ConcurrencyResult[], breakdown: Breakdown | null, cores: number): string[] {
  const meets = (a: Added) => a.p50 <= 2 && a.p99 <= 10;
  const out = ["**Reading this run.**", ""];
  const one = results.find((r) => r.concurrency === 1);
  const many = results.find((r) => r.concurrency === 64);
  const tokens = one?.direct.completion_tokens.join("/") ?? "?";

  const verdicts = results.map((r) => {
    const a = r.added_ms.ttft;
    return { r, ok: meets(a), text: `${r.concurrency} stream${r.concurrency > 1 ? "s" : ""}: ${signed(a.p50)} / ${signed(a.p99)} ms` };
  });
  const missed = verdicts.filter((v) => !v.ok);
  const aa = results.filter((r) => r.aa_ms);
  const aaText = aa
    .map(
      (r) =>
        `${r.concurrency} stream${r.concurrency > 1 ? "s" : ""} ${signed(r.aa_ms?.ttft.p50 ?? 0)} / ${signed(r.aa_ms?.ttft.p99 ?? 0)} ms`,
    )
    .join("; ");
  out.push(
    `- **Goal (issue 4): the edge adds ≤ 2 ms at p50 and ≤ 10 ms at p99 to the first token.** Added (p50 / p99): ${verdicts
      .map((v) => `${v.text} (${v.ok ? "met" : "not met"})`)
      .join("; ")}. ${
      missed.length === 0
        ? "The goal is met in this run."
        : `**The goal is not met** at ${missed.map((v) => `${v.r.concurrency} stream${v.r.concurrency > 1 ? "s" : ""}`).join(" and ")} in this run.`
    }`,
  );
  const waits = results.filter((r) => r.direct.wait_ms_per_request && r.edge.wait_ms_per_request);
  if (waits.length) {
    out.push(
      `- **Waiting for a core** (ms per request, direct → edge blocks): ${waits
        .map((r) => {
          const d = r.direct.wait_ms_per_request as Wait;
          const e = r.edge.wait_ms_per_request as Wait;
          return `${r.concurrency} stream${r.concurrency > 1 ? "s" : ""}: the node ${f2(d.node)} → ${f2(e.node)}, the client ${f2(d.client)} → ${f2(e.client)}, workerd ${f2(e.workerd)}`;
        })
        .join(
          "; ",
        )}. What the node and the client wait more in the edge blocks is time workerd took from them on the shared cores, not work the edge adds to a request.`,
    );
  }
  if (aa.length) {
    out.push(
      `- **The A/A control** (the direct path measured twice, p50 / p99 of TTFT): ${aaText}. This is the run's resolution: the same path, the same node, alternating blocks.`,
    );
  }

  const cpu = (name: string, c: number) => breakdown?.[name]?.[c]?.cpu_ms_per_request.workerd ?? Number.NaN;
  const writes = (name: string, c: number) => breakdown?.[name]?.[c]?.writes_per_request ?? Number.NaN;
  if (one && many) {
    const line = [
      `- Output pacing (the node's default, ${DEFAULT_STREAM_INTERVAL_MS} ms: a prompt's first token written at once, later tokens at most once per interval,`,
      `  the end at once): the node wrote ${f1(one.direct.writes_per_request)} chunks per ${tokens}-token answer at 1 stream and ${f1(many.direct.writes_per_request)} at 64`,
    ];
    if (breakdown) {
      line.push(
        `  (pacing off: ${f1(writes("direct@0", 1))} and ${f1(writes("direct@0", 64))}). Through the JS relay every chunk is a JavaScript wake-up at the edge: workerd's CPU per`,
        `  request was ${f1(cpu("edge-js", 1))} ms paced vs ${f1(cpu("edge-js@0", 1))} ms unpaced at 1 stream, ${f1(cpu("edge-js", 64))} vs ${f1(cpu("edge-js@0", 64))} ms at 64 streams`,
        `  (breakdown rows \`edge-js\` and \`edge-js@0\`).`,
      );
      const t = (name: string, c: number, k: "ttft_ms" | "total_ms") => breakdown[name]?.[c]?.[k].p50 ?? Number.NaN;
      const ttft = [t("direct", 1, "ttft_ms"), t("direct@0", 1, "ttft_ms")];
      const total = [t("direct", 1, "total_ms"), t("direct@0", 1, "total_ms")];
      const same = Math.abs(ttft[0] - ttft[1]) <= 2 && Math.abs(total[0] - total[1]) <= 2;
      line.push(
        `  ${same ? "Pacing moved neither end of a stream (within 2 ms)" : "The ends of a stream, paced vs unpaced"} at 1 stream: direct TTFT p50 ${f1(ttft[0])} vs ${f1(ttft[1])} ms,`,
        `  total p50 ${f1(total[0])} vs ${f1(total[1])} ms.`,
      );
    } else {
      line[line.length - 1] += ".";
    }
    out.push(...line);
  }

  if (breakdown) {
    const parts = CONCURRENCY.flatMap((c) => {
      const m = perChunkModel(breakdown, c);
      return m
        ? [
            `at ${c} stream${c > 1 ? "s" : ""} (${f1(m.e0)} − ${f1(m.e20)}) ms / (${f1(m.w0)} − ${f1(m.w20)}) chunks ≈ ${f2(m.perChunk)} ms per chunk, ≈ ${f1(m.fixed)} ms per request`,
          ]
        : [];
    });
    if (parts.length > 0) {
      out.push(
        `- Per chunk and per request (workerd CPU through the edge's JS relay, paced vs unpaced): ${parts.join("; ")}.`,
        "  A wake-up costs more in an idle isolate (1 stream) than in a busy one (64 streams). The per-request part is paid once",
        "  (routes, key, frame, the fetch to the node, the response). Estimates from short runs with /proc's 10 ms CPU ticks: an order",
        "  of magnitude, not a decimal.",
      );
    }
    const follows = cpu("raw-loop@0", 64) > cpu("raw-loop", 64) && cpu("stream@0", 64) > cpu("stream", 64);
    out.push(
      `- Where workerd's CPU goes at 64 streams, paced (ms per request): the node's bytes passed through ${f1(cpu("pass", 64))}; a JavaScript loop`,
      `  over the same chunks ${f1(cpu("raw-loop", 64))}; the stream path (decode, validate, relay, OpenAI framing) ${f1(cpu("stream", 64))}; the whole edge with`,
      `  its JS relay ${f1(cpu("edge-js", 64))}, with the native relay ${f1(cpu("edge", 64))}.`,
      `  Unpaced, the same loop costs ${f1(cpu("raw-loop@0", 64))} and the stream path ${f1(cpu("stream@0", 64))}${follows ? ": the cost follows the chunks" : ""}.`,
    );
    const t64 = (name: string, q: "p50" | "p99") => breakdown[name]?.[64]?.ttft_ms[q] ?? Number.NaN;
    const less = cpu("edge", 64) < cpu("edge-js", 64) && cpu("edge", 1) < cpu("edge-js", 1);
    out.push(
      `- The native relay vs the JS relay (breakdown rows \`edge\` and \`edge-js\`, same moment, same node): workerd CPU per request`,
      `  ${f1(cpu("edge", 1))} vs ${f1(cpu("edge-js", 1))} ms at 1 stream, ${f1(cpu("edge", 64))} vs ${f1(cpu("edge-js", 64))} ms at 64 streams${less ? " (less with the native relay at both)" : ""};`,
      `  TTFT p50 / p99 at 64 streams ${f1(t64("edge", "p50"))} / ${f1(t64("edge", "p99"))} vs ${f1(t64("edge-js", "p50"))} / ${f1(t64("edge-js", "p99"))} ms (direct ${f1(t64("direct", "p50"))} / ${f1(t64("direct", "p99"))}).`,
    );
    const tt = (name: string) => breakdown[name]?.[1]?.ttft_ms.p50 ?? Number.NaN;
    out.push(
      `- The first token at 1 stream (breakdown TTFT p50 minus direct's): through workerd passing bytes ${signed(tt("pass") - tt("direct"))} ms, the stream`,
      `  path ${signed(tt("stream") - tt("direct"))} ms, the whole edge ${signed(tt("edge-js") - tt("direct"))} ms with its JS relay, ${signed(tt("edge") - tt("direct"))} ms with the native relay: the hop through workerd, the stream path, and the`,
      "  routes (key, validation, prompt, router, frame; the root key here, so no rate-limiter call) each add their share once per",
      "  request, and pacing does not change them (short runs: indicative).",
    );
  }

  if (many) {
    const w = many.edge.cpu_ms_per_request.workerd;
    const length = many.direct.total_ms.p50;
    const demand = (w * 64) / length;
    const c = many.edge.cores;
    const busy = c.client + c.node + c.workerd + c.other;
    const a = many.added_ms.ttft;
    const why =
      busy >= 0.85 * cores
        ? `the machine was close to saturated, so the added time is mostly waiting for CPU that the edge shares with the node and the client here (a real edge does not run on the GPU node's machine)`
        : demand >= 0.8
          ? "workerd's one JavaScript thread was close to saturated, so streams queue in the isolate"
          : "neither workerd's thread nor the machine was saturated on average; the added time comes from bursts (64 streams' chunks landing at once on one thread)";
    out.push(
      `- 64 streams: to keep pace with streams as long as the direct ones, ${f1(w)} ms of workerd CPU per stream × 64 / ${f1(length)} ms = ${f2(demand)} of a core for workerd's one JavaScript thread;`,
      `  during the edge blocks the ${cores} cores were ${f2(busy)} busy (client ${f2(c.client)}, node ${f2(c.node)}, workerd ${f2(c.workerd)}, other processes ${f2(c.other)}):`,
      `  ${why}. Added TTFT ${signed(a.p50)} / ${signed(a.p99)} ms (p50 / p99).`,
    );
    if (!meets(a)) {
      out.push(
        `- Left at 64 streams: with the native relay the edge's JavaScript runs once per request (routes, key, frame, the fetch, the`,
        `  first output, the end), not per chunk, so its ${f1(w)} ms per request (${f2(demand)} of a core for 64 streams) is what a longer`,
        "  interval no longer reduces; and this bench puts all 64 streams on one workerd thread, on cores shared with the node and the",
        "  client. The 64-stream goal needs less work per request at the edge, or the edge measured on cores of its own.",
      );
    }
  }
  if (one) {
    const a = one.added_ms.ttft;
    out.push(
      `- 1 stream: the edge adds ${signed(a.p50)} ms at p50 and ${signed(a.p99)} ms at p99 to the first token and spends ${f1(one.edge.cpu_ms_per_request.workerd)} ms of`,
      `  workerd CPU per ${tokens}-token stream (${f1(one.edge.writes_per_request)} node chunks).`,
    );
  }
  for (const r of results) {
    for (const side of ["direct", "edge"] as const) {
      const f = r[side];
      if (f.requests_failed) {
        out.push(
          `- ${f.requests_failed} of ${f.requests_sent} ${side} requests at ${r.concurrency} streams failed; the first: \`${f.first_failure}\`.`,
        );
      }
    }
  }
  return out;
}

function renderMarkdown(results: ConcurrencyResult[], breakdown: Breakdown | null, meta: Record<string, string>): string {
  const lines = [
    "<!-- bench:gateway:start -->",
    "## Gateway: what the edge adds to a token stream",
    "",
    `Command: \`npm run bench:gateway\` (${meta.date}; ${meta.duration_s} s). Machine: ${meta.cpu}, ${meta.cores} cores; Node ${meta.node};`,
    `workerd ${meta.workerd} via Miniflare ${meta.miniflare}; load average ${meta.loadavg} at the start. Worker built from ${meta.source}.`,
    "",
    `- **Upstream**: one \`gpu-node serve --engine simulated --simulate ${SIMULATE} ${NODE_ARGS.join(" ")}\`: a 50 ms`,
    `  prefill, then tokens ≈ 5 ms apart (\`max_tokens: ${MAX_TOKENS}\`; the simulated answer to this prompt is ${results[0]?.direct.completion_tokens.join("/")} tokens,`,
    "  the same on both paths); the prompt is text only (no image work on either path). The node runs with its default output",
    `  pacing (\`--stream-interval-ms ${DEFAULT_STREAM_INTERVAL_MS}\`: a prompt's first token written at once, later tokens at most once per ${DEFAULT_STREAM_INTERVAL_MS} ms, the end at once;`,
    "  docs/gpu-node.md); **node chunks/req** is how many writes it made per request (its `qvl_node_stream_writes_total`).",
    "- **direct**: `POST {node}/v1/generate` with the frame the edge would send (with `output`: the node writes the OpenAI chunks),",
    "  the node's SSE read to its end.",
    `- **edge**: \`POST {edge}/v1/chat/completions\` (\`stream: true\`, \`max_tokens: ${MAX_TOKENS}\`, \`temperature: ${TEMPERATURE}\` so the`,
    "  result cache stays out of it, usage chunk) to the built Worker (`wrangler deploy --dry-run`, bindings from wrangler.toml, the",
    "  root key) in workerd through a Miniflare direct socket (no entry worker, no Node proxy), the node as a static pool node.",
    "  The Worker runs with `EDGE_RELAY=native`, the opt-in native relay, and the request qualifies for it (one prompt, usage chunk,",
    "  nothing cached; every response checked for `x-relay: native`): the response starts (200, headers) when the node takes the",
    "  request, the edge reads the node's bytes in JavaScript only up to the first output, then pipes them natively. The default is the JS relay (`edge-js` rows below): a node that dies mid-stream",
    "  still gets its error frame and `[DONE]` there, which the native pipe cannot add (docs/architecture.md).",
    "- **TTFT**: from sending the request to the first SSE event carrying text; **total**: to the end of the stream. Client: undici,",
    `  keep-alive ${KEEP_ALIVE_MS / 1000} s. The two paths alternate in blocks, which goes first alternating (${meta.rounds} rounds; at 1 stream`,
    `  ${C1_BLOCK} requests per block; at 64 streams ${C64_PER_STREAM} per stream per block, each stream's first and last not counted, so`,
    "  every counted request ran with 64 in flight).",
    "- **added** = edge quantile − direct quantile (separate requests, not pairs). Goal (issue 4): p50 ≤ 2 ms, p99 ≤ 10 ms added.",
    ...(results.some((r) => r.aa_ms)
      ? [
          "- **control** (the A/A control): the direct path a second time, the same requests to the same node, taking turns with the",
          "  other two; **A/A** = control − direct is how far two measurements of one and the same path land apart in this run, the",
          "  resolution of the **added** row (an added figure inside the A/A spread cannot be told from zero).",
        ]
      : []),
    "- **CPU** per request, from /proc: the client, the node, workerd, and every other process on the machine (not ours; on a shared",
    "  machine, other work). Client, node and workerd share the same cores: at 64 streams the edge competes for CPU with the node",
    "  and the client, which a real edge (elsewhere than the GPU node) does not. **Waiting** per request: how long each",
    "  process's threads were ready to run but had no core (/proc/…/schedstat), the measure of that contention.",
    "",
    "| streams | path | requests (failed) | TTFT p50 | TTFT p99 | total p50 | total p99 | node chunks/req | CPU ms/req: client · node · workerd | waiting ms/req: client · node · workerd | other processes |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
  ];
  for (const r of results) {
    for (const side of ["direct", "edge", "control"] as const) {
      const s = r[side];
      if (!s) continue;
      const c = s.cpu_ms_per_request;
      const w = s.wait_ms_per_request;
      lines.push(
        `| ${r.concurrency} | ${side === "control" ? "control (direct again)" : side} | ${s.requests_counted} (${s.requests_failed}) | ${f1(s.ttft_ms.p50)} | ${f1(s.ttft_ms.p99)} | ${f1(s.total_ms.p50)} | ${f1(s.total_ms.p99)} | ${f1(s.writes_per_request)} | ${f1(c.client)} · ${f1(c.node)} · ${f1(c.workerd)} | ${w ? `${f2(w.client)} · ${f2(w.node)} · ${f2(w.workerd)}` : ""} | ${f2(s.other_cores)} cores |`,
      );
    }
    const a = r.added_ms;
    lines.push(
      `| ${r.concurrency} | **added** (edge − direct) |  | **${signed(a.ttft.p50)}** | **${signed(a.ttft.p99)}** | **${signed(a.total.p50)}** | **${signed(a.total.p99)}** |  |  |  |  |`,
    );
    if (r.aa_ms) {
      const n = r.aa_ms;
      lines.push(
        `| ${r.concurrency} | A/A (control − direct) |  | ${signed(n.ttft.p50)} | ${signed(n.ttft.p99)} | ${signed(n.total.p50)} | ${signed(n.total.p99)} |  |  |  |  |`,
      );
    }
  }
  lines.push("", "Times in ms.");
  if (breakdown) {
    lines.push(
      "",
      "### Where the edge's time goes",
      "",
      `Short runs after the main blocks (1 stream: one block of ${BREAKDOWN_C1} requests; 64 streams: one block of ${BREAKDOWN_C64_PER_STREAM} per stream), the stream path taken apart in`,
      "`bench/lib/gateway-variants.ts`, same request; the rows marked `@0` go to a second node with pacing off (`--stream-interval-ms 0`:",
      "one chunk per token), the `edge-js` rows through more workerds with the same Worker and `EDGE_RELAY=js`. workerd's CPU per request is the figure",
      "to compare (it is what saturates first); the TTFTs of short runs are indicative. A path that falls behind gets several tokens",
      "per chunk from the node (it writes what is ready together), so at 64 streams chunks/req and CPU per request of a slow path",
      "understate its cost per token.",
      "",
      "| path | node chunks/req, 1 / 64 streams | workerd CPU ms/req, 1 stream | 64 streams | TTFT p50, 1 stream | TTFT p50 / p99, 64 streams |",
      "|---|---:|---:|---:|---:|---:|",
    );
    for (const name of [...BREAKDOWN_PACED, ...BREAKDOWN_UNPACED]) {
      const byC = breakdown[name];
      if (!byC) continue;
      const one = byC[1];
      const many = byC[64];
      lines.push(
        `| ${name}: ${variantLabel(name)} | ${f1(one.writes_per_request)} / ${f1(many.writes_per_request)} | ${f2(one.cpu_ms_per_request.workerd)} | ${f2(many.cpu_ms_per_request.workerd)} | ${f1(one.ttft_ms.p50)} | ${f1(many.ttft_ms.p50)} / ${f1(many.ttft_ms.p99)} |`,
      );
    }
  }
  lines.push("", ...reading(results, breakdown, Number(meta.cores)));
  if (meta.notes) lines.push("", meta.notes);
  lines.push("<!-- bench:gateway:end -->");
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------------

const log = (s: string) => console.error(s);

/** The commit the Worker was built from, and whether src/ had uncommitted changes (they are in the build). */
function sourceState(): string {
  try {
    const git = (...args: string[]) => execFileSync("git", args, { cwd: root, encoding: "utf8" }).trim();
    const head = git("rev-parse", "--short", "HEAD");
    const dirty = git("status", "--porcelain", "--", "src", "wrangler.toml").split("\n").filter(Boolean).length;
    return dirty ? `${head} plus ${dirty} uncommitted paths under src/ and wrangler.toml` : head;
  } catch {
    return "unknown";
  }
}

function logBlock(prefix: string, block: Block): void {
  const d = dist(block.samples.map((s) => s.ttft_ms));
  const c = block.cpu_ms_per_request;
  log(
    `${prefix} c=${String(block.concurrency).padStart(2)} ${block.target.padEnd(9)} n=${String(block.samples.length).padStart(3)}  TTFT p50 ${f1(d.p50).padStart(6)} p99 ${f1(d.p99).padStart(6)} ms  CPU ms/req client ${f1(c.client)} node ${f1(c.node)} workerd ${f1(c.workerd)} (${f2(block.workerd_cores)} cores)  other ${f2(block.other_cores)} cores${block.failed ? `  FAILED ${block.failed}: ${block.first_failure}` : ""}`,
  );
  if (block.failed > block.requests / 2)
    throw new Error(`${block.target}: ${block.failed} of ${block.requests} requests failed: ${block.first_failure}`);
}

/** A warm-up request: a failure is logged, not fatal (the blocks count failures). */
async function warmOnce(target: Target): Promise<number> {
  try {
    return (await once(target)).total_ms;
  } catch (err) {
    log(`warm-up ${target.name}: ${(err as Error).message}`);
    return Number.NaN;
  }
}

/** BENCH_RENDER_ONLY=1: the section written again from docs/benchmarks.json's figures (after a change to the prose), nothing run. */
function renderOnly(): void {
  const json = JSON.parse(readFileSync(`${root}docs/benchmarks.json`, "utf8")) as {
    gateway: { meta: Record<string, string>; results: ConcurrencyResult[]; breakdown: Breakdown | null };
  };
  const { meta, results, breakdown } = json.gateway;
  const section = renderMarkdown(results, breakdown, meta);
  if (!WRITE) {
    console.log(section);
    return;
  }
  writeBenchSection("gateway", section, json.gateway);
  log("wrote docs/benchmarks.md (figures from docs/benchmarks.json)");
}

/** When and where a run happened: the date, its duration, the machine, Node, the load average at its start. */
function machineMeta(started: number, load: number): Record<string, string> {
  return {
    date: new Date().toISOString().slice(0, 10),
    duration_s: ((performance.now() - started) / 1000).toFixed(0),
    cpu: cpus()[0]?.model ?? "unknown",
    cores: String(cpus().length),
    node: process.version,
    loadavg: load.toFixed(2),
  };
}

/** The breakdown's Worker (bench/lib/gateway-variants.ts) against a paced and an unpaced node. */
function startVariants(scriptPath: string, pacedUrl: string, unpacedUrl: string) {
  return startWorkerd({
    modules: true,
    scriptPath,
    compatibilityDate: COMPAT_DATE,
    compatibilityFlags: ["enable_request_signal"],
    bindings: {
      NODE_URL: pacedUrl,
      NODE_URL_UNPACED: unpacedUrl,
      NODE_SECRET,
      MESSAGES: JSON.stringify(MESSAGES),
      MAX_TOKENS: String(MAX_TOKENS),
      TEMPERATURE: String(TEMPERATURE),
    },
  });
}

/** The edge Worker's bindings: wrangler.toml's, the bench key, the node as the one static pool node, no result cache. */
function edgeBindingsFor(base: Record<string, unknown> | undefined, nodeUrl: string, relay: "native" | "js") {
  return {
    ...base,
    EDGE_RELAY: relay,
    EDGE_API_KEY: EDGE_KEY,
    NODE_SECRET,
    POOL_STATIC_NODES: JSON.stringify([{ id: "bench-node", url: nodeUrl, variant: "qwen-vl-chat", capacity: 128, engine: "simulated" }]),
    RESULT_CACHE_TTL_S: "0",
  };
}

async function main(): Promise<void> {
  if (process.env.BENCH_RENDER_ONLY === "1") return renderOnly();
  if (LADDER) return ladder();
  const started = performance.now();
  const load = loadavg()[0];
  const scriptPath = buildWorker();
  const variantsPath = BREAKDOWN ? buildVariants() : "";
  const node = await startNode();
  const nodePid = node.child.pid;
  const { workerOptions } = unstable_getMiniflareWorkerOptions(`${root}wrangler.toml`);
  const blocks: Block[] = [];
  let breakdown: Breakdown | null = null;
  const agents: Agent[] = [];
  const edgeBindings = (nodeUrl: string, relay: "native" | "js" = "native") => edgeBindingsFor(workerOptions.bindings, nodeUrl, relay);
  try {
    const edge = await startWorkerd({
      ...(workerOptions as object),
      modules: true,
      scriptPath,
      bindings: edgeBindings(node.url, MAIN_RELAY),
    } as MiniflareOptions);
    const pids: Pids = { node: nodePid, workerd: edge.pid, nodeUrl: node.url, intervalMs: DEFAULT_STREAM_INTERVAL_MS };
    if (PIN === "edge") {
      pinTo(0, edge.pid);
      pinTo(1, process.pid);
      pinTo(1, nodePid);
      console.error("pinned: workerd on CPU 0; client and node on CPU 1");
    } else if (PIN === "node") {
      pinTo(0, edge.pid);
      pinTo(0, process.pid);
      pinTo(1, nodePid);
      console.error("pinned: the node on CPU 1; client and workerd on CPU 0");
    }
    const targets = { direct: directTarget(node.url, MAIN_RELAY === "native"), edge: edgeTarget(edge.origin, MAIN_RELAY) };
    const control: Target = { ...directTarget(node.url, MAIN_RELAY === "native"), name: "control" };
    const sides = AA ? [targets.direct, targets.edge, control] : [targets.direct, targets.edge];
    agents.push(...sides.map((t) => t.agent));
    try {
      // Warm up both paths (JIT, connections, the pool's node list) and size the stagger.
      const warm: Record<string, number[]> = { direct: [], edge: [] };
      for (let i = 0; i < 4; i++) for (const t of [targets.direct, targets.edge]) warm[t.name].push(await warmOnce(t));
      if (AA) for (let i = 0; i < 4; i++) await warmOnce(control);
      const staggerMs = (dist(warm.direct.filter((x) => !Number.isNaN(x))).p50 || 350) / 64;
      for (const t of sides) logBlock("warm", await runBlock(t, 64, 2, pids, staggerMs));
      const ok = (xs: number[]) => xs.filter((x) => !Number.isNaN(x));
      log(
        `warm: direct ${f1(dist(ok(warm.direct)).p50)} ms, edge ${f1(dist(ok(warm.edge)).p50)} ms per request; stagger ${f1(staggerMs)} ms`,
      );

      for (let round = 0; round < ROUNDS; round++) {
        for (const concurrency of CONCURRENCY) {
          // Which side goes first rotates by round and by concurrency; every other turn the order is reversed
          // (with two sides: ABBA), so no side always follows the same one.
          const shift = (round + (concurrency === 1 ? 0 : 1)) % sides.length;
          const rotated = [...sides.slice(shift), ...sides.slice(0, shift)];
          for (const t of round % 2 === 0 ? rotated : rotated.reverse()) {
            const block = await runBlock(t, concurrency, concurrency === 1 ? C1_BLOCK : C64_PER_STREAM, pids, staggerMs);
            blocks.push(block);
            logBlock(`round ${round + 1}/${ROUNDS}`, block);
          }
        }
      }

      if (BREAKDOWN) {
        // The edge and direct again, at the same moment as the variants; then the same paths against a
        // node with pacing off (a second node, and a second workerd running the edge for it).
        breakdown = {};
        const unpaced = await startNode(0);
        const stops: Array<() => Promise<unknown>> = [async () => unpaced.child.kill("SIGTERM")];
        try {
          const variants = await startVariants(variantsPath, node.url, unpaced.url);
          stops.push(() => variants.mf.dispose());
          const edge0 = await startWorkerd({
            ...(workerOptions as object),
            modules: true,
            scriptPath,
            bindings: edgeBindings(unpaced.url, "js"),
          } as MiniflareOptions);
          stops.push(() => edge0.mf.dispose());
          const edgeJs = await startWorkerd({
            ...(workerOptions as object),
            modules: true,
            scriptPath,
            bindings: edgeBindings(node.url, "js"),
          } as MiniflareOptions);
          stops.push(() => edgeJs.mf.dispose());
          const vpids: Pids = { node: nodePid, workerd: variants.pid, nodeUrl: node.url, intervalMs: DEFAULT_STREAM_INTERVAL_MS };
          const upids = (workerd: number | undefined): Pids => ({ node: unpaced.child.pid, workerd, nodeUrl: unpaced.url, intervalMs: 0 });
          const all: Array<[Target, Pids]> = [
            [targets.direct, pids],
            ...["pass", "raw-loop", "stream"].map((v): [Target, Pids] => [variantTarget(variants.origin, v), vpids]),
            [targets.edge, pids],
            [
              { ...edgeTarget(edgeJs.origin, "js"), name: "edge-js" },
              { ...pids, workerd: edgeJs.pid },
            ],
            [{ ...directTarget(unpaced.url, false), name: "direct@0" }, upids(edge0.pid)],
            ...["raw-loop", "stream"].map((v): [Target, Pids] => [variantTarget(variants.origin, v, true), upids(variants.pid)]),
            [{ ...edgeTarget(edge0.origin, "js"), name: "edge-js@0" }, upids(edge0.pid)],
          ];
          for (const [t] of all) if (!agents.includes(t.agent)) agents.push(t.agent);
          for (const [t] of all) for (let i = 0; i < 3; i++) await warmOnce(t);
          for (const concurrency of CONCURRENCY) {
            for (const [t, p] of all) {
              const block = await runBlock(t, concurrency, concurrency === 1 ? BREAKDOWN_C1 : BREAKDOWN_C64_PER_STREAM, p, staggerMs);
              breakdown[t.name] ??= {};
              breakdown[t.name][concurrency] = summarize([block]);
              logBlock("breakdown", block);
            }
          }
        } finally {
          for (const stop of stops.reverse()) await stop().catch(() => {});
        }
      }
    } finally {
      await edge.mf.dispose();
    }
  } catch (err) {
    log(node.logs.slice(-20).join(""));
    throw err;
  } finally {
    node.child.kill("SIGTERM");
    await Promise.all(agents.map((a) => a.close()));
  }

  const results: ConcurrencyResult[] = CONCURRENCY.map((concurrency) => {
    const direct = summarize(blocks.filter((b) => b.concurrency === concurrency && b.target === "direct"));
    const edge = summarize(blocks.filter((b) => b.concurrency === concurrency && b.target === "edge"));
    const controlBlocks = blocks.filter((b) => b.concurrency === concurrency && b.target === "control");
    const control = controlBlocks.length ? summarize(controlBlocks) : undefined;
    return {
      concurrency,
      direct,
      edge,
      added_ms: { ttft: added(edge.ttft_ms, direct.ttft_ms), total: added(edge.total_ms, direct.total_ms) },
      ...(control
        ? { control, aa_ms: { ttft: added(control.ttft_ms, direct.ttft_ms), total: added(control.total_ms, direct.total_ms) } }
        : {}),
    };
  });
  const version = (name: string) =>
    (JSON.parse(readFileSync(`${root}node_modules/${name}/package.json`, "utf8")) as { version: string }).version;
  const meta: Record<string, string> = {
    ...machineMeta(started, load),
    workerd: version("workerd"),
    miniflare: version("miniflare"),
    rounds: String(ROUNDS),
    simulate: SIMULATE,
    source: sourceState(),
    notes: process.env.BENCH_NOTES ?? "",
  };
  for (const r of results) {
    const a = r.added_ms;
    log(
      `c=${r.concurrency}: added TTFT p50 ${signed(a.ttft.p50)} p99 ${signed(a.ttft.p99)} ms; total p50 ${signed(a.total.p50)} p99 ${signed(a.total.p99)} ms (tokens: direct ${r.direct.completion_tokens}, edge ${r.edge.completion_tokens})${r.aa_ms ? `; A/A TTFT p50 ${signed(r.aa_ms.ttft.p50)} p99 ${signed(r.aa_ms.ttft.p99)} ms` : ""}`,
    );
  }
  const section = renderMarkdown(results, breakdown, meta);
  if (!WRITE) {
    console.log(section);
    return;
  }
  writeBenchSection("gateway", section, {
    meta,
    results,
    breakdown,
    blocks: blocks.map(({ samples, ...b }) => ({ ...b, counted: samples.length })),
  });
  log("wrote docs/benchmarks.md and docs/benchmarks.json");
}

// ---------------------------------------------------------------------------------------------------
// The ladder (BENCH_LADDER=1)

/** The ladder's paths, each adding one layer to the one before it. */
const LADDER_PATHS: Array<{ name: string; what: string }> = [
  { name: "direct", what: "straight to the node (no workerd)" },
  { name: "pass-output", what: "workerd passes the node's OpenAI bytes through (no JavaScript after the fetch)" },
  {
    name: "first-output",
    what: "the native relay without the routes: JavaScript reads up to the first output (retry before the first token needs it), then a native pipe",
  },
  { name: "edge", what: "the edge, `/v1/chat/completions` with everything, native relay (`EDGE_RELAY=native`)" },
  {
    name: "edge-js",
    what: "the edge with its JS relay (`EDGE_RELAY=js`, the default): a JavaScript loop copies the node's bytes, a wake-up per chunk",
  },
  { name: "control", what: "straight to the node again (the A/A control)" },
];

interface LadderRow {
  name: string;
  what: string;
  summary: Summary;
  p995: number;
}

/**
 * At 64 streams a p99 of the main run's 1,024 requests per side is set by the few slowest ones, which come in
 * clusters (one stall delays every stream in flight), so it moves by tens of ms from run to run. The ladder runs
 * only 64-stream blocks, the paths taking turns as in the main run, 3,072 counted requests per path by default,
 * and each path adds one layer to the previous one, so the tail each layer adds can be told apart.
 */
async function ladder(): Promise<void> {
  const started = performance.now();
  const load = loadavg()[0];
  const rounds = Number(process.env.BENCH_ROUNDS ?? 12);
  const perStream = Math.max(3, Number(process.env.BENCH_C64_PER_STREAM ?? 6));
  const scriptPath = buildWorker();
  const variantsPath = buildVariants();
  const node = await startNode();
  const { workerOptions } = unstable_getMiniflareWorkerOptions(`${root}wrangler.toml`);
  const stops: Array<() => Promise<unknown>> = [];
  const agents: Agent[] = [];
  const blocks: Block[] = [];
  try {
    const edgeWith = async (relay: "native" | "js") => {
      const w = await startWorkerd({
        ...(workerOptions as object),
        modules: true,
        scriptPath,
        bindings: edgeBindingsFor(workerOptions.bindings, node.url, relay),
      } as MiniflareOptions);
      stops.push(() => w.mf.dispose());
      return w;
    };
    const edge = await edgeWith("native");
    const edgeJs = await edgeWith("js");
    const variants = await startVariants(variantsPath, node.url, node.url);
    stops.push(() => variants.mf.dispose());
    const base: Pids = { node: node.child.pid, workerd: undefined, nodeUrl: node.url, intervalMs: DEFAULT_STREAM_INTERVAL_MS };
    const paths: Record<string, [Target, Pids]> = {
      direct: [directTarget(node.url, true), base],
      "pass-output": [
        { ...variantTarget(variants.origin, "pass-output"), ...openAiSse() },
        { ...base, workerd: variants.pid },
      ],
      "first-output": [variantTarget(variants.origin, "first-output"), { ...base, workerd: variants.pid }],
      edge: [edgeTarget(edge.origin, "native"), { ...base, workerd: edge.pid }],
      "edge-js": [
        { ...edgeTarget(edgeJs.origin, "js"), name: "edge-js" },
        { ...base, workerd: edgeJs.pid },
      ],
      control: [{ ...directTarget(node.url, true), name: "control" }, base],
    };
    const order = LADDER_PATHS.map((p) => paths[p.name]);
    agents.push(...order.map(([t]) => t.agent));
    const directTotals: number[] = [];
    for (const [t] of order) for (let i = 0; i < 4; i++) (t.name === "direct" ? directTotals : []).push(await warmOnce(t));
    // Streams start spread over one request's duration, as in the main run.
    const staggerMs = (dist(directTotals.filter((x) => !Number.isNaN(x))).p50 || 350) / 64;
    for (const [t, p] of order) logBlock("warm", await runBlock(t, 64, 2, p, staggerMs));
    for (let round = 0; round < rounds; round++) {
      const shift = round % order.length;
      const rotated = [...order.slice(shift), ...order.slice(0, shift)];
      for (const [t, p] of round % 2 === 0 ? rotated : rotated.reverse()) {
        const block = await runBlock(t, 64, perStream, p, staggerMs);
        blocks.push(block);
        logBlock(`ladder ${round + 1}/${rounds}`, block);
      }
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    node.child.kill("SIGTERM");
    await Promise.all(agents.map((a) => a.close()));
  }

  const rows: LadderRow[] = LADDER_PATHS.map(({ name, what }) => {
    const mine = blocks.filter((b) => b.target === name);
    const ttfts = mine.flatMap((b) => b.samples.map((x) => x.ttft_ms)).sort((a, b) => a - b);
    return { name, what, summary: summarize(mine), p995: quantile(ttfts, 0.995) };
  });
  const meta: Record<string, string> = {
    ...machineMeta(started, load),
    rounds: String(rounds),
    per_stream: String(perStream),
    source: sourceState(),
  };
  const section = renderLadder(rows, meta);
  if (!WRITE) {
    console.log(section);
    return;
  }
  writeBenchSection("gateway-ladder", section, { meta, rows });
  log("wrote docs/benchmarks.md and docs/benchmarks.json (gateway-ladder)");
}

function renderLadder(rows: LadderRow[], meta: Record<string, string>): string {
  const direct = rows.find((r) => r.name === "direct")?.summary.ttft_ms;
  const row = (r: LadderRow) => {
    const s = r.summary;
    const t = s.ttft_ms;
    const w = s.wait_ms_per_request;
    const vs = direct && r.name !== "direct" ? `${signed(t.p50 - direct.p50)} / ${signed(t.p99 - direct.p99)}` : "";
    return `| ${r.name}: ${r.what} | ${s.requests_counted} (${s.requests_failed}) | ${f1(t.p50)} | ${f1(t.p90)} | ${f1(t.p99)} | ${f1(r.p995)} | ${vs} | ${f2(s.cpu_ms_per_request.workerd)} | ${w ? `${f2(w.client)} · ${f2(w.node)} · ${f2(w.workerd)}` : ""} |`;
  };
  return [
    "<!-- bench:gateway-ladder:start -->",
    "## Gateway at 64 streams, layer by layer",
    "",
    `Command: \`npm run bench:gateway-ladder\` (${meta.date}; ${meta.duration_s} s). Machine: ${meta.cpu}, ${meta.cores} cores; Node ${meta.node}; load average ${meta.loadavg} at the start. Worker built from ${meta.source}.`,
    "",
    "The 64-stream half of `bench:gateway` with more samples, and the path taken apart: each row adds one layer to the one",
    `above it. The same node, request and client as \`bench:gateway\`; only 64-stream blocks (${meta.per_stream} requests per stream, the first and`,
    `last of each stream not counted), the paths taking turns (${meta.rounds} round${meta.rounds === "1" ? "" : "s"}, the order rotating and reversing). **vs direct** is the row's`,
    "TTFT p50 / p99 minus direct's; **control** − direct is this run's resolution (two measurements of the same path).",
    "workerd CPU is per request, from /proc; **waiting** is how long each process's threads were ready to run but had no core.",
    "",
    "| path | counted (failed) | TTFT p50 | p90 | p99 | p99.5 | vs direct, p50 / p99 | workerd CPU ms/req | waiting ms/req: client · node · workerd |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ...rows.map(row),
    "",
    "Times in ms.",
    "<!-- bench:gateway-ladder:end -->",
  ].join("\n");
}

await main();
