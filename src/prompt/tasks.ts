/**
 * The single-image task prompts (captions, VQA, grounding) for both variants.
 *
 * | task      | qwen-vl (base)                               | qwen-vl-chat (inside ChatML, default system)        |
 * |-----------|----------------------------------------------|-----------------------------------------------------|
 * | caption   | `<img>…</img>Describe the image in English:` | `Picture 1: <img>…</img>\nDescribe this image.`     |
 * |           | zh: `<img>…</img>用中文描述这张图片：`          | zh: `Picture 1: <img>…</img>\n描述这张图片。`          |
 * | VQA       | `<img>…</img>{question} Answer:`             | `Picture 1: <img>…</img>\n{question}`               |
 * | grounding | `<img>…</img><ref>{expression}</ref><box>`   | `Picture 1: <img>…</img>\nOutput the bounding box of "{expression}"` |
 * |           |                                              | zh: `Picture 1: <img>…</img>\n输出"{expression}"的检测框` |
 *
 * `{question}` and `{expression}` are user segments. The base grounding prompt ends inside an open
 * `<box>` (Qwen-VL's RefCOCO prompt), so its answer starts with the coordinates: `grounding` on the
 * result tells the parser (src/stream/grounding.ts) where the answer starts.
 */
import type { ModelVariant, Segment } from "../protocol/schema";
import { appendChatML } from "./chat";
import { CAPTION_INSTRUCTIONS, CHAT_GROUNDING_INSTRUCTIONS, hasCjk, type Language, STOP_STRINGS, VQA_ANSWER_SUFFIX } from "./formats";
import { SegmentBuilder } from "./segments";

export interface TaskPrompt {
  variant: ModelVariant;
  segments: Segment[];
  stop: readonly string[];
}

/** How a grounding answer starts, for `GroundingParser`'s options. */
export interface GroundingStart {
  /** Label for boxes the answer does not name with a `<ref>`: the expression asked for. */
  defaultLabel: string;
  /** True when the prompt already opened the `<box>` (the base model's answer begins with `(x1,y1),…`). */
  startInBox: boolean;
}

export interface GroundingPrompt extends TaskPrompt {
  grounding: GroundingStart;
}

/** Segments of one user turn (or the base prompt) before ChatML wrapping. */
function build(variant: ModelVariant, content: Segment[]): Segment[] {
  const b = new SegmentBuilder();
  if (variant === "qwen-vl") return b.append(content).build();
  return appendChatML(b, [{ role: "user", content }]).build();
}

export interface CaptionOptions {
  language?: Language;
  /** Index of the image in the request (default 0). */
  image?: number;
}

export function captionPrompt(variant: ModelVariant, options: CaptionOptions = {}): TaskPrompt {
  const image = options.image ?? 0;
  const instruction = CAPTION_INSTRUCTIONS[variant][options.language ?? "en"];
  return {
    variant,
    segments: build(variant, [
      { type: "image", index: image },
      { type: "template", text: instruction },
    ]),
    stop: STOP_STRINGS[variant],
  };
}

export interface VqaOptions {
  /**
   * The question: a string is user text; segments allow a question that mentions a region, built with
   * `boxToText` (e.g. `[{type:"user",text:"What is "}, ...boxToText(null, box, w, h), {type:"user",text:"?"}]`).
   */
  question: string | readonly Segment[];
  image?: number;
}

export function vqaPrompt(variant: ModelVariant, options: VqaOptions): TaskPrompt {
  const question: Segment[] = typeof options.question === "string" ? [{ type: "user", text: options.question }] : [...options.question];
  const content: Segment[] = [{ type: "image", index: options.image ?? 0 }, ...question];
  if (variant === "qwen-vl") content.push({ type: "template", text: VQA_ANSWER_SUFFIX });
  return { variant, segments: build(variant, content), stop: STOP_STRINGS[variant] };
}

export interface GroundingOptions {
  /** What to find (user text). */
  expression: string;
  /** Chat instruction language; "auto" (default) is zh when the expression holds CJK ideographs. */
  language?: Language | "auto";
  image?: number;
}

export function groundingPrompt(variant: ModelVariant, options: GroundingOptions): GroundingPrompt {
  const image: Segment = { type: "image", index: options.image ?? 0 };
  const expression: Segment = { type: "user", text: options.expression };
  let content: Segment[];
  if (variant === "qwen-vl") {
    content = [image, { type: "template", text: "<ref>" }, expression, { type: "template", text: "</ref><box>" }];
  } else {
    const wanted = options.language ?? "auto";
    const language: Language = wanted === "auto" ? (hasCjk(options.expression) ? "zh" : "en") : wanted;
    const [before, after] = CHAT_GROUNDING_INSTRUCTIONS[language];
    content = [image, { type: "template", text: before }, expression, { type: "template", text: after }];
  }
  return {
    variant,
    segments: build(variant, content),
    stop: STOP_STRINGS[variant],
    grounding: { defaultLabel: options.expression, startInBox: variant === "qwen-vl" },
  };
}
