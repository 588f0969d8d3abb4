/**
 * The simulated engine on its own: determinism, what its answers say, token splitting, logprobs,
 * max_tokens and stop strings, the shared vision pass, timing and faults, abort.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { describeTensors, GenerateHeader, type GenerateHeaderInput, type NodeEvent } from "../../../src/protocol/index";
import { f16ChannelMeans, syntheticTensor } from "../../test/support/frames";
import { inspectTensor, parseSimulateSpec, SIMULATED_MARKER, SimulatedEngine, type SimulatedOptions, splitTokens } from "./simulated";

const FAST: Partial<SimulatedOptions> = { visionMs: 0, prefillMs: 0, tokensPerS: 0 };
const f16 = syntheticTensor("f16", 3);
const u8 = syntheticTensor("u8", 4);

async function request(prompts: GenerateHeaderInput["prompts"], sampling: GenerateHeaderInput["sampling"] = {}, tensors = [f16]) {
  const header = GenerateHeader.parse({
    version: 1,
    request_id: "r",
    variant: "qwen-vl-chat",
    prompts,
    images: await describeTensors(
      tensors.map((bytes) => ({ dtype: bytes.length === f16.length ? ("f16" as const) : ("u8" as const), bytes })),
    ),
    sampling,
  });
  return { header, images: tensors, acceptedAt: performance.now() };
}

async function collect(
  engine: SimulatedEngine,
  req: Awaited<ReturnType<typeof request>>,
  signal = new AbortController().signal,
): Promise<NodeEvent[]> {
  const out: NodeEvent[] = [];
  for await (const e of engine.generate(req, signal)) out.push(e);
  return out;
}

const texts = (events: NodeEvent[]) => {
  const out: string[] = [];
  for (const e of events) if (e.type === "token") out[e.prompt] = (out[e.prompt] ?? "") + e.text;
  return out;
};

const describeImage = [
  { type: "image", index: 0 },
  { type: "user", text: "Describe the image." },
] as const;

describe("simulated engine", () => {
  it("answers deterministically: same request, same text, token split and logprobs", async () => {
    const req = await request([[...describeImage]], { logprobs: 3 });
    const a = await collect(new SimulatedEngine(FAST), req);
    const b = await collect(new SimulatedEngine(FAST), req);
    const strip = (events: NodeEvent[]) => events.map((e) => (e.type === "done" ? { ...e, timings: null } : e));
    expect(strip(a)).toEqual(strip(b));
    const other = await collect(new SimulatedEngine(FAST), await request([[...describeImage]], { seed: 7, logprobs: 3 }));
    // Another seed samples differently (the filler sentence may coincide; the logprobs do not).
    const lp = (events: NodeEvent[]) => events.flatMap((e) => (e.type === "token" ? e.logprobs!.map((l) => l.logprob) : []));
    expect(lp(other)).not.toEqual(lp(a));
  });

  it("names the tensor's sha256 and channel means, says it is simulated, and ends with done", async () => {
    const events = await collect(new SimulatedEngine(FAST), await request([[...describeImage]]));
    const text = texts(events)[0];
    expect(text.startsWith(SIMULATED_MARKER)).toBe(true);
    expect(text).toContain(`sha256=${createHash("sha256").update(f16).digest("hex")}`);
    const means = /channel_means=\[([^\]]+)\]/.exec(text)![1].split(",").map(Number);
    const expected = f16ChannelMeans(f16);
    for (let c = 0; c < 3; c++) expect(means[c]).toBeCloseTo(expected[c], 4);
    const done = events.at(-1)!;
    expect(done).toMatchObject({ type: "done", prompt: 0, finish_reason: "stop", engine: "simulated" });
    const tokens = events.filter((e) => e.type === "token").reduce((n, e) => n + (e.type === "token" ? e.tokens : 0), 0);
    expect(done.type === "done" && done.usage.completion_tokens).toBe(tokens);
    expect(done.type === "done" && done.usage.prompt_tokens).toBeGreaterThan(258);
  });

  it("reports u8 byte means", () => {
    const report = inspectTensor("u8", u8);
    const sums = [0, 0, 0];
    for (let i = 0; i < u8.length; i++) sums[i % 3] += u8[i];
    expect(report.means).toEqual(sums.map((s) => s / (u8.length / 3)));
  });

  it("answers grounding prompts with well-formed <ref>/<box>, tags split across tokens", async () => {
    const prompts: GenerateHeaderInput["prompts"] = [
      [
        { type: "image", index: 0 },
        { type: "user", text: "框出图中击掌的位置" },
      ],
      [
        { type: "image", index: 0 },
        { type: "user", text: "Give the bounding box of the red car." },
      ],
      [
        { type: "image", index: 0 },
        { type: "template", text: "<ref>the dog</ref><box>" },
      ],
    ];
    const events = await collect(new SimulatedEngine(FAST), await request(prompts, { logprobs: 0 }));
    const [zh, en, cont] = texts(events);
    const box = /<ref>([^<]+)<\/ref><box>\((\d+),(\d+)\),\((\d+),(\d+)\)<\/box>/;
    const check = (m: RegExpExecArray | null, label: string) => {
      expect(m, label).not.toBeNull();
      const [x1, y1, x2, y2] = m!.slice(2).map(Number);
      for (const v of [x1, y1, x2, y2]) expect(v >= 0 && v < 1000).toBe(true);
      expect(x1 < x2 && y1 < y2).toBe(true);
      expect(m![1]).toBe(label);
    };
    check(box.exec(zh), "击掌");
    check(box.exec(en), "red car");
    expect(zh.startsWith(SIMULATED_MARKER)).toBe(true);
    // The `<ref>…</ref><box>` form is continued with the coordinates, then the marker.
    expect(cont).toMatch(/^\(\d{1,3},\d{1,3}\),\(\d{1,3},\d{1,3}\)<\/box> \[simulated\]/);
    // Tags never arrive whole in one token.
    const pieces = events.flatMap((e) => (e.type === "token" ? e.logprobs!.map((l) => l.token) : []));
    expect(pieces).not.toContain("<ref>");
    expect(pieces.join("|")).toContain("<re|f>");
  });

  it("splits CJK text across tokens", () => {
    const tokens = splitTokens("[simulated] 这是模拟的回答，不描述图片内容。<ref>击掌</ref>");
    expect(tokens.join("")).toBe("[simulated] 这是模拟的回答，不描述图片内容。<ref>击掌</ref>");
    const cjk = tokens.filter((t) => /[\u4e00-\u9fff]/.test(t));
    expect(cjk.length).toBeGreaterThan(6);
    for (const t of cjk) expect([...t].length).toBeLessThanOrEqual(2);
    expect(tokens).toEqual(expect.arrayContaining(["<re", "f>", "</re"]));
  });

  it("returns plausible logprobs: negative, the chosen token the most likely, top-n on request", async () => {
    const events = await collect(new SimulatedEngine(FAST), await request([[...describeImage]], { logprobs: 3 }));
    const lps = events.flatMap((e) => (e.type === "token" ? (e.logprobs ?? []) : []));
    expect(lps.length).toBeGreaterThan(10);
    for (const lp of lps) {
      expect(lp.logprob).toBeLessThan(0);
      expect(lp.top).toHaveLength(3);
      expect(lp.top![0]).toEqual({ token: lp.token, logprob: lp.logprob });
      expect(lp.top![1].logprob).toBeLessThanOrEqual(lp.logprob);
      expect(lp.top!.reduce((p, t) => p + Math.exp(t.logprob), 0)).toBeLessThanOrEqual(1.0001);
    }
    const none = await collect(new SimulatedEngine(FAST), await request([[...describeImage]]));
    expect(none.some((e) => e.type === "token" && e.logprobs)).toBe(false);
    const chosenOnly = await collect(new SimulatedEngine(FAST), await request([[...describeImage]], { logprobs: 0 }));
    const first = chosenOnly.find((e) => e.type === "token");
    expect(first?.type === "token" && first.logprobs?.[0].top).toBeUndefined();
  });

  it("stops at max_tokens (length) and before a stop string (stop)", async () => {
    const short = await collect(new SimulatedEngine(FAST), await request([[...describeImage]], { max_tokens: 5 }));
    expect(short.at(-1)).toMatchObject({ finish_reason: "length", usage: { completion_tokens: 5 } });
    expect(short.filter((e) => e.type === "token").reduce((n, e) => n + (e.type === "token" ? e.tokens : 0), 0)).toBe(5);
    const stopped = await collect(new SimulatedEngine(FAST), await request([[...describeImage]], { stop: ["sha256="] }));
    const text = texts(stopped)[0];
    expect(text).not.toContain("sha256=");
    expect(text.length).toBeGreaterThan(10);
    expect(stopped.at(-1)).toMatchObject({ finish_reason: "stop" });
  });

  it("runs one vision pass for several prompts over the same image and reports vision_ms once", async () => {
    const engine = new SimulatedEngine({ ...FAST, visionMs: 20 });
    const events = await collect(
      engine,
      await request([
        [...describeImage],
        [
          { type: "image", index: 0 },
          { type: "user", text: "What colour is it?" },
        ],
      ]),
    );
    expect(engine.stats.visionPasses).toBe(1);
    const dones = events.filter((e) => e.type === "done");
    expect(dones).toHaveLength(2);
    const vision = dones.map((d) => (d.type === "done" ? d.timings.vision_ms : -1));
    expect(vision.filter((v) => v > 0)).toHaveLength(1);
    expect(Math.max(...vision)).toBeGreaterThanOrEqual(15);
  });

  it("paces tokens at tokens_per_s and batches what is due into one event", async () => {
    const engine = new SimulatedEngine({ visionMs: 0, prefillMs: 0, tokensPerS: 2000 });
    const t0 = performance.now();
    const events = await collect(engine, await request([[...describeImage]], { max_tokens: 100 }));
    const elapsed = performance.now() - t0;
    const tokenEvents = events.filter((e) => e.type === "token");
    expect(elapsed).toBeGreaterThanOrEqual(45); // 100 tokens at 2000/s
    expect(tokenEvents.length).toBeLessThan(100); // several tokens per event
  });

  it("injects faults: before the first token, mid-stream, stall until aborted", async () => {
    const req = await request([[...describeImage]]);
    const before = await collect(new SimulatedEngine({ ...FAST, fault: "fail_before_first_token" }), req);
    expect(before).toEqual([expect.objectContaining({ type: "error", code: "engine_failed", retryable: true })]);

    const mid = await collect(new SimulatedEngine({ ...FAST, fault: "fail_mid_stream", faultAfter: 6 }), req);
    expect(mid.at(-1)).toMatchObject({ type: "error", code: "engine_failed" });
    expect(mid.filter((e) => e.type === "token").reduce((n, e) => n + (e.type === "token" ? e.tokens : 0), 0)).toBe(6);

    const stalling = new SimulatedEngine({ ...FAST, fault: "stall" });
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 50);
    const stalled = await collect(stalling, req, abort.signal);
    expect(stalled).toEqual([]);
    expect(stalling.stats).toMatchObject({ aborted: 1, completed: 0, running: 0 });

    // fault_rate draws from a seeded generator: about half, and the same sequence every time.
    const cheap = await request([[{ type: "user", text: "hi" }]], {}, []);
    const draw = async () => {
      const e = new SimulatedEngine({ ...FAST, fault: "fail_before_first_token", faultRate: 0.5, seed: 42 });
      const out: boolean[] = [];
      for (let i = 0; i < 40; i++) out.push((await collect(e, cheap))[0].type === "error");
      return out;
    };
    const first = await draw();
    expect(await draw()).toEqual(first);
    expect(first.filter(Boolean).length).toBeGreaterThan(8);
    expect(first.filter(Boolean).length).toBeLessThan(32);
  });

  it("stops promptly when aborted mid-decode and counts it", async () => {
    const engine = new SimulatedEngine({ visionMs: 0, prefillMs: 0, tokensPerS: 50 });
    const abort = new AbortController();
    const events: NodeEvent[] = [];
    const t0 = performance.now();
    for await (const e of engine.generate(await request([[...describeImage]]), abort.signal)) {
      events.push(e);
      if (events.length === 2) abort.abort();
    }
    expect(performance.now() - t0).toBeLessThan(500);
    expect(engine.stats).toMatchObject({ generations: 1, aborted: 1, completed: 0, running: 0 });
  });

  it("parses --simulate specs and refuses bad ones", () => {
    expect(parseSimulateSpec("prefill_ms=50,tokens_per_s=200,fault=fail-mid-stream,fault_rate=0.5")).toEqual({
      prefillMs: 50,
      tokensPerS: 200,
      fault: "fail_mid_stream",
      faultRate: 0.5,
    });
    expect(parseSimulateSpec("")).toEqual({});
    expect(() => parseSimulateSpec("speed=3")).toThrow(/unknown key/);
    expect(() => parseSimulateSpec("fault_rate=2")).toThrow(/fault_rate/);
    expect(() => parseSimulateSpec("fault=explode")).toThrow(/fault=explode/);
    expect(() => parseSimulateSpec("capacity")).toThrow(/key=value/);
  });
});
