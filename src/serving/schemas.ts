/**
 * Public request schemas (zod): OpenAI's chat completions shape, and the task routes (captions, VQA,
 * grounding). Validation happens first, before any image is fetched or any node is asked.
 */
import { z } from "zod";
import { ImageQuality } from "../keys/keys";
import { ChatMessage } from "../prompt/index";
import { PROTOCOL_LIMITS } from "../protocol/index";

export const MODEL_IDS = ["qwen-vl-chat", "qwen-vl"] as const;
export const ModelId = z.enum(MODEL_IDS);
export type ModelId = z.infer<typeof ModelId>;
export const DEFAULT_MODEL: ModelId = "qwen-vl-chat";

const Stop = z
  .union([
    z.string().min(1).max(PROTOCOL_LIMITS.maxStopChars),
    z.array(z.string().min(1).max(PROTOCOL_LIMITS.maxStopChars)).max(PROTOCOL_LIMITS.maxStop),
  ])
  .optional();

const SamplingFields = {
  max_tokens: z.number().int().min(1).max(PROTOCOL_LIMITS.maxTokens).optional(),
  max_completion_tokens: z.number().int().min(1).max(PROTOCOL_LIMITS.maxTokens).optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  stop: Stop,
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .optional(),
};

export const ChatCompletionRequest = z.object({
  model: z.string().max(64).optional(),
  messages: z.array(ChatMessage).min(1).max(64),
  stream: z.boolean().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  n: z.number().int().min(1).max(4).optional(),
  logprobs: z.boolean().optional(),
  top_logprobs: z.number().int().min(0).max(5).optional(),
  user: z.string().max(256).optional(),
  /** Not OpenAI's: how this request's images are preprocessed (default: the key's setting, else `exact`). */
  quality: ImageQuality.optional(),
  ...SamplingFields,
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

/** An image as a URL string, a data URI, or `{url}` (OpenAI's `image_url` object). */
export const ImageRef = z
  .union([z.string().min(1), z.object({ url: z.string().min(1) })])
  .transform((v) => (typeof v === "string" ? v : v.url));

const TaskFields = {
  model: z.string().max(64).optional(),
  /** Optional in multipart and raw-body requests, where the image comes as a file or the body. */
  image: ImageRef.optional(),
  stream: z.boolean().optional(),
  orientation: z.enum(["apply", "ignore"]).optional(),
  /** `exact` | `fast` (default: the key's setting, else `exact`). */
  quality: ImageQuality.optional(),
  ...SamplingFields,
};

export const CaptionRequest = z.object({ ...TaskFields, language: z.enum(["en", "zh"]).optional() });
export const VqaRequest = z.object({ ...TaskFields, question: z.string().min(1).max(PROTOCOL_LIMITS.maxTextChars) });
export const GroundingRequest = z.object({ ...TaskFields, expression: z.string().min(1).max(1000) });
export type CaptionRequest = z.infer<typeof CaptionRequest>;
export type VqaRequest = z.infer<typeof VqaRequest>;
export type GroundingRequest = z.infer<typeof GroundingRequest>;
