/**
 * The trtllm engine against a fake worker: gpu-node/test/fixtures/fake-qvl-worker.py runs the real Python
 * worker loop (framing, prompt assembly, detokenizer, request state machine) around a scripted engine, so
 * everything but TensorRT-LLM itself is exercised across the real process boundary.
 */
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { GenerateHeader, type GenerateHeaderInput, type NodeEvent } from "../../src/protocol/index";
import type { Engine, GenerateRequest } from "../src/engines/engine";
import { createTrtllmEngine, type TrtllmEngineOptions } from "../src/engines/trtllm";
import { encodeMessage, IpcError, MessageDecoder } from "../src/engines/worker-ipc";

const FAKE_WORKER = fileURLToPath(new URL("./fixtures/fake-qvl-worker.py", import.meta.url));
const IMAGE = new Uint8Array(448 * 448 * 3).map((_, i) => (i * 7) % 251);

function request(users: string[], images = 1, id = "req-1"): GenerateRequest {
  const input: GenerateHeaderInput = {
    version: 1,
    request_id: id,
    variant: "qwen-vl-chat",
    prompts: users.map((text) => [
      { type: "template", text: "<|im_start|>user\nPicture 1: " },
      ...(images ? [{ type: "image" as const, index: 0 }] : []),
      { type: "template", text: "\n" },
      { type: "user", text },
      { type: "template", text: "<|im_end|>\n<|im_start|>assistant\n" },
    ]),
    images: Array.from({ length: images }, () => ({
      dtype: "u8" as const,
      shape: [448, 448, 3] as [number, number, number],
      // Offsets into the original frame: the engine re-lays the tensors out in its own payload.
      offset: 1000,
      length: IMAGE.byteLength,
      sha256: createHash("sha256").update(IMAGE).digest("hex"),
    })),
    sampling: { max_tokens: 32 },
  };
  return { header: GenerateHeader.parse(input), images: Array.from({ length: images }, () => IMAGE), acceptedAt: performance.now() };
}

async function collect(events: AsyncIterable<NodeEvent>, until?: (e: NodeEvent[]) => boolean): Promise<NodeEvent[]> {
  const out: NodeEvent[] = [];
  for await (const e of events) {
    out.push(e);
    if (until?.(out)) break;
  }
  return out;
}

async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

const engines: Engine[] = [];
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()));
});

function fakeEngine(extra: Partial<TrtllmEngineOptions> = {}) {
  const logs: string[] = [];
  const stderr: string[] = [];
  const engine = createTrtllmEngine({
    engineDir: "/nonexistent/engines",
    command: ["python3", FAKE_WORKER, "--engine-dir", "/nonexistent/engines"],
    restart: { initialDelayMs: 20, maxDelayMs: 100 },
    stopTimeoutMs: 2000,
    onLog: (_level, message) => logs.push(message),
    onStderr: (text) => stderr.push(text),
    ...extra,
  });
  engines.push(engine);
  return { engine, logs, stderr };
}

describe("worker IPC framing", () => {
  it("round-trips messages with payloads, across arbitrary chunking", () => {
    const frames = Buffer.concat([
      ...encodeMessage({ type: "generate", id: "a", text: "中文" }, [new Uint8Array([1, 2, 3]), new Uint8Array([4])]),
      ...encodeMessage({ type: "cancel", id: "a", payload_bytes: 7 }),
    ]);
    const decoder = new MessageDecoder();
    const got = [];
    for (let i = 0; i < frames.length; i += 3) got.push(...decoder.push(frames.subarray(i, i + 3)));
    expect(got.map((m) => m.body)).toEqual([
      { type: "generate", id: "a", text: "中文", payload_bytes: 4 },
      { type: "cancel", id: "a" },
    ]);
    expect([...got[0].payload]).toEqual([1, 2, 3, 4]);
    expect(got[1].payload.byteLength).toBe(0);
    expect(decoder.atBoundary).toBe(true);
  });

  it("refuses oversize and malformed messages", () => {
    const frame = (json: string) => {
      const body = Buffer.from(json);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length);
      return Buffer.concat([head, body]);
    };
    const limits = { maxJsonBytes: 64, maxPayloadBytes: 100 };
    const code = (bytes: Buffer) => {
      try {
        new MessageDecoder(limits).push(bytes);
      } catch (err) {
        return (err as IpcError).code;
      }
      return "accepted";
    };
    const hugeLength = Buffer.alloc(4);
    hugeLength.writeUInt32BE(65);
    expect(code(hugeLength)).toBe("json_too_large");
    expect(code(frame('{"type":"g","payload_bytes":101}'))).toBe("payload_too_large");
    expect(code(frame("{nope"))).toBe("invalid_json");
    expect(code(frame("[1]"))).toBe("invalid_message");
    expect(code(frame('{"id":"x"}'))).toBe("invalid_message");
    expect(code(frame('{"type":"g","payload_bytes":-1}'))).toBe("invalid_message");
    expect(code(frame('{"type":"g"}'))).toBe("accepted");
    expect(() => encodeMessage({ type: "x", blob: "a".repeat(100) }, [], limits)).toThrow(IpcError);
  });
});

describe("trtllm engine with a fake worker", () => {
  it("completes the ready handshake", async () => {
    const { engine } = fakeEngine();
    expect(engine.health().ok).toBe(false);
    await engine.start();
    expect(engine.health()).toEqual({ ok: true });
    expect(engine.name).toBe("trtllm");
    expect(engine.version).toBe("fake-trtllm");
    expect(engine.capacity).toBe(3);
  });

  it("turns streamed tokens into events, one vision pass for every prompt", async () => {
    const { engine, logs } = fakeEngine();
    await engine.start();
    const events = await collect(engine.generate(request(["What is it?", "Describe it."]), new AbortController().signal));
    for (const prompt of [0, 1]) {
      const mine = events.filter((e) => "prompt" in e && e.prompt === prompt);
      expect(mine.filter((e) => e.type === "token").map((e) => (e.type === "token" ? e.text : ""))).toEqual(["Hello ", "世", "界"]);
      const done = mine.at(-1);
      expect(done).toMatchObject({ type: "done", finish_reason: "stop", engine: "trtllm", usage: { completion_tokens: 12 } });
    }
    const sha = createHash("sha256").update(IMAGE).digest("hex");
    expect(logs.filter((l) => l.startsWith("images "))).toEqual([`images u8:${sha}`]);
  });

  it("sends cancel to the worker when the request is aborted", async () => {
    const { engine, logs } = fakeEngine();
    await engine.start();
    const controller = new AbortController();
    const events = await collect(engine.generate(request(["go slow please"]), controller.signal), (e) => {
      if (e.length === 3) controller.abort();
      return false;
    });
    expect(events.length).toBeGreaterThanOrEqual(3);
    expect(events.every((e) => e.type === "token")).toBe(true);
    await waitFor(() => logs.some((l) => /^cancel \d+$/.test(l)));
    // The engine keeps serving.
    const next = await collect(engine.generate(request(["hi"], 0, "req-2"), new AbortController().signal));
    expect(next.at(-1)).toMatchObject({ type: "done", finish_reason: "stop" });
  });

  it("cancels when the consumer stops reading", async () => {
    const { engine, logs } = fakeEngine();
    await engine.start();
    await collect(engine.generate(request(["slow"], 0), new AbortController().signal), (e) => e.length === 2);
    await waitFor(() => logs.some((l) => /^cancel \d+$/.test(l)));
  });

  it("reports an engine error for one request as a retryable error and turns health red until a success", async () => {
    const { engine } = fakeEngine();
    await engine.start();
    const events = await collect(engine.generate(request(["please fail"]), new AbortController().signal));
    expect(events).toEqual([
      { type: "error", prompt: 0, code: "engine_failed", message: expect.stringContaining("illegal memory access"), retryable: true },
    ]);
    expect(engine.health().ok).toBe(false);
    const ok = await collect(engine.generate(request(["hi"]), new AbortController().signal));
    expect(ok.at(-1)?.type).toBe("done");
    expect(engine.health().ok).toBe(true);
  });

  it("fails in-flight requests with a retryable error when the worker dies, then restarts it", async () => {
    const { engine } = fakeEngine();
    await engine.start();
    const slow = collect(engine.generate(request(["slow one"], 0, "other"), new AbortController().signal));
    const events = await collect(engine.generate(request(["crash now"]), new AbortController().signal));
    const last = events.at(-1);
    expect(last).toMatchObject({ type: "error", code: "engine_failed", retryable: true });
    expect(events.some((e) => e.type === "done")).toBe(false);
    expect((await slow).at(-1)).toMatchObject({ type: "error", code: "engine_failed", retryable: true });
    expect(engine.health().ok).toBe(false);
    expect(engine.health().detail).toMatch(/code 17/);
    const refused = await collect(engine.generate(request(["too early"]), new AbortController().signal));
    expect(refused).toMatchObject([{ type: "error", code: "engine_unavailable", retryable: true }]);
    await waitFor(() => engine.health().ok);
    expect((engine as ReturnType<typeof createTrtllmEngine>).restarts).toBe(1);
    const after = await collect(engine.generate(request(["hello again"]), new AbortController().signal));
    expect(after.at(-1)).toMatchObject({ type: "done", finish_reason: "stop" });
  });

  it("rejects start() when the engine cannot load", async () => {
    const { engine, stderr } = fakeEngine({ env: { FAKE_WORKER_LOAD_FAIL: "1" } });
    await expect(engine.start()).rejects.toThrow(/cannot open llm\/rank0.engine/);
    await waitFor(() => stderr.join("").includes("RuntimeError: cannot open"));
    expect(engine.health()).toMatchObject({ ok: false, detail: expect.stringContaining("cannot open") });
    await waitFor(() => /worker exited \(code 3\)/.test(engine.health().detail ?? ""));
  });

  it("rejects start() when the worker cannot be spawned", async () => {
    const { engine } = fakeEngine({ command: ["/nonexistent/python3", "-m", "qvl_worker"] });
    await expect(engine.start()).rejects.toThrow(/could not start/);
  });

  it("shuts the worker down on close and refuses work after", async () => {
    const { engine } = fakeEngine();
    await engine.start();
    await engine.close();
    expect(engine.health().ok).toBe(false);
    const events = await collect(engine.generate(request(["hi"]), new AbortController().signal));
    expect(events).toMatchObject([{ type: "error", code: "engine_unavailable" }]);
  });
});
