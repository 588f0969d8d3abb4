/**
 * Qwen-VL-Chat's ChatML conversations as segments, from OpenAI-style messages.
 *
 *   <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n
 *   <|im_start|>user\nPicture 1: <img>…</img>\nWhat is this?<|im_end|>\n
 *   <|im_start|>assistant\n
 *
 * The markers, role names and `Picture N: ` are template text; everything a client wrote (system
 * prompts, user text, earlier assistant answers) is user text. Images are numbered `Picture 1`,
 * `Picture 2`, … in order of appearance across the whole conversation (Qwen's `from_list_format`
 * restarts at 1 in each query; one numbering lets a later turn say "Picture 1" unambiguously), and
 * image segment `index` i is the i-th `image_url` part.
 */
import { z } from "zod";
import { ApiError } from "../errors";
import type { ModelVariant, Segment } from "../protocol/schema";
import { PROTOCOL_LIMITS } from "../protocol/schema";
import { DEFAULT_SYSTEM_PROMPT, IM_END, IM_START, STOP_STRINGS } from "./formats";
import { SegmentBuilder } from "./segments";

export const TextPart = z.object({ type: z.literal("text"), text: z.string() });
export const ImageUrlPart = z.object({
  type: z.literal("image_url"),
  /** OpenAI sends `{url, detail?}`; a bare string is accepted too. */
  image_url: z.union([z.string(), z.object({ url: z.string(), detail: z.enum(["auto", "low", "high"]).optional() })]),
});
export const ContentPart = z.discriminatedUnion("type", [TextPart, ImageUrlPart]);

/** OpenAI chat messages the edge accepts (`developer` is OpenAI's newer name for `system`). */
export const ChatMessage = z.discriminatedUnion("role", [
  z.object({ role: z.literal("system"), content: z.union([z.string(), z.array(TextPart)]) }),
  z.object({ role: z.literal("developer"), content: z.union([z.string(), z.array(TextPart)]) }),
  z.object({ role: z.literal("user"), content: z.union([z.string(), z.array(ContentPart)]) }),
  z.object({ role: z.literal("assistant"), content: z.union([z.string(), z.array(TextPart), z.null()]).optional() }),
]);
export type TextPart = z.infer<typeof TextPart>;
export type ImageUrlPart = z.infer<typeof ImageUrlPart>;
export type ContentPart = z.infer<typeof ContentPart>;
export type ChatMessage = z.infer<typeof ChatMessage>;

/** One ChatML turn: content segments whose images the renderer numbers and frames as `Picture N: …\n`. */
export interface ChatTurn {
  role: "system" | "user" | "assistant";
  content: readonly Segment[];
}

/**
 * Appends a ChatML conversation and the opening of the assistant's answer. A conversation that does
 * not start with a system turn gets Qwen's default one.
 */
export function appendChatML(b: SegmentBuilder, turns: readonly ChatTurn[]): SegmentBuilder {
  if (turns[0]?.role !== "system") b.template(`${IM_START}system\n${DEFAULT_SYSTEM_PROMPT}${IM_END}\n`);
  let picture = 0;
  for (const turn of turns) {
    b.template(`${IM_START}${turn.role}\n`);
    for (const s of turn.content) {
      if (s.type === "image") {
        picture += 1;
        b.template(`Picture ${picture}: `).image(s.index).template("\n");
      } else if (s.type === "template") b.template(s.text);
      else b.user(s.text);
    }
    b.template(`${IM_END}\n`);
  }
  return b.template(`${IM_START}assistant\n`);
}

export interface ChatImage {
  url: string;
  detail?: "auto" | "low" | "high";
}

export interface ChatPrompt {
  variant: "qwen-vl-chat";
  segments: Segment[];
  stop: readonly string[];
  /** The `image_url` parts in order of appearance: image segment `index` i is `images[i]`. */
  images: ChatImage[];
}

/**
 * The conversation as one prompt for Qwen-VL-Chat. Throws `ApiError` (400) for what the model cannot
 * take: the base model (it has no chat format), an image outside a user message, no user message,
 * too many images or segments.
 */
export function chatPrompt(variant: ModelVariant, messages: readonly ChatMessage[]): ChatPrompt {
  if (variant !== "qwen-vl-chat") {
    throw new ApiError("invalid_request", `The model variant ${variant} has no chat format; use a qwen-vl-chat model.`, { param: "model" });
  }
  if (!messages.some((m) => m.role === "user")) {
    throw new ApiError("invalid_request", "The conversation needs at least one user message.", { param: "messages" });
  }
  const images: ChatImage[] = [];
  const turns: ChatTurn[] = messages.map((m, i) => {
    const role = m.role === "developer" ? "system" : m.role;
    const content: Segment[] = [];
    const parts = typeof m.content === "string" ? [{ type: "text" as const, text: m.content }] : (m.content ?? []);
    for (const [j, part] of parts.entries()) {
      if (part.type === "text") {
        content.push({ type: "user", text: part.text });
        continue;
      }
      if (role !== "user") {
        throw new ApiError("invalid_request", `Images are only accepted in user messages (messages[${i}] is ${m.role}).`, {
          param: `messages[${i}].content[${j}]`,
        });
      }
      const ref = typeof part.image_url === "string" ? { url: part.image_url } : part.image_url;
      if (images.length >= PROTOCOL_LIMITS.maxImages) {
        throw new ApiError("invalid_request", `At most ${PROTOCOL_LIMITS.maxImages} images per request.`, {
          param: `messages[${i}].content[${j}]`,
        });
      }
      content.push({ type: "image", index: images.length });
      images.push(ref.detail === undefined ? { url: ref.url } : { url: ref.url, detail: ref.detail });
    }
    return { role, content };
  });
  const segments = appendChatML(new SegmentBuilder(), turns).build();
  return { variant, segments, stop: STOP_STRINGS[variant], images };
}
