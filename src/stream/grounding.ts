/**
 * A streaming parser for Qwen-VL's grounding markup: `<ref>label</ref><box>(x1,y1),(x2,y2)</box>`.
 *
 * Feed text deltas of any split (`<re` + `f>`, `(12` + `3,45)`); `push` returns, in order, `text`
 * events and a `box` event right after the text that closed each `</box>`. `end()` flushes.
 *
 * Text events. `text: "raw"` (default) passes the model's text through unchanged — concatenated, the
 * text events equal the input, tags included — so a chat answer reads exactly as Qwen-VL-Chat wrote it
 * and a box event can be placed in the stream where its `</box>` was. `text: "plain"` removes the
 * markup instead: tags and box/quad contents disappear, ref labels stay as words ("The <ref>dog</ref>
 * <box>…</box> runs" → "The dog runs"); a partial tag is held back until it is known not to be one.
 *
 * Pairing. A `<ref>` names the boxes that follow it: `<ref>a</ref><box>…</box><box>…</box>` gives two
 * boxes labelled "a". The label stays in force across boxes and whitespace and ends at the first other
 * visible text or the next `<ref>`. A box with no label in force gets `defaultLabel` (the grounding
 * route passes the expression it asked for), else null. Labels are trimmed (Qwen-VL writes
 * `<ref> Woman</ref>`); an empty label is null. (Qwen-VL's own `_fetch_all_box_with_ref` labels only
 * the box right after a ref; its demo draws the following boxes in the same colour, as one object.)
 *
 * Coordinates. A box must read `(x1,y1),(x2,y2)` (spaces allowed, decimals rounded); each value is
 * clamped to [0, 999] (Qwen-VL's grid is [0, 1000); models do emit 1000); corners are ordered so
 * x1 ≤ x2 and y1 ≤ y2. Pixels are `round(v / 1000 * size)` for the image as the user sees it (after
 * orientation): Qwen-VL's demo divides by 1000 (its RefCOCO evaluation by 999, a ≤ 0.1% difference);
 * rounding to whole pixels loses under half a pixel.
 *
 * Malformed output never throws. A box whose content does not match (negative, missing or extra
 * numbers, over 64 characters) is dropped and counted in `malformed`; so is a box interrupted by
 * `<ref>`, `<box>` or `<quad>`. An unclosed `<ref>` is closed by a following `<box>`; stray closing
 * tags are ignored; `<quad>…</quad>` (OCR output) is skipped without events. At `end()`, a box still
 * open is emitted if its coordinates are complete (an answer cut after the last `)`, or a node that
 * strips special tokens so `</box>` never arrives), otherwise dropped.
 */

export type Box4 = [x1: number, y1: number, x2: number, y2: number];

export interface GroundingBox {
  label: string | null;
  /** Pixels of the image as the user sees it. */
  box: Box4;
  /** Qwen-VL's integers in [0, 999]. */
  box_normalized: Box4;
}

export type GroundingEvent = { type: "text"; text: string } | ({ type: "box" } & GroundingBox);

export interface GroundingParserOptions {
  /** Size of the image as the user sees it (after EXIF orientation), in pixels. */
  width: number;
  height: number;
  /** Label for boxes without a `<ref>` in force (default null). */
  defaultLabel?: string | null;
  /** The prompt ended with `<box>` (Qwen-VL base grounding): the answer starts inside a box. */
  startInBox?: boolean;
  /** "raw" (default): text events are the input verbatim; "plain": markup removed. */
  text?: "raw" | "plain";
}

const TAGS = ["<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>"] as const;
type Tag = (typeof TAGS)[number];
const MAX_BOX_CHARS = 64;
const MAX_LABEL_CHARS = 1024;
const NUM = String.raw`\s*(\d+(?:\.\d+)?)\s*`;
const BOX_RE = new RegExp(String.raw`^\s*\(${NUM},${NUM}\)\s*,\s*\(${NUM},${NUM}\)\s*$`);

type State = "text" | "ref" | "box" | "quad";

export class GroundingParser {
  readonly #width: number;
  readonly #height: number;
  readonly #defaultLabel: string | null;
  readonly #raw: boolean;
  #state: State = "text";
  /** A `<…` that may still become a tag. */
  #tag = "";
  #label = "";
  /** Label in force for the next box. */
  #scope: string | null = null;
  #boxLabel: string | null = null;
  #boxText = "";
  #boxOverflow = false;
  #out = "";
  #events: GroundingEvent[] = [];
  #ended = false;
  /** Every box emitted so far. */
  readonly boxes: GroundingBox[] = [];
  /** Boxes dropped as malformed. */
  malformed = 0;

  constructor(options: GroundingParserOptions) {
    if (!(options.width > 0 && options.height > 0)) throw new RangeError("GroundingParser needs a positive image width and height");
    this.#width = options.width;
    this.#height = options.height;
    const label = options.defaultLabel?.trim();
    this.#defaultLabel = label ? label : null;
    this.#raw = (options.text ?? "raw") === "raw";
    if (options.startInBox) this.#openBox();
  }

  /** Feeds a delta; returns the events it completes. */
  push(delta: string): GroundingEvent[] {
    if (this.#ended) return [];
    let i = 0;
    while (i < delta.length) {
      if (this.#tag !== "") {
        const c = delta[i];
        i += 1;
        if (this.#raw) this.#out += c;
        const candidate = this.#tag + c;
        const tag = TAGS.find((t) => t === candidate);
        if (tag) {
          this.#tag = "";
          this.#onTag(tag);
        } else if (TAGS.some((t) => t.startsWith(candidate))) {
          this.#tag = candidate;
        } else {
          // Not a tag: the held characters are content; `c` is looked at again (it may open a tag).
          this.#tag = "";
          this.#content(candidate.slice(0, -1));
          i -= 1;
          if (this.#raw) this.#out = this.#out.slice(0, -1);
        }
        continue;
      }
      const lt = delta.indexOf("<", i);
      const run = delta.slice(i, lt < 0 ? delta.length : lt);
      if (run !== "") {
        if (this.#raw) this.#out += run;
        this.#content(run);
      }
      if (lt < 0) break;
      this.#tag = "<";
      if (this.#raw) this.#out += "<";
      i = lt + 1;
    }
    return this.#drain();
  }

  /** Flushes what is held: a partial tag becomes text, an open box with complete coordinates is emitted. */
  end(): GroundingEvent[] {
    if (this.#ended) return [];
    if (this.#tag !== "") {
      const held = this.#tag;
      this.#tag = "";
      this.#content(held);
    }
    if (this.#state === "box") this.#closeBox();
    this.#state = "text";
    this.#ended = true;
    return this.#drain();
  }

  #drain(): GroundingEvent[] {
    this.#flushText();
    const events = this.#events;
    this.#events = [];
    return events;
  }

  /** Characters that are not a tag, in the current state. */
  #content(text: string): void {
    switch (this.#state) {
      case "text":
        if (!this.#raw) this.#out += text;
        if (/\S/.test(text)) this.#scope = null;
        break;
      case "ref":
        if (!this.#raw) this.#out += text;
        if (this.#label.length < MAX_LABEL_CHARS) this.#label += text.slice(0, MAX_LABEL_CHARS - this.#label.length);
        break;
      case "box":
        if (this.#boxText.length + text.length > MAX_BOX_CHARS) this.#boxOverflow = true;
        else this.#boxText += text;
        break;
      case "quad":
        break;
    }
  }

  #onTag(tag: Tag): void {
    switch (tag) {
      case "<ref>":
        if (this.#state === "box") this.#abandonBox();
        this.#state = "ref";
        this.#label = "";
        this.#scope = null;
        break;
      case "</ref>":
        if (this.#state === "ref") this.#closeRef();
        break;
      case "<box>":
        if (this.#state === "ref") this.#closeRef();
        else if (this.#state === "box") this.#abandonBox();
        this.#openBox();
        break;
      case "</box>":
        if (this.#state === "box") this.#closeBox();
        break;
      case "<quad>":
        if (this.#state === "ref") this.#closeRef();
        else if (this.#state === "box") this.#abandonBox();
        this.#state = "quad";
        break;
      case "</quad>":
        if (this.#state === "quad") this.#state = "text";
        break;
    }
  }

  #closeRef(): void {
    const label = this.#label.trim();
    this.#scope = label === "" ? null : label;
    this.#label = "";
    this.#state = "text";
  }

  #openBox(): void {
    this.#state = "box";
    this.#boxLabel = this.#scope ?? this.#defaultLabel;
    this.#boxText = "";
    this.#boxOverflow = false;
  }

  #abandonBox(): void {
    this.malformed += 1;
    this.#state = "text";
  }

  #closeBox(): void {
    this.#state = "text";
    const m = this.#boxOverflow ? null : BOX_RE.exec(this.#boxText);
    if (!m) {
      this.malformed += 1;
      return;
    }
    const [a, b, c, d] = [m[1], m[2], m[3], m[4]].map((v) => Math.min(999, Math.round(Number(v))));
    const normalized: Box4 = [Math.min(a, c), Math.min(b, d), Math.max(a, c), Math.max(b, d)];
    const box: GroundingBox = {
      label: this.#boxLabel,
      box: [
        toPixels(normalized[0], this.#width),
        toPixels(normalized[1], this.#height),
        toPixels(normalized[2], this.#width),
        toPixels(normalized[3], this.#height),
      ],
      box_normalized: normalized,
    };
    this.boxes.push(box);
    // The text up to and including `</box>` goes out before the box event.
    this.#flushText();
    this.#events.push({ type: "box", ...box });
  }

  #flushText(): void {
    if (this.#out !== "") {
      this.#events.push({ type: "text", text: this.#out });
      this.#out = "";
    }
  }
}

function toPixels(v: number, size: number): number {
  return Math.round((v / 1000) * size);
}

export interface GroundingResult {
  boxes: GroundingBox[];
  /** The text as the parser's text mode renders it (raw: the input). */
  text: string;
  malformed: number;
}

/** Parses a whole answer (the streaming parser fed once). */
export function parseGrounding(
  text: string,
  width: number,
  height: number,
  options: Omit<GroundingParserOptions, "width" | "height"> = {},
): GroundingResult {
  const parser = new GroundingParser({ ...options, width, height });
  const events = [...parser.push(text), ...parser.end()];
  let out = "";
  for (const e of events) if (e.type === "text") out += e.text;
  return { boxes: parser.boxes, text: out, malformed: parser.malformed };
}
