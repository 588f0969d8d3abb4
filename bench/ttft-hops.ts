/**
 * `npm run bench:ttft-hops`: the time to first token at 1 stream, taken apart hop by hop. A timestamping
 * TCP proxy (in this process, so on the client's clock) sits in front of one simulated GPU node, and every
 * path reaches the node through it:
 *
 *   - direct:  the client → proxy → node (`POST /v1/generate` with the frame the edge would send, with `output`);
 *   - pass:    the client → workerd passing the node's bytes through (bench/lib/gateway-variants.ts `pass`,
 *              no JavaScript per chunk; the response starts at the node's 200) → proxy → node: workerd's own hop;
 *   - edge:    the client → the edge (`POST /v1/chat/completions`, streaming, usage chunk, the built Worker with
 *              `EDGE_RELAY=native`) → proxy → node; edge-js: the same with `EDGE_RELAY=js` (the default relay);
 *   - base, base-js: (BENCH_BASE=<git revision>) the same two built from that revision, for an A/B in one run.
 *
 * Per request: **in** = from sending the request to the proxy seeing its first byte (what runs before the
 * node is asked); **node** = from there to the node's first output passing the proxy; **out** = from there
 * to the client reading the first token; **head** = to the client reading the response's status and headers;
 * **TTFT** = to the first token. Paths take turns request by request (N rounds, default 150). Medians.
 *
 * Then the same split at 64 streams in flight (BENCH_MANY=0 leaves it out): direct, edge and edge-js in
 * alternating blocks, 64 streams each sending requests one after another (starts spread over one request's
 * duration), every request tagged with its own `request_id` (the frame's; through the edge, the client's
 * `x-request-id`, which the edge forwards), so the proxy times each request on its own connection. p50 /
 * p90 / p99 of each hop: where the time the edge adds at 64 streams goes, the node's own hop included (on
 * shared cores the node runs slower while workerd works).
 *
 * Writes docs/benchmarks.md (between `<!-- bench:ttft-hops:start -->` and `end`) and the `ttft-hops` key of
 * docs/benchmarks.json (BENCH_WRITE=0: print instead).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import type { MiniflareOptions } from "miniflare";
import { Agent, request } from "undici";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { chatPrompt } from "../src/prompt/index";
import { encodeFrame, PROTOCOL_VERSION } from "../src/protocol/index";
import { startSimulatedNode } from "../test/support/simulated-node";
import { BENCH_MESSAGES, BENCH_OUTPUT } from "./lib/chat-request";
import { writeBenchSection } from "./lib/report";
import { startDirectWorkerd } from "./lib/workerd";

const root = fileURLToPath(new URL("..", import.meta.url));
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 150);
const WARMUP = 10;
const BASE = process.env.BENCH_BASE;
const WRITE = process.env.BENCH_WRITE !== "0";
const MANY = process.env.BENCH_MANY !== "0";
const MANY_STREAMS = 64;
/** Requests per stream per block at 64 streams (the first and last of each stream not counted: ramp up and down). */
const MANY_PER_STREAM = 5;
const MANY_ROUNDS = Number(process.env.BENCH_MANY_ROUNDS ?? 4);
const SECRET = randomBytes(16).toString("hex");
const KEY = `bench_${randomBytes(8).toString("hex")}`;
const SIMULATE = "prefill_ms=50,vision_ms=0,tokens_per_s=200";
const COMPAT_DATE = "2026-04-20";
const MESSAGES = BENCH_MESSAGES;
const CHAT_BODY = JSON.stringify({
  model: "qwen-vl-chat",
  messages: MESSAGES,
  stream: true,
  stream_options: { include_usage: true },
  max_tokens: 64,
  temperature: 0.7, // not cached, not shared
});
const OUTPUT = BENCH_OUTPUT;

const HOPS = ["in", "node", "out", "head", "ttft"] as const;
type Hop = (typeof HOPS)[number];
type Sample = Record<Hop, number> & { total: number };

/** What the proxy saw of the request in flight (one at a time). */
const seen = { requestAt: 0, outputAt: 0, text: "" };
/** At 64 streams: what the proxy saw of each request, by its `request_id`. */
const seenById = new Map<string, { requestAt: number; outputAt: number }>();
const FIRST_TOKEN = /"(content|text)":"[^"]/;

/** A TCP proxy to `target` that notes when a request's first byte arrives and when the node's first output passes. */
function startProxy(target: URL): Promise<{ url: string; server: net.Server }> {
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect(Number(target.port), target.hostname);
    upstream.setNoDelay(true);
    // This connection's request in flight, for the 64-stream part (requests on one connection come one after another).
    const tagged = { id: "", head: "", requestAt: 0, out: "" };
    client.on("data", (d) => {
      const now = performance.now();
      if (!seen.requestAt) seen.requestAt = now;
      if (!tagged.id) {
        if (!tagged.requestAt) tagged.requestAt = now;
        tagged.head = (tagged.head.length > 16_384 ? tagged.head.slice(-1024) : tagged.head) + d.toString("latin1");
        const id = /"request_id":"(h64-[^"]+)"/.exec(tagged.head)?.[1];
        if (id) {
          seenById.set(id, { requestAt: tagged.requestAt, outputAt: 0 });
          Object.assign(tagged, { id, head: "", out: "" });
        }
      }
      upstream.write(d);
    });
    upstream.on("data", (d) => {
      // The node's first output: its first `data: ` line (before it: the response head, keep-alive comments).
      if (seen.requestAt && !seen.outputAt) {
        seen.text += d.toString("latin1");
        if (seen.text.includes("\ndata: ")) seen.outputAt = performance.now();
      }
      if (tagged.id) {
        const entry = seenById.get(tagged.id);
        tagged.out += d.toString("latin1");
        if (entry && !entry.outputAt && FIRST_TOKEN.test(tagged.out)) entry.outputAt = performance.now();
        if (/data: \[DONE\]|event: (done|error)/.test(tagged.out)) Object.assign(tagged, { id: "", head: "", requestAt: 0, out: "" });
      }
      client.write(d);
    });
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => {});
    upstream.on("error", () => {});
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, server })),
  );
}

interface Path {
  name: string;
  send: () => Promise<Sample>;
}

/** One request read to its end: when it was sent, when its head and its first token were read, when it ended. */
async function post(
  url: string,
  headers: Record<string, string>,
  body: string | Uint8Array,
  agent: Agent,
): Promise<{ sent: number; head: number; first: number; end: number }> {
  const sent = performance.now();
  const res = await request(url, { method: "POST", headers, body, dispatcher: agent });
  const head = performance.now();
  if (res.statusCode !== 200) throw new Error(`${url}: HTTP ${res.statusCode} ${(await res.body.text()).slice(0, 200)}`);
  let first = 0;
  let text = "";
  for await (const chunk of res.body) {
    if (first) continue;
    text += Buffer.from(chunk as Uint8Array).toString("latin1");
    if (FIRST_TOKEN.test(text)) first = performance.now();
  }
  if (!first) throw new Error(`${url}: no token`);
  return { sent, head, first, end: performance.now() };
}

async function timed(url: string, headers: Record<string, string>, body: string | Uint8Array, agent: Agent): Promise<Sample> {
  seen.requestAt = 0;
  seen.outputAt = 0;
  seen.text = "";
  const { sent, head, first, end } = await post(url, headers, body, agent);
  return {
    in: seen.requestAt - sent,
    node: seen.outputAt - seen.requestAt,
    out: first - seen.outputAt,
    head: head - sent,
    ttft: first - sent,
    total: end - sent,
  };
}

// ---------------------------------------------------------------------------------------------------
// 64 streams

const MANY_HOPS = ["in", "node", "out", "ttft"] as const;
type ManySample = Record<(typeof MANY_HOPS)[number], number>;

interface ManyPath {
  name: string;
  send: (id: string, agent: Agent) => Promise<ManySample>;
  agent: Agent;
}

/** One tagged request: its hops from the proxy's notes under its `request_id`. */
async function timedMany(
  id: string,
  url: string,
  headers: Record<string, string>,
  body: string | Uint8Array,
  agent: Agent,
): Promise<ManySample> {
  const { sent, first } = await post(url, headers, body, agent);
  const noted = seenById.get(id);
  seenById.delete(id);
  if (!noted?.outputAt) throw new Error(`${url}: ${id}: the proxy saw no output`);
  return { in: noted.requestAt - sent, node: noted.outputAt - noted.requestAt, out: first - noted.outputAt, ttft: first - sent };
}

/** 64 streams, each sending MANY_PER_STREAM requests in a row, starts spread over one request's `length`. */
async function manyBlock(p: ManyPath, length: number, tag: string): Promise<ManySample[]> {
  const out: ManySample[] = [];
  await Promise.all(
    Array.from({ length: MANY_STREAMS }, async (_, stream) => {
      await new Promise((r) => setTimeout(r, (stream * length) / MANY_STREAMS));
      for (let i = 0; i < MANY_PER_STREAM; i++) {
        const sample = await p.send(`h64-${p.name}-${tag}-${stream}-${i}`, p.agent);
        if (i > 0 && i < MANY_PER_STREAM - 1) out.push(sample);
      }
    }),
  );
  return out;
}

function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  return s[lo] + (s[Math.ceil(pos)] - s[lo]) * (pos - lo);
}

const median = (values: number[]) => {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function build(cwd: string, outdir: string, config?: string): string {
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", outdir, ...(config ? ["--config", config] : [])], {
    cwd,
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
  });
  return outdir;
}

/** The edge at `rev`, built in a temporary worktree (this checkout's node_modules linked in). */
function buildBase(rev: string): string {
  const dir = mkdtempSync(`${tmpdir()}/qvl-base-`);
  execFileSync("git", ["worktree", "add", "--detach", dir, rev], { cwd: root, stdio: "ignore" });
  try {
    symlinkSync(`${root}node_modules`, `${dir}/node_modules`);
    return build(dir, `${root}.bench/ttft-hops-base`);
  } finally {
    execFileSync("git", ["worktree", "remove", "--force", dir], { cwd: root, stdio: "ignore" });
    rmSync(dir, { recursive: true, force: true });
  }
}

function git(...args: string[]): string {
  return execFileSync("git", args, { cwd: root, encoding: "utf8" }).trim();
}

async function main(): Promise<void> {
  const started = performance.now();
  const load = loadavg()[0].toFixed(2);
  const edgeDir = build(root, `${root}.bench/ttft-hops-edge`);
  mkdirSync(`${root}.bench`, { recursive: true });
  writeFileSync(
    `${root}.bench/ttft-hops-variants.toml`,
    `name = "bench-ttft-variants"\nmain = "../bench/lib/gateway-variants.ts"\ncompatibility_date = "${COMPAT_DATE}"\ncompatibility_flags = ["enable_request_signal"]\n`,
  );
  const variantsDir = build(root, `${root}.bench/ttft-hops-variants`, `${root}.bench/ttft-hops-variants.toml`);
  const baseDir = BASE ? buildBase(BASE) : undefined;

  const node = await startSimulatedNode({
    secret: SECRET,
    args: ["--variant", "qwen-vl-chat", "--simulate", SIMULATE, "--capacity", "128", "--max-queue", "256"],
  });
  const proxy = await startProxy(new URL(node.url));
  const { workerOptions } = unstable_getMiniflareWorkerOptions(`${root}wrangler.toml`);
  const edgeOptions = (scriptPath: string, relay: "native" | "js") =>
    ({
      ...(workerOptions as object),
      modules: true,
      scriptPath,
      bindings: {
        ...workerOptions.bindings,
        EDGE_RELAY: relay,
        EDGE_API_KEY: KEY,
        NODE_SECRET: SECRET,
        RESULT_CACHE_TTL_S: "0",
        POOL_STATIC_NODES: JSON.stringify([{ id: "n", url: proxy.url, variant: "qwen-vl-chat", capacity: 128, engine: "simulated" }]),
      },
    }) as MiniflareOptions;
  const workerds = [
    await startDirectWorkerd(edgeOptions(`${edgeDir}/index.js`, "native")),
    await startDirectWorkerd(edgeOptions(`${edgeDir}/index.js`, "js")),
    await startDirectWorkerd({
      modules: true,
      scriptPath: `${variantsDir}/gateway-variants.js`,
      compatibilityDate: COMPAT_DATE,
      compatibilityFlags: ["enable_request_signal"],
      bindings: {
        NODE_URL: proxy.url,
        NODE_URL_UNPACED: proxy.url,
        NODE_SECRET: SECRET,
        MESSAGES: JSON.stringify(MESSAGES),
        MAX_TOKENS: "64",
        TEMPERATURE: "0.7",
      },
    } as MiniflareOptions),
    ...(baseDir
      ? [
          await startDirectWorkerd(edgeOptions(`${baseDir}/index.js`, "native")),
          await startDirectWorkerd(edgeOptions(`${baseDir}/index.js`, "js")),
        ]
      : []),
  ];
  const [edge, edgeJs, variants, base, baseJs] = workerds;
  const agents: Agent[] = [];
  const agent = () => {
    const a = new Agent({ keepAliveTimeout: 3_000, keepAliveMaxTimeout: 3_000 });
    agents.push(a);
    return a;
  };
  const segments = chatPrompt("qwen-vl-chat", MESSAGES).segments;
  const chatTo = (origin: string, a: Agent) => () =>
    timed(`${origin}/v1/chat/completions`, { authorization: `Bearer ${KEY}`, "content-type": "application/json" }, CHAT_BODY, a);
  const paths: Path[] = [
    {
      name: "direct",
      send: (
        (a) => () =>
          timed(
            `${proxy.url}/v1/generate`,
            { authorization: `Bearer ${SECRET}`, "content-type": "application/octet-stream" },
            encodeFrame(
              {
                version: PROTOCOL_VERSION,
                request_id: randomBytes(8).toString("hex"),
                variant: "qwen-vl-chat",
                prompts: [segments],
                images: [],
                sampling: { max_tokens: 64, temperature: 0.7, top_p: 1, stop: [] },
                output: OUTPUT,
              },
              [],
            ),
            a,
          )
      )(agent()),
    },
    {
      name: "pass",
      send: (
        (a) => () =>
          timed(`${variants.origin}/?variant=pass`, { "content-type": "text/plain" }, "x", a)
      )(agent()),
    },
    {
      name: "first-output",
      send: (
        (a) => () =>
          timed(`${variants.origin}/?variant=first-output`, { "content-type": "text/plain" }, "x", a)
      )(agent()),
    },
    { name: "edge", send: chatTo(edge.origin, agent()) },
    { name: "edge-js", send: chatTo(edgeJs.origin, agent()) },
    ...(base
      ? [
          { name: "base", send: chatTo(base.origin, agent()) },
          { name: "base-js", send: chatTo(baseJs.origin, agent()) },
        ]
      : []),
  ];
  const samples: Record<string, Sample[]> = Object.fromEntries(paths.map((p) => [p.name, []]));
  const many: Record<string, ManySample[]> = {};
  try {
    for (let i = 0; i < WARMUP; i++) for (const p of paths) await p.send();
    for (let i = 0; i < ROUNDS; i++) {
      // Rotate which path goes first, so no path always follows the same one.
      for (let j = 0; j < paths.length; j++) {
        const p = paths[(i + j) % paths.length];
        samples[p.name].push(await p.send());
      }
    }
    if (MANY) {
      const direct = (id: string, a: Agent) =>
        timedMany(
          id,
          `${proxy.url}/v1/generate`,
          { authorization: `Bearer ${SECRET}`, "content-type": "application/octet-stream" },
          encodeFrame(
            {
              version: PROTOCOL_VERSION,
              request_id: id,
              variant: "qwen-vl-chat",
              prompts: [segments],
              images: [],
              sampling: { max_tokens: 64, temperature: 0.7, top_p: 1, stop: [] },
              output: OUTPUT,
            },
            [],
          ),
          a,
        );
      const chat = (origin: string) => (id: string, a: Agent) =>
        timedMany(
          id,
          `${origin}/v1/chat/completions`,
          { authorization: `Bearer ${KEY}`, "content-type": "application/json", "x-request-id": id },
          CHAT_BODY,
          a,
        );
      const manyPaths: ManyPath[] = [
        { name: "direct", send: direct, agent: agent() },
        { name: "edge", send: chat(edge.origin), agent: agent() },
        { name: "edge-js", send: chat(edgeJs.origin), agent: agent() },
      ];
      const length = median(samples.direct.map((s) => s.total));
      for (const p of manyPaths) await manyBlock(p, length, "warm");
      for (let round = 0; round < MANY_ROUNDS; round++) {
        for (let j = 0; j < manyPaths.length; j++) {
          const p = manyPaths[(round + j) % manyPaths.length];
          many[p.name] = [...(many[p.name] ?? []), ...(await manyBlock(p, length, `r${round}`))];
        }
      }
    }
  } finally {
    for (const a of agents) await a.close();
    for (const w of workerds) await w.mf.dispose();
    proxy.server.close();
    node.child.kill("SIGTERM");
  }
  const medians = Object.fromEntries(
    paths.map((p) => [p.name, Object.fromEntries(HOPS.map((h) => [h, median(samples[p.name].map((s) => s[h]))])) as Sample]),
  );
  const dirty = git("status", "--porcelain", "--", "src", "wrangler.toml").split("\n").filter(Boolean).length;
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    duration_s: String(Math.round((performance.now() - started) / 1000)),
    cpu: cpus()[0]?.model ?? "unknown",
    cores: String(cpus().length),
    node: process.version,
    loadavg: load,
    rounds: String(ROUNDS),
    source: `${git("rev-parse", "--short", "HEAD")}${dirty ? ` plus ${dirty} uncommitted paths under src/ and wrangler.toml` : ""}`,
    base: BASE ? git("rev-parse", "--short", BASE) : "",
    many_rounds: String(MANY_ROUNDS),
  };
  const manyQuantiles = Object.fromEntries(
    Object.entries(many).map(([name, xs]) => [
      name,
      {
        n: xs.length,
        ...Object.fromEntries(
          MANY_HOPS.map((h) => [
            h,
            {
              p50: quantile(
                xs.map((x) => x[h]),
                0.5,
              ),
              p90: quantile(
                xs.map((x) => x[h]),
                0.9,
              ),
              p99: quantile(
                xs.map((x) => x[h]),
                0.99,
              ),
            },
          ]),
        ),
      },
    ]),
  ) as Record<string, ManyQuantiles>;
  const section = render(medians, meta, manyQuantiles);
  if (WRITE) writeBenchSection("ttft-hops", section, { meta, medians, many: manyQuantiles });
  else console.log(section);
}

type ManyQuantiles = { n: number } & Record<(typeof MANY_HOPS)[number], { p50: number; p90: number; p99: number }>;

function render(medians: Record<string, Sample>, meta: Record<string, string>, many: Record<string, ManyQuantiles>): string {
  const f = (x: number) => x.toFixed(2);
  const signed = (x: number) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(2)}`;
  const d = medians.direct;
  const describe: Record<string, string> = {
    direct: "client → proxy → node",
    pass: "client → workerd passing bytes (no JS per chunk) → proxy → node",
    "first-output":
      "client → workerd reading to the first output in JS (`openNodeOutput`), then `relayNative` (the native relay's path, no routes) → proxy → node",
    edge: `client → the edge (\`/v1/chat/completions\`, native relay, built from ${meta.source}) → proxy → node`,
    "edge-js": "the same edge, JS relay (the default)",
    base: `the edge built from ${meta.base}, native relay`,
    "base-js": `the edge built from ${meta.base}, JS relay`,
  };
  const lines = [
    "<!-- bench:ttft-hops:start -->",
    "## Time to first token, hop by hop (1 stream)",
    "",
    `Command: \`${meta.base ? `BENCH_BASE=${meta.base} ` : ""}npm run bench:ttft-hops\` (${meta.date}; ${meta.duration_s} s; ${meta.rounds} requests per path, paths taking turns). Machine: ${meta.cpu}, ${meta.cores} cores, load average ${meta.loadavg} at the start; Node ${meta.node}.`,
    "",
    "A timestamping TCP proxy in the client's process sits in front of one simulated node (`" +
      SIMULATE +
      "`); every path goes through it. **in**: request sent → its first byte at the proxy (what runs before the node is asked); **node**: → the node's first output at the proxy; **out**: → the first token read by the client; **head**: request sent → the response's status and headers read; **TTFT**: → the first token. Medians, ms; **Δ TTFT** against direct.",
    "",
    "| path | in | node | out | head | TTFT | Δ TTFT |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ...Object.entries(medians).map(
      ([name, m]) =>
        `| ${name}: ${describe[name] ?? name} | ${f(m.in)} | ${f(m.node)} | ${f(m.out)} | ${f(m.head)} | ${f(m.ttft)} | ${name === "direct" ? "" : signed(m.ttft - d.ttft)} |`,
    ),
    "",
  ];
  const p = medians.pass;
  if (p) lines.push(`- workerd's own hop (pass − direct): in ${signed(p.in - d.in)}, out ${signed(p.out - d.out)} ms.`);
  const fo = medians["first-output"];
  if (p && fo) {
    lines.push(
      `- Seeing the first output in JavaScript before the client does (first-output − pass; what retry before the first token needs): in ${signed(fo.in - p.in)}, out ${signed(fo.out - p.out)} ms.`,
    );
    const e = medians.edge;
    if (e) {
      lines.push(
        `- The edge (native relay) over that: in ${signed(e.in - fo.in)} ms (routes, key, validation, prompt, router), out ${signed(e.out - fo.out)} ms (the response started early, the relay).`,
      );
    }
  }
  for (const [name, label] of [
    ["edge", "native relay"],
    ["edge-js", "JS relay"],
  ] as const) {
    const e = medians[name];
    if (!e || !p) continue;
    lines.push(
      `- The edge (${label}) over workerd's hop: in ${signed(e.in - p.in)} ms (routes, key, validation, prompt, router, frame), out ${signed(e.out - p.out)} ms (reading to the first output, the relay).`,
    );
    const b = medians[name === "edge" ? "base" : "base-js"];
    if (b) {
      lines.push(
        `  Against ${meta.base} (${label}), same run: TTFT ${signed(e.ttft - b.ttft)} ms (in ${signed(e.in - b.in)}, out ${signed(e.out - b.out)}); response head at ${f(e.head)} vs ${f(b.head)} ms.`,
      );
    }
  }
  const md = many.direct;
  if (md) {
    const f1 = (x: number) => x.toFixed(1);
    const s1 = (x: number) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(1)}`;
    lines.push(
      "",
      `### The same hops at ${MANY_STREAMS} streams`,
      "",
      `${MANY_STREAMS} streams in flight, each sending ${MANY_PER_STREAM} requests one after another (starts spread over one request's duration; each stream's first and last not counted), the three paths in alternating blocks (${meta.many_rounds} rounds); every request carries its own \`request_id\` (through the edge: the client's \`x-request-id\`, which the edge forwards), by which the proxy times it. p50 / p90 / p99, ms.`,
      "",
      "| path | requests | in | node | out | TTFT |",
      "|---|---:|---|---|---|---|",
      ...Object.entries(many).map(
        ([name, q]) => `| ${name} | ${q.n} | ${MANY_HOPS.map((h) => `${f1(q[h].p50)} / ${f1(q[h].p90)} / ${f1(q[h].p99)}`).join(" | ")} |`,
      ),
      "",
    );
    for (const name of ["edge", "edge-js"]) {
      const q = many[name];
      if (!q) continue;
      const d = (h: (typeof MANY_HOPS)[number], k: "p50" | "p99") => s1(q[h][k] - md[h][k]);
      lines.push(
        `- ${name} − direct, p50 (p99): TTFT ${d("ttft", "p50")} (${d("ttft", "p99")}) = in ${d("in", "p50")} (${d("in", "p99")}), node ${d("node", "p50")} (${d("node", "p99")}), out ${d("out", "p50")} (${d("out", "p99")}). **node** is the node's own time: the same node and requests as direct, slower while workerd takes CPU from it on the same cores (a deployed edge runs elsewhere).`,
      );
    }
  }
  lines.push("<!-- bench:ttft-hops:end -->");
  return lines.join("\n");
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
