/**
 * The edge ↔ GPU node protocol: one module, imported by both tiers (the Worker and gpu-node).
 *
 * POST /v1/generate, `Authorization: Bearer <node secret>`, body a frame (see frame.ts):
 *   u32 big-endian header length | JSON header (GenerateHeader) | tensor bytes.
 * The answer is `text/event-stream` of NodeEvent (see events.ts), or, when the header asks for it
 * (`output`, below), the client's own bytes: OpenAI `chat.completion.chunk` SSE, so that the edge can
 * pass them through without JavaScript per chunk.
 */
import { z } from "zod";

export const PROTOCOL_VERSION = 1;

/** Limits both sides enforce. */
export const PROTOCOL_LIMITS = {
  maxHeaderBytes: 64 * 1024,
  maxImages: 8,
  maxPrompts: 16,
  maxSegmentsPerPrompt: 64,
  maxTextChars: 32_000,
  maxStop: 4,
  maxStopChars: 64,
  maxTokens: 2048,
} as const;

export const TENSOR_SIDE = 448;
/** Qwen-VL's visual resampler turns one image into this many embedding slots between <img> and </img>. */
export const IMAGE_SLOTS = 256;

export const ModelVariant = z.enum(["qwen-vl", "qwen-vl-chat"]);
export type ModelVariant = z.infer<typeof ModelVariant>;

/**
 * A prompt is a list of segments. `template` text is ours (Qwen-VL's special tokens allowed), `user`
 * text is the client's (tokenized with no special tokens: `<|im_start|>` typed by a user stays text),
 * `image` stands for `<img>` + 256 embedding slots + `</img>` of image `index`.
 */
export const Segment = z.discriminatedUnion("type", [
  z.object({ type: z.literal("template"), text: z.string().max(PROTOCOL_LIMITS.maxTextChars) }),
  z.object({ type: z.literal("user"), text: z.string().max(PROTOCOL_LIMITS.maxTextChars) }),
  z.object({
    type: z.literal("image"),
    index: z
      .number()
      .int()
      .min(0)
      .max(PROTOCOL_LIMITS.maxImages - 1),
  }),
]);
export type Segment = z.infer<typeof Segment>;

export const TensorDtype = z.enum(["f16", "u8"]);
export type TensorDtype = z.infer<typeof TensorDtype>;

/** f16: [3,448,448] CHW, CLIP-normalized, little-endian; u8: [448,448,3] HWC, normalized by the node. */
export const ImageDescriptor = z
  .object({
    dtype: TensorDtype,
    shape: z.tuple([z.number().int(), z.number().int(), z.number().int()]),
    /** Byte offset of the tensor within the frame's tensor section. */
    offset: z.number().int().min(0),
    length: z.number().int().min(1),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .superRefine((img, ctx) => {
    const want = img.dtype === "f16" ? [3, TENSOR_SIDE, TENSOR_SIDE] : [TENSOR_SIDE, TENSOR_SIDE, 3];
    if (img.shape.some((d, i) => d !== want[i])) ctx.addIssue({ code: "custom", message: `shape must be [${want}] for ${img.dtype}` });
    if (img.length !== tensorBytes(img.dtype))
      ctx.addIssue({ code: "custom", message: `length must be ${tensorBytes(img.dtype)} for ${img.dtype}` });
  });
export type ImageDescriptor = z.infer<typeof ImageDescriptor>;

export const Sampling = z.object({
  max_tokens: z.number().int().min(1).max(PROTOCOL_LIMITS.maxTokens).default(256),
  temperature: z.number().min(0).max(2).default(0),
  top_p: z.number().gt(0).max(1).default(1),
  /** 0 disables top-k. */
  top_k: z.number().int().min(0).max(1000).default(0),
  repetition_penalty: z.number().gt(0).max(2).default(1),
  stop: z.array(z.string().min(1).max(PROTOCOL_LIMITS.maxStopChars)).max(PROTOCOL_LIMITS.maxStop).default([]),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .optional(),
  /** Number of top alternatives to return per token (0 = none; the chosen token's logprob only). */
  logprobs: z.number().int().min(0).max(5).optional(),
});
export type Sampling = z.infer<typeof Sampling>;

/**
 * `output: {format: "openai-chat", …}`: the node writes OpenAI `chat.completion.chunk` SSE itself, byte
 * for byte what the edge's relay (src/stream/openai.ts) would write for the same events: the role chunk,
 * content deltas, the finish chunk, the usage chunk when `include_usage`, `data: [DONE]`; `: keep-alive`
 * after `keep_alive_ms` without output; an error after output started as `data: {"error":…}` then
 * `data: [DONE]`. Until its first output the node still speaks the protocol: an error before any output is
 * an `event: error` (so the edge can retry elsewhere), and keep-alive comments may precede the output.
 * The node says it honoured the field with the response header `x-output: openai-chat` (OUTPUT_HEADER); a
 * node that ignores it answers with events as before.
 */
export const OpenAIChatOutput = z.object({
  format: z.literal("openai-chat"),
  /** `chatcmpl-…` */
  id: z.string().min(1).max(128),
  /** Unix seconds. */
  created: z.number().int().min(0),
  /** The model name the client asked for. */
  model: z.string().min(1).max(128),
  include_usage: z.boolean().default(false),
  /** Per-token logprobs in the chunks (the request asked for `logprobs`; `sampling.logprobs` set). */
  logprobs: z.boolean().default(false),
  /** "sum": prompts are different prompts; "once": one prompt sampled `n` times (OpenAI counts it once). */
  prompt_tokens: z.enum(["sum", "once"]).default("sum"),
  /** A `: keep-alive` comment after this long without output; 0: none. */
  keep_alive_ms: z.number().int().min(0).max(600_000).default(10_000),
});
export type OpenAIChatOutput = z.infer<typeof OpenAIChatOutput>;
export type OpenAIChatOutputInput = z.input<typeof OpenAIChatOutput>;

/** The node's response header naming the output format it wrote (absent: protocol events). */
export const OUTPUT_HEADER = "x-output";

export const GenerateHeader = z
  .object({
    version: z.literal(PROTOCOL_VERSION),
    request_id: z.string().min(1).max(128),
    variant: ModelVariant,
    prompts: z.array(z.array(Segment).min(1).max(PROTOCOL_LIMITS.maxSegmentsPerPrompt)).min(1).max(PROTOCOL_LIMITS.maxPrompts),
    images: z.array(ImageDescriptor).max(PROTOCOL_LIMITS.maxImages),
    sampling: Sampling,
    /** Time budget in milliseconds from when the node receives the request (relative: no clock skew). */
    deadline_ms: z.number().int().min(1).max(600_000).optional(),
    /** Write the client's bytes instead of protocol events (see OpenAIChatOutput). */
    output: OpenAIChatOutput.optional(),
  })
  .superRefine((h, ctx) => {
    for (const [p, prompt] of h.prompts.entries()) {
      for (const seg of prompt) {
        if (seg.type === "image" && seg.index >= h.images.length) {
          ctx.addIssue({ code: "custom", path: ["prompts", p], message: `image index ${seg.index} but only ${h.images.length} images` });
        }
      }
    }
  });
export type GenerateHeader = z.infer<typeof GenerateHeader>;
/** What a sender writes (defaults may be left out). */
export type GenerateHeaderInput = z.input<typeof GenerateHeader>;

export function tensorBytes(dtype: TensorDtype): number {
  return dtype === "f16" ? 3 * TENSOR_SIDE * TENSOR_SIDE * 2 : TENSOR_SIDE * TENSOR_SIDE * 3;
}
