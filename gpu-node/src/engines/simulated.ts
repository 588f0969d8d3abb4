/**
 * The `simulated` engine: no model runs. A declared test instrument for the edge's pool, routing,
 * streaming and load tests, and for checking the wire end to end.
 *
 * Its output is derived from the request alone (same request → same text, token split, logprobs):
 *   - every answer starts with `[simulated]` (a grounding continuation — a prompt ending in `<box>` —
 *     starts with the coordinates and has `[simulated]` right after `</box>`), and every done event says
 *     `engine: "simulated"`;
 *   - it names each image it received as `sha256=<64 hex>` (computed here, from the bytes that arrived)
 *     with its per-channel means (`f16`: the half floats decoded; `u8`: the byte values), so a client can
 *     prove the tensor arrived intact;
 *   - grounding prompts (`<ref>`, `检测框`/`框出`, "bounding box", "grounding") get
 *     `<ref>label</ref><box>(x1,y1),(x2,y2)</box>` with integers in [0, 1000);
 *   - tokens split CJK text and the tags (`<re` `f>`), logprobs are negative with top alternatives on
 *     request, `max_tokens` (finish "length") and stop strings are respected;
 *   - several prompts over the same images share one "vision pass" (vision_ms reported once).
 * Timing and faults come from a spec string, e.g.
 * `vision_ms=20,prefill_ms=50,tokens_per_s=200,fault=fail_mid_stream,fault_rate=0.5` (see SIMULATE_KEYS).
 */
import { createHash } from "node:crypto";
import type { GenerateHeader, NodeEvent, Segment, TokenEvent } from "../../../src/protocol/index";
import type { Engine, EngineHealth, GenerateRequest } from "./engine";

export const SIMULATED_MARKER = "[simulated]";
export const SIMULATED_VERSION = "sim-1";

export type SimulatedFault = "none" | "fail_before_first_token" | "fail_mid_stream" | "stall";

export interface SimulatedOptions {
  /** Requests run at once (the agent queues beyond it). */
  capacity: number;
  /** Vision-encoder time per image, once per request however many prompts use it. */
  visionMs: number;
  /** Prefill time per prompt. */
  prefillMs: number;
  /** Decode speed per prompt stream; 0 = no pacing (everything at once). */
  tokensPerS: number;
  fault: SimulatedFault;
  /** Share of requests that get the fault, drawn from a seeded generator (1 = every request). */
  faultRate: number;
  /** fail_mid_stream / stall: after this many tokens (default 4 / 0). */
  faultAfter?: number;
  /** stall: how long; 0 = until the request is aborted. */
  stallMs: number;
  /** Seed of the fault draw. */
  seed: number;
  /** How long start() takes (a model loading), ms. */
  startMs: number;
}

export const DEFAULT_SIMULATED_OPTIONS: SimulatedOptions = {
  capacity: 4,
  visionMs: 15,
  prefillMs: 30,
  tokensPerS: 60,
  fault: "none",
  faultRate: 1,
  stallMs: 0,
  seed: 1,
  startMs: 0,
};

/** The keys a `--simulate` spec takes, with what they set. */
export const SIMULATE_KEYS = {
  capacity: "requests run at once (default 4)",
  vision_ms: "vision time per image, shared by the prompts of a request (default 15)",
  prefill_ms: "prefill time per prompt (default 30)",
  tokens_per_s: "decode speed per prompt; 0 = unpaced (default 60)",
  fault: "none | fail_before_first_token | fail_mid_stream | stall (hyphens accepted)",
  fault_rate: "share of requests that get the fault, 0..1 (default 1)",
  fault_after: "tokens before fail_mid_stream / stall strike (default 4 / 0)",
  stall_ms: "stall length; 0 = until the request is aborted (default 0)",
  seed: "seed of the fault draw (default 1)",
  start_ms: "how long the engine takes to start, like a model loading (default 0)",
} as const;

/** Parses `key=value,key=value` (see SIMULATE_KEYS); throws a readable error on anything else. */
export function parseSimulateSpec(spec: string): Partial<SimulatedOptions> {
  const out: Partial<SimulatedOptions> = {};
  for (const part of spec.split(",").map((p) => p.trim())) {
    if (!part) continue;
    const eq = part.indexOf("=");
    if (eq < 0) throw new Error(`--simulate: '${part}' is not key=value`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    const num = (min: number, max = Number.POSITIVE_INFINITY, integer = false) => {
      const n = Number(value);
      if (value === "" || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
        throw new Error(`--simulate: ${key}=${value} must be ${integer ? "an integer" : "a number"} in [${min}, ${max}]`);
      }
      return n;
    };
    switch (key) {
      case "capacity":
        out.capacity = num(1, 1024, true);
        break;
      case "vision_ms":
        out.visionMs = num(0, 600_000);
        break;
      case "prefill_ms":
        out.prefillMs = num(0, 600_000);
        break;
      case "tokens_per_s":
        out.tokensPerS = num(0);
        break;
      case "fault": {
        const f = value.replaceAll("-", "_");
        if (f !== "none" && f !== "fail_before_first_token" && f !== "fail_mid_stream" && f !== "stall") {
          throw new Error(`--simulate: fault=${value} is not one of none, fail_before_first_token, fail_mid_stream, stall`);
        }
        out.fault = f;
        break;
      }
      case "fault_rate":
        out.faultRate = num(0, 1);
        break;
      case "fault_after":
        out.faultAfter = num(0, 100_000, true);
        break;
      case "stall_ms":
        out.stallMs = num(0, 3_600_000);
        break;
      case "seed":
        out.seed = num(0, 2 ** 32 - 1, true);
        break;
      case "start_ms":
        out.startMs = num(0, 3_600_000);
        break;
      default:
        throw new Error(`--simulate: unknown key '${key}' (known: ${Object.keys(SIMULATE_KEYS).join(", ")})`);
    }
  }
  return out;
}

/** The effective options as a spec string (for logs and the `listening` line). */
export function formatSimulateSpec(o: SimulatedOptions): string {
  const parts = [
    `capacity=${o.capacity}`,
    `vision_ms=${o.visionMs}`,
    `prefill_ms=${o.prefillMs}`,
    `tokens_per_s=${o.tokensPerS}`,
    `fault=${o.fault}`,
  ];
  if (o.startMs > 0) parts.push(`start_ms=${o.startMs}`);
  if (o.fault !== "none")
    parts.push(`fault_rate=${o.faultRate}`, `fault_after=${faultAfter(o)}`, `stall_ms=${o.stallMs}`, `seed=${o.seed}`);
  return parts.join(",");
}

const faultAfter = (o: SimulatedOptions) => o.faultAfter ?? (o.fault === "stall" ? 0 : 4);

/** Counters tests and the agent's operators can read. */
export interface SimulatedStats {
  generations: number;
  completed: number;
  /** Generations that stopped because their signal was aborted (client gone, deadline, drain). */
  aborted: number;
  faults: number;
  /** Vision passes run (one per request with images, whatever the number of prompts). */
  visionPasses: number;
  running: number;
}

export class SimulatedEngine implements Engine {
  readonly name = "simulated";
  readonly version = SIMULATED_VERSION;
  readonly capacity: number;
  readonly options: SimulatedOptions;
  readonly stats: SimulatedStats = { generations: 0, completed: 0, aborted: 0, faults: 0, visionPasses: 0, running: 0 };
  #health: EngineHealth = { ok: true };
  #started = false;
  #closed = new AbortController();
  #rng: () => number;

  constructor(options: Partial<SimulatedOptions> = {}) {
    this.options = { ...DEFAULT_SIMULATED_OPTIONS, ...options };
    this.capacity = this.options.capacity;
    this.#rng = mulberry32(this.options.seed);
  }

  async start(): Promise<void> {
    if (!(await sleep(this.options.startMs, this.#closed.signal))) throw new Error("the engine was closed while starting");
    this.#started = true;
  }

  health(): EngineHealth {
    if (this.#closed.signal.aborted) return { ok: false, detail: "engine closed" };
    if (!this.#started) return { ok: false, detail: "starting" };
    return this.#health;
  }

  /** For tests of the agent's health handling. */
  setHealth(health: EngineHealth): void {
    this.#health = health;
  }

  async close(): Promise<void> {
    this.#closed.abort();
  }

  async *generate(request: GenerateRequest, signal: AbortSignal): AsyncGenerator<NodeEvent> {
    const o = this.options;
    const stats = this.stats;
    stats.generations++;
    stats.running++;
    let finished = false;
    const sleeper = new Sleeper(signal);
    try {
      const t0 = performance.now();
      const queueMs = Math.max(0, t0 - request.acceptedAt);
      const fault: SimulatedFault = o.fault !== "none" && this.#rng() < o.faultRate ? o.fault : "none";
      if (fault !== "none") stats.faults++;
      const { header } = request;

      // One vision pass for every image any prompt uses: real checksums and means, then the modelled time.
      const used = [...new Set(header.prompts.flatMap((p) => p.filter((s) => s.type === "image").map((s) => s.index)))].sort(
        (a, b) => a - b,
      );
      const vision = new Map<number, ImageReport>();
      for (const i of used) vision.set(i, inspectTensor(header.images[i].dtype, request.images[i]));
      if (used.length > 0) {
        stats.visionPasses++;
        if (!(await sleeper.sleep(o.visionMs * used.length - (performance.now() - t0)))) return;
      }
      const t1 = performance.now();
      if (!(await sleeper.sleep(o.prefillMs * header.prompts.length))) return;
      const t2 = performance.now();

      if (fault === "fail_before_first_token") {
        yield {
          type: "error",
          code: "engine_failed",
          message: "simulated fault: the engine failed before the first token",
          retryable: true,
        };
        finished = true;
        return;
      }

      const answers = header.prompts.map((prompt, p) => planAnswer(header, p, prompt, vision));
      const emitted = answers.map(() => 0);
      const done = answers.map(() => false);
      const strikeAt = faultAfter(o);
      let total = 0;
      let stalled = false;
      let visionReported = false;
      const decodeStart = performance.now();
      for (;;) {
        const elapsed = performance.now() - decodeStart;
        const due = o.tokensPerS > 0 ? Math.floor((elapsed * o.tokensPerS) / 1000) + 1 : Number.POSITIVE_INFINITY;
        for (const [p, answer] of answers.entries()) {
          if (done[p]) continue;
          let n = Math.min(due, answer.tokens.length) - emitted[p];
          if (fault !== "none" && !stalled) n = Math.min(n, Math.max(0, strikeAt - total));
          if (n > 0) {
            yield tokenEvent(p, answer, emitted[p], n, header.sampling.logprobs);
            emitted[p] += n;
            total += n;
          }
          if (fault !== "none" && !stalled && total >= strikeAt) break;
          if (emitted[p] === answer.tokens.length) {
            done[p] = true;
            const now = performance.now();
            yield {
              type: "done",
              prompt: p,
              finish_reason: answer.finish,
              usage: { prompt_tokens: answer.promptTokens, completion_tokens: answer.tokens.length },
              timings: {
                queue_ms: round(queueMs),
                vision_ms: visionReported ? 0 : round(t1 - t0),
                prefill_ms: round(t2 - t1),
                decode_ms: round(now - decodeStart),
              },
              engine: "simulated",
            };
            visionReported = true;
          }
        }
        if (fault === "fail_mid_stream" && total >= strikeAt) {
          yield {
            type: "error",
            code: "engine_failed",
            message: `simulated fault: the engine failed after ${total} tokens`,
            retryable: true,
          };
          finished = true;
          return;
        }
        if (fault === "stall" && !stalled && total >= strikeAt) {
          stalled = true;
          if (!(await sleeper.sleep(o.stallMs > 0 ? o.stallMs : Number.POSITIVE_INFINITY))) return;
          continue;
        }
        if (done.every(Boolean)) break;
        const next = o.tokensPerS > 0 ? (due * 1000) / o.tokensPerS - (performance.now() - decodeStart) : 0;
        if (!(await sleeper.sleep(Math.max(1, next)))) return;
      }
      finished = true;
    } finally {
      sleeper.dispose();
      stats.running--;
      if (finished) stats.completed++;
      else if (signal.aborted) stats.aborted++;
    }
  }
}

export function createSimulatedEngine(options: Partial<SimulatedOptions> = {}): SimulatedEngine {
  return new SimulatedEngine(options);
}

// ---------------------------------------------------------------------------------------------------
// The answer: text, token split, logprobs, finish reason — all a function of the request.

export interface ImageReport {
  dtype: "f16" | "u8";
  sha256: string;
  /** Per channel (R, G, B). */
  means: [number, number, number];
}

interface PlannedToken {
  text: string;
  logprob: number;
  top?: Array<{ token: string; logprob: number }>;
}

interface PlannedAnswer {
  tokens: PlannedToken[];
  finish: "stop" | "length";
  promptTokens: number;
}

/** sha256 and per-channel means of one tensor: f16 CHW (decoded half floats) or u8 HWC (byte values). */
export function inspectTensor(dtype: "f16" | "u8", bytes: Uint8Array): ImageReport {
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const sums = [0, 0, 0];
  if (dtype === "f16") {
    const plane = bytes.byteLength / 6;
    for (let c = 0; c < 3; c++) {
      let s = 0;
      const base = c * plane * 2;
      for (let i = 0; i < plane; i++) s += HALF[bytes[base + 2 * i] | (bytes[base + 2 * i + 1] << 8)];
      sums[c] = s / plane;
    }
  } else {
    const pixels = bytes.byteLength / 3;
    for (let i = 0; i < bytes.byteLength; i += 3) {
      sums[0] += bytes[i];
      sums[1] += bytes[i + 1];
      sums[2] += bytes[i + 2];
    }
    for (let c = 0; c < 3; c++) sums[c] /= pixels;
  }
  return { dtype, sha256, means: [sums[0], sums[1], sums[2]] };
}

/** IEEE 754 half → number, for all 65536 bit patterns. */
const HALF = (() => {
  const table = new Float64Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) table[h] = sign * frac * 2 ** -24;
    else if (exp === 31) table[h] = frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
    else table[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return table;
})();

export function formatMeans(means: readonly number[]): string {
  return `[${means.map((m) => m.toFixed(4)).join(",")}]`;
}

const GROUNDING = /<ref>|<box>|检测框|框出|bounding box|with grounding|grounding/i;
const CJK = /[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]/;

function planAnswer(header: GenerateHeader, p: number, prompt: Segment[], vision: Map<number, ImageReport>): PlannedAnswer {
  const text = prompt.map((s) => (s.type === "image" ? "" : s.text)).join("");
  const userText = prompt.map((s) => (s.type === "user" ? s.text : "")).join("");
  const images = [...new Set(prompt.filter((s) => s.type === "image").map((s) => s.index))];
  const seedKey = JSON.stringify([
    prompt,
    images.map((i) => vision.get(i)?.sha256),
    header.sampling.seed ?? null,
    header.sampling.temperature,
  ]);
  const seed = hashString(seedKey);
  const chinese = CJK.test(userText);

  const described = images.map((i) => {
    const r = vision.get(i)!;
    const shape = r.dtype === "f16" ? "3x448x448" : "448x448x3";
    return chinese
      ? `图${i}（${r.dtype} ${shape}）：sha256=${r.sha256} channel_means=${formatMeans(r.means)}。`
      : `Image ${i} (${r.dtype} ${shape}): sha256=${r.sha256} channel_means=${formatMeans(r.means)}.`;
  });
  let answer: string;
  if (GROUNDING.test(text)) {
    const label = groundingLabel(text, chinese);
    const box = boxFor(`${label}|${images.map((i) => vision.get(i)?.sha256).join(",")}`);
    const coords = `(${box[0]},${box[1]}),(${box[2]},${box[3]})</box>`;
    const tail = described.join(" ");
    // A prompt that ends inside the box (Qwen-VL's `<ref>label</ref><box>` form) is continued, as the model would.
    answer = /<box>\s*$/.test(text)
      ? `${coords} ${SIMULATED_MARKER} ${tail}`.trimEnd()
      : `${SIMULATED_MARKER} <ref>${label}</ref><box>${coords}${tail ? ` ${tail}` : ""}`;
  } else {
    const excerpt = userText.replace(/\s+/g, " ").trim().slice(0, 60);
    const filler = chinese ? ZH_FILLER[seed % ZH_FILLER.length] : EN_FILLER[seed % EN_FILLER.length];
    answer = chinese
      ? `${SIMULATED_MARKER} 没有运行模型，这段文字由请求推导而来。${described.join("")}${excerpt ? `问题${p}：「${excerpt}」。` : ""}${filler}`
      : `${SIMULATED_MARKER} No model ran; this text is derived from the request. ${described.join(" ")}${described.length ? " " : ""}${
          excerpt ? `Prompt ${p} asked: "${excerpt}". ` : ""
        }${filler}`;
  }

  const pieces = splitTokens(answer);
  const { max_tokens: maxTokens, stop, logprobs } = header.sampling;
  // The earliest stop string ends the answer (not included), unless max_tokens comes first.
  let cut = answer.length;
  for (const s of stop) {
    const at = answer.indexOf(s);
    if (at >= 0 && at < cut) cut = at;
  }
  const kept: string[] = [];
  let pos = 0;
  for (const piece of pieces) {
    if (pos >= cut) break;
    kept.push(piece.slice(0, cut - pos));
    pos += piece.length;
  }
  let finish: "stop" | "length" = "stop";
  if (kept.length > maxTokens) {
    kept.length = maxTokens;
    finish = "length";
  }
  const tokens = kept.map((t, i) => planToken(t, seed + i * 7919, logprobs));
  const promptTokens = prompt.reduce((n, s) => n + (s.type === "image" ? IMAGE_PROMPT_TOKENS : splitTokens(s.text).length), 0);
  return { tokens, finish, promptTokens };
}

/** `<img>` + 256 embedding slots + `</img>`. */
const IMAGE_PROMPT_TOKENS = 258;

const EN_FILLER = [
  "The scene is rendered in plausible detail, but nothing here was seen.",
  "A test instrument answered; the pool, the stream and the tensor bytes are what it checks.",
  "Nothing in this sentence describes the picture.",
  "Read the checksums above to prove the tensor arrived intact.",
];
const ZH_FILLER = ["这是模拟的回答，不描述图片内容。", "校验和可以证明张量完整到达。", "这句话只是用来测试中文分词。"];

function groundingLabel(text: string, chinese: boolean): string {
  const refs = [...text.matchAll(/<ref>([^<]{1,64})<\/ref>/g)];
  if (refs.length > 0) return refs[refs.length - 1][1].trim() || "object";
  // Qwen-VL-Chat style instructions quote the expression: 输出"…"的检测框 / Output the bounding box of "…".
  const quoted = /["“]([^"”\n]{1,64})["”]/.exec(text);
  if (quoted) return quoted[1].trim() || (chinese ? "物体" : "object");
  const zh = /框出(?:图中|图片中)?(.{1,16}?)(?:的位置|的检测框|[，。？！,.?!]|$)/.exec(text) ?? /(.{1,16}?)的检测框/.exec(text);
  if (zh) return zh[1].trim() || "物体";
  const en = /(?:bounding box (?:of|for|around)|detect|locate|find)\s+(?:the\s+)?([a-z][a-z -]{0,30}?)(?:[.,?!]|\s+in\b|$)/i.exec(text);
  if (en) return en[1].trim();
  return chinese ? "物体" : "object";
}

/** Integers in [0, 1000), x1 < x2, y1 < y2, from a key. */
function boxFor(key: string): [number, number, number, number] {
  const h = createHash("sha256").update(key).digest();
  const x1 = h.readUInt16BE(0) % 900;
  const y1 = h.readUInt16BE(2) % 900;
  const x2 = x1 + 1 + (h.readUInt16BE(4) % (999 - x1));
  const y2 = y1 + 1 + (h.readUInt16BE(6) % (999 - y1));
  return [x1, y1, x2, y2];
}

/**
 * A deliberately awkward tokenizer, so clients meet what a real one does: the grounding tags split in
 * two (`<re` `f>`), CJK one or two characters a token, digits one a token, long hex runs in fours,
 * words in pieces of at most five letters.
 */
export function splitTokens(text: string): string[] {
  const out: string[] = [];
  const re = /<\/?(?:ref|box|quad|img)>| ?[0-9a-f]{16,}|[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]+| ?[A-Za-z]+| ?[0-9]|\s+|./gsu;
  for (const m of text.matchAll(re)) {
    const t = m[0];
    if (t.startsWith("<") && t.endsWith(">") && t.length > 3) {
      const split = t.length - 2;
      out.push(t.slice(0, split), t.slice(split));
    } else if (/^ ?[0-9a-f]{16,}$/.test(t)) {
      const lead = t.startsWith(" ") ? 1 : 0;
      for (let i = 0; i < t.length; ) {
        const end = i === 0 ? lead + 4 : i + 4;
        out.push(t.slice(i, end));
        i = end;
      }
    } else if (CJK.test(t)) {
      const chars = [...t];
      for (let i = 0; i < chars.length; ) {
        const n = pieceHash(chars[i]) % 3 === 0 && i + 1 < chars.length ? 2 : 1;
        out.push(chars.slice(i, i + n).join(""));
        i += n;
      }
    } else if (/^ ?[A-Za-z]+$/.test(t) && t.length > 5) {
      for (let i = 0; i < t.length; i += 5) out.push(t.slice(i, i + 5));
    } else {
      out.push(t);
    }
  }
  return out;
}

const ALTERNATIVES = [" the", " a", ",", ".", " of", " and", "的", "是", " image", " in"];

function planToken(text: string, key: number, topN: number | undefined): PlannedToken {
  const rng = mulberry32(pieceHash(text) ^ key);
  // Mostly confident, sometimes not: logprob in (-0.9, -0.0005]; the chosen token stays the most likely.
  const logprob = -(0.0005 + 0.9 * rng() ** 3);
  const token: PlannedToken = { text, logprob: round(logprob, 4) };
  if (topN !== undefined && topN > 0) {
    let rest = 1 - Math.exp(logprob);
    const top = [{ token: text, logprob: token.logprob }];
    for (const alt of ALTERNATIVES) {
      if (top.length >= topN) break;
      if (alt === text) continue;
      const p = rest * (0.5 + 0.2 * rng());
      rest -= p;
      top.push({ token: alt, logprob: round(Math.log(Math.max(p, 1e-9)), 4) });
    }
    token.top = top;
  }
  return token;
}

function tokenEvent(prompt: number, answer: PlannedAnswer, from: number, n: number, logprobs: number | undefined): TokenEvent {
  const slice = answer.tokens.slice(from, from + n);
  const event: TokenEvent = { type: "token", prompt, text: slice.map((t) => t.text).join(""), tokens: slice.length };
  if (logprobs !== undefined) {
    event.logprobs = slice.map((t) => (t.top ? { token: t.text, logprob: t.logprob, top: t.top } : { token: t.text, logprob: t.logprob }));
  }
  return event;
}

// ---------------------------------------------------------------------------------------------------

/** Resolves true after `ms`, or false as soon as `signal` aborts (Infinity: only the abort ends it). */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  const sleeper = new Sleeper(signal);
  return sleeper.sleep(ms).finally(() => sleeper.dispose());
}

/**
 * `sleep` for the many waits of one generation (one per decode step): one abort listener for all of
 * them instead of one added and removed per token, and no closures per wait.
 */
class Sleeper {
  readonly #signal: AbortSignal;
  #resolve: ((ok: boolean) => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #onAbort = () => this.#finish(false);
  readonly #onTimeout = () => this.#finish(true);

  constructor(signal: AbortSignal) {
    this.#signal = signal;
    signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Resolves true after `ms`, or false as soon as the signal aborts (Infinity: only the abort ends it). */
  sleep(ms: number): Promise<boolean> {
    if (this.#signal.aborted) return Promise.resolve(false);
    if (ms <= 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      this.#resolve = resolve;
      if (Number.isFinite(ms)) this.#timer = setTimeout(this.#onTimeout, ms);
    });
  }

  #finish(ok: boolean): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const resolve = this.#resolve;
    this.#resolve = undefined;
    resolve?.(ok);
  }

  dispose(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#signal.removeEventListener("abort", this.#onAbort);
  }
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hashString(s: string): number {
  return createHash("sha256").update(s).digest().readUInt32BE(0);
}

/**
 * `hashString` of a token's text (or a CJK character), memoised: the same pieces come back in every
 * answer, and a sha256 per token was the engine's largest cost. Bounded: cleared when full.
 */
const pieceHashes = new Map<string, number>();
const PIECE_HASHES_MAX = 16_384;

function pieceHash(s: string): number {
  let h = pieceHashes.get(s);
  if (h === undefined) {
    if (pieceHashes.size >= PIECE_HASHES_MAX) pieceHashes.clear();
    h = hashString(s);
    pieceHashes.set(s, h);
  }
  return h;
}

const round = (n: number, digits = 2) => Number(n.toFixed(digits));
