/**
 * Qwen-VL's fixed prompt text, in one place: ChatML markers, the default system prompt, the task
 * instructions per variant and language, and the stop strings.
 *
 * Sources: Qwen-VL's `qwen_generation_utils.make_context` (ChatML), `tokenization_qwen.from_list_format`
 * (`Picture N: <img>…</img>\n`), its evaluation scripts (base captions `Describe the image in English:`,
 * VQA `{question} Answer:`, RefCOCO `<ref>{expression}</ref><box>`) and Qwen-VL-Chat's README
 * (`输出"{expression}"的检测框`). Qwen publishes no Chinese caption prompt for the base model; ours
 * mirrors the English one.
 */
import type { ModelVariant } from "../protocol/schema";

export const IM_START = "<|im_start|>";
export const IM_END = "<|im_end|>";
export const END_OF_TEXT = "<|endoftext|>";

/** Qwen-VL-Chat's system prompt when the conversation has none (make_context's default). */
export const DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant.";

export type Language = "en" | "zh";

/** Caption instructions. Base: a continuation prompt; chat: a user request. */
export const CAPTION_INSTRUCTIONS: Record<ModelVariant, Record<Language, string>> = {
  "qwen-vl": { en: "Describe the image in English:", zh: "用中文描述这张图片：" },
  "qwen-vl-chat": { en: "Describe this image.", zh: "描述这张图片。" },
};

/** Base VQA: the question (user text) then this suffix, as in Qwen-VL's VQA evaluation. */
export const VQA_ANSWER_SUFFIX = " Answer:";

/**
 * Chat grounding instructions around the expression (the expression itself is user text):
 * zh is Qwen-VL-Chat's README wording, en its English equivalent.
 */
export const CHAT_GROUNDING_INSTRUCTIONS: Record<Language, readonly [before: string, after: string]> = {
  zh: ['输出"', '"的检测框'],
  en: ['Output the bounding box of "', '"'],
};

/**
 * Where generation stops, per variant. The chat model ends its turn with `<|im_end|>` and must never
 * start another (`<|im_start|>`); the base model ends with `<|endoftext|>` (also the tokenizer's EOS,
 * which stops every variant).
 */
export const STOP_STRINGS: Record<ModelVariant, readonly string[]> = {
  "qwen-vl": [END_OF_TEXT],
  "qwen-vl-chat": [IM_END, IM_START],
};

/** True when the text holds a CJK ideograph (used to pick the grounding instruction's language). */
export function hasCjk(text: string): boolean {
  return /[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]/.test(text);
}
