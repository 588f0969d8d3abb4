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
type Sample = Record<Hop, number>;

/** What the proxy saw of the request in flight (one at a time). */
const seen = { requestAt: 0, outputAt: 0, text: "" };

/** A TCP proxy to `target` that notes when a request's first byte arrives and when the node's first output passes. */
function startProxy(target: URL): Promise<{ url: string; server: net.Server }> {
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect(Number(target.port), target.hostname);
    upstream.setNoDelay(true);
    client.on("data", (d) => {
      if (!seen.requestAt) seen.requestAt = performance.now();
      upstream.write(d);
    });
    upstream.on("data", (d) => {
      // The node's first output: its first `data: ` line (before it: the response head, keep-alive comments).
      if (seen.requestAt && !seen.outputAt) {
        seen.text += d.toString("latin1");
        if (seen.text.includes("\ndata: ")) seen.outputAt = performance.now();
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

async function timed(url: string, headers: Record<string, string>, body: string | Uint8Array, agent: Agent): Promise<Sample> {
  seen.requestAt = 0;
  seen.outputAt = 0;
  seen.text = "";
  const t0 = performance.now();
  const res = await request(url, { method: "POST", headers, body, dispatcher: agent });
  const head = performance.now() - t0;
  if (res.statusCode !== 200) throw new Error(`${url}: HTTP ${res.statusCode} ${(await res.body.text()).slice(0, 200)}`);
  let first = 0;
  let text = "";
  for await (const chunk of res.body) {
    if (first) continue;
    text += Buffer.from(chunk as Uint8Array).toString("latin1");
    if (/"(content|text)":"[^"]/.test(text)) first = performance.now() - t0;
  }
  if (!first) throw new Error(`${url}: no token`);
  const requestAt = seen.requestAt - t0;
  const outputAt = seen.outputAt - t0;
  return { in: requestAt, node: outputAt - requestAt, out: first - outputAt, head, ttft: first };
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

  const node = await startSimulatedNode({ secret: SECRET, args: ["--variant", "qwen-vl-chat", "--simulate", SIMULATE, "--capacity", "8"] });
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
  try {
    for (let i = 0; i < WARMUP; i++) for (const p of paths) await p.send();
    for (let i = 0; i < ROUNDS; i++) {
      // Rotate which path goes first, so no path always follows the same one.
      for (let j = 0; j < paths.length; j++) {
        const p = paths[(i + j) % paths.length];
        samples[p.name].push(await p.send());
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
  };
  const section = render(medians, meta);
  if (WRITE) writeBenchSection("ttft-hops", section, { meta, medians });
  else console.log(section);
}

function render(medians: Record<string, Sample>, meta: Record<string, string>): string {
  const f = (x: number) => x.toFixed(2);
  const signed = (x: number) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(2)}`;
  const d = medians.direct;
  const describe: Record<string, string> = {
    direct: "client → proxy → node",
    pass: "client → workerd passing bytes (no JS per chunk) → proxy → node",
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
