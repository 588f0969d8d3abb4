/**
 * The edge ↔ node wire format (src/protocol/), in Node: frames round-trip, every malformed-frame class
 * is refused with its code, events round-trip through SSE (batched or not).
 */
import { describe, expect, it } from "vitest";
import {
  DEFAULT_FRAME_LIMITS,
  decodeEventStream,
  decodeFrame,
  encodeEvent,
  encodeEvents,
  encodeFrame,
  FrameError,
  type FrameErrorCode,
  type NodeEvent,
  PROTOCOL_LIMITS,
} from "../../src/protocol/index";
import { f16, header, malformedFrames, rawFrame, u8 } from "./support/malformed";

async function refusal(frame: Uint8Array, options?: Parameters<typeof decodeFrame>[1]): Promise<FrameErrorCode> {
  try {
    await decodeFrame(frame, options);
  } catch (err) {
    expect(err).toBeInstanceOf(FrameError);
    return (err as FrameError).code;
  }
  throw new Error("frame was accepted");
}

describe("request frame", () => {
  it("round-trips a header and two tensors (f16 and u8) byte for byte", async () => {
    const h = await header();
    const frame = encodeFrame(h, [f16, u8]);
    const decoded = await decodeFrame(frame);
    expect(decoded.header).toMatchObject({ ...h, sampling: { ...h.sampling, temperature: 0, top_p: 1, top_k: 0, repetition_penalty: 1 } });
    expect(decoded.images).toHaveLength(2);
    expect(Buffer.from(decoded.images[0]).equals(Buffer.from(f16))).toBe(true);
    expect(Buffer.from(decoded.images[1]).equals(Buffer.from(u8))).toBe(true);
  });

  it("round-trips a frame without images, and one at an unaligned offset inside a larger buffer", async () => {
    const h = await header({ images: [], prompts: [[{ type: "user", text: "你好 <ref>x</ref>" }]] });
    expect((await decodeFrame(encodeFrame(h, []))).header.prompts).toEqual(h.prompts);
    const frame = encodeFrame(await header(), [f16, u8]);
    const padded = new Uint8Array(frame.length + 3);
    padded.set(frame, 3);
    const decoded = await decodeFrame(padded.subarray(3));
    expect(decoded.images[1][0]).toBe(u8[0]);
  });

  it("refuses a frame over the size limit before parsing it", async () => {
    const frame = encodeFrame(await header(), [f16, u8]);
    expect(await refusal(frame, { maxFrameBytes: frame.length - 1 })).toBe("frame_too_large");
    expect(DEFAULT_FRAME_LIMITS.maxFrameBytes).toBeGreaterThanOrEqual(4 + PROTOCOL_LIMITS.maxHeaderBytes + 8 * f16.length);
  });

  it("refuses every malformed-frame class with its code", async () => {
    const cases = await malformedFrames();
    const seen = new Set<FrameErrorCode>(["frame_too_large"]);
    for (const c of cases) {
      expect(await refusal(c.frame), c.why).toBe(c.code);
      seen.add(c.code);
    }
    const all: FrameErrorCode[] = [
      "frame_truncated",
      "frame_too_large",
      "header_too_large",
      "header_invalid_json",
      "header_invalid",
      "unsupported_version",
      "image_out_of_bounds",
      "image_overlap",
      "image_checksum_mismatch",
      "trailing_bytes",
    ];
    expect([...seen].sort()).toEqual([...all].sort());
  });

  it("refuses shapes and lengths that do not match the dtype", async () => {
    const h = await header();
    const wrongShape = { ...h, images: [{ ...h.images[0], shape: [448, 448, 3] }, h.images[1]] };
    expect(await refusal(rawFrame(JSON.stringify(wrongShape), new Uint8Array([...f16, ...u8])))).toBe("header_invalid");
  });

  it("encodeFrame refuses a header over the limit", async () => {
    const h = await header({
      request_id: "x".repeat(128),
      prompts: Array.from({ length: 16 }, () => [{ type: "user" as const, text: "y".repeat(8_000) }]),
    });
    expect(() => encodeFrame(h, [f16, u8])).toThrow(FrameError);
  });
});

describe("event stream", () => {
  const events: NodeEvent[] = [
    {
      type: "token",
      prompt: 0,
      text: "<re",
      tokens: 1,
      logprobs: [{ token: "<re", logprob: -0.1, top: [{ token: "<re", logprob: -0.1 }] }],
    },
    { type: "token", prompt: 1, text: "你好\n\ndata: x", tokens: 3 },
    {
      type: "done",
      prompt: 0,
      finish_reason: "length",
      usage: { prompt_tokens: 270, completion_tokens: 1 },
      timings: { queue_ms: 0, vision_ms: 12.5, prefill_ms: 3, decode_ms: 4 },
      engine: "simulated",
    },
    { type: "error", code: "engine_failed", message: "boom", retryable: true },
  ];

  const stream = (chunks: string[]) =>
    new ReadableStream<Uint8Array>({
      start(c) {
        for (const chunk of chunks) c.enqueue(new TextEncoder().encode(chunk));
        c.close();
      },
    });

  async function decodeAll(chunks: string[]): Promise<NodeEvent[]> {
    const out: NodeEvent[] = [];
    const reader = decodeEventStream(stream(chunks)).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return out;
      out.push(value);
    }
  }

  it("round-trips every event type, one per chunk, batched, or split at every byte", async () => {
    expect(await decodeAll(events.map(encodeEvent))).toEqual(events);
    expect(await decodeAll([encodeEvents(events)])).toEqual(events);
    const all = encodeEvents(events);
    expect(await decodeAll(all.split(""))).toEqual(events);
  });

  it("turns a malformed event into a retryable internal_error instead of throwing", async () => {
    const got = await decodeAll(['event: token\ndata: {"prompt":-1}\n\n', "event: done\ndata: not json\n\n"]);
    expect(got).toHaveLength(2);
    for (const e of got) expect(e).toMatchObject({ type: "error", code: "internal_error", retryable: true });
  });
});
