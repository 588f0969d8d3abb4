import { describe, expect, it } from "vitest";
import { DEFAULT_FRAME_LIMITS, decodeFrame, encodeFrame, FrameError } from "./frame";
import type { GenerateHeaderInput } from "./schema";

const header = (extra: Partial<GenerateHeaderInput> = {}): GenerateHeaderInput => ({
  version: 1,
  request_id: "r1",
  variant: "qwen-vl-chat",
  prompts: [[{ type: "user", text: "hi" }]],
  images: [],
  sampling: {},
  ...extra,
});

describe("the frame's output field", () => {
  it("is optional: absent, the node writes protocol events", async () => {
    const { header: h } = await decodeFrame(encodeFrame(header(), []), DEFAULT_FRAME_LIMITS);
    expect(h.output).toBeUndefined();
  });

  it("round-trips, with defaults filled in", async () => {
    const output = { format: "openai-chat" as const, id: "chatcmpl-1", created: 1_700_000_000, model: "qwen-vl-chat" };
    const { header: h } = await decodeFrame(encodeFrame(header({ output }), []), DEFAULT_FRAME_LIMITS);
    expect(h.output).toEqual({ ...output, include_usage: false, logprobs: false, prompt_tokens: "sum", keep_alive_ms: 10_000 });
  });

  it("refuses an unknown format or a bad field", async () => {
    for (const output of [
      { format: "openai-completions", id: "x", created: 1, model: "m" },
      { format: "openai-chat", id: "", created: 1, model: "m" },
      { format: "openai-chat", id: "x", created: -1, model: "m" },
      { format: "openai-chat", id: "x", created: 1, model: "m", keep_alive_ms: -5 },
    ]) {
      await expect(decodeFrame(encodeFrame(header({ output: output as never }), []), DEFAULT_FRAME_LIMITS)).rejects.toBeInstanceOf(
        FrameError,
      );
    }
  });
});
