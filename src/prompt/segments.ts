/**
 * Building prompts as segments, and rendering them back to text for logs and tests.
 *
 * A prompt is a list of `Segment`s (src/protocol/schema.ts): `template` text is ours and may hold
 * Qwen-VL's special tokens, `user` text is the client's and is tokenized with none allowed, `image` is
 * `<img>` + 256 slots + `</img>`. The builder keeps the two kinds of text apart by construction: user
 * text is never concatenated into template text, whatever characters it holds.
 */
import { ApiError } from "../errors";
import { PROTOCOL_LIMITS, type Segment } from "../protocol/schema";

export class SegmentBuilder {
  readonly #segments: Segment[] = [];

  /** Our own text (special tokens allowed). Adjacent template text is merged. */
  template(text: string): this {
    if (text === "") return this;
    const last = this.#segments.at(-1);
    if (last?.type === "template") last.text += text;
    else this.#segments.push({ type: "template", text });
    return this;
  }

  /** The client's text (special tokens never recognized). Adjacent user text is merged; empty text is dropped. */
  user(text: string): this {
    if (text === "") return this;
    const last = this.#segments.at(-1);
    if (last?.type === "user") last.text += text;
    else this.#segments.push({ type: "user", text });
    return this;
  }

  image(index: number): this {
    this.#segments.push({ type: "image", index });
    return this;
  }

  /** Appends segments built elsewhere (e.g. `boxToText`), keeping their kinds. */
  append(segments: readonly Segment[]): this {
    for (const s of segments) {
      if (s.type === "image") this.image(s.index);
      else if (s.type === "template") this.template(s.text);
      else this.user(s.text);
    }
    return this;
  }

  /** The segments, checked against the protocol's limits (an `ApiError` 400 when a client's input is too big). */
  build(): Segment[] {
    const out = this.#segments.map((s) => ({ ...s }));
    checkPromptLimits(out);
    return out;
  }
}

/** Throws `invalid_request` when a prompt would break the protocol's limits (so the node never sees it). */
export function checkPromptLimits(segments: readonly Segment[]): void {
  if (segments.length === 0) throw new ApiError("invalid_request", "The prompt is empty.");
  if (segments.length > PROTOCOL_LIMITS.maxSegmentsPerPrompt) {
    throw new ApiError(
      "invalid_request",
      `The conversation is too long: it needs ${segments.length} prompt segments, at most ${PROTOCOL_LIMITS.maxSegmentsPerPrompt} are allowed.`,
      { param: "messages" },
    );
  }
  for (const s of segments) {
    if (s.type !== "image" && s.text.length > PROTOCOL_LIMITS.maxTextChars) {
      throw new ApiError("invalid_request", `A text is too long: at most ${PROTOCOL_LIMITS.maxTextChars} characters in one piece.`);
    }
  }
}

export interface RenderOptions {
  /** How an image segment is shown; default `<img>#N</img>`. */
  image?: (index: number) => string;
  /** How user text is shown; default verbatim. Tests use e.g. `(t) => `⟦${t}⟧`` to see the boundaries. */
  user?: (text: string) => string;
}

/** The prompt as one display string (debugging and tests; the node never receives this). */
export function renderSegments(segments: readonly Segment[], options: RenderOptions = {}): string {
  const image = options.image ?? ((i: number) => `<img>#${i}</img>`);
  const user = options.user ?? ((t: string) => t);
  let out = "";
  for (const s of segments) {
    if (s.type === "image") out += image(s.index);
    else if (s.type === "user") out += user(s.text);
    else out += s.text;
  }
  return out;
}
