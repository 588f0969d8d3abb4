/**
 * Boxes given as input (region questions), written the way Qwen-VL reads them:
 * `<ref>label</ref><box>(X1,Y1),(X2,Y2)</box>`, coordinates integers in [0, 1000).
 *
 * From pixels: `round(x / width * 1000)`, clamped to [0, 999]. Qwen-VL's grid has 1000 steps and its
 * own `from_list_format` writes whatever integers it is given; rounding (rather than truncating) keeps
 * the error under half a step, and the clamp maps the right and bottom edges (x = width) onto 999, the
 * last value the model was trained to emit. The reverse mapping (src/stream/grounding.ts) is
 * `x / 1000 * width`, so a box written here and read back moves by at most one grid step.
 */
import type { Segment } from "../protocol/schema";

export type PixelBox = readonly [x1: number, y1: number, x2: number, y2: number];
export type NormalizedBox = [x1: number, y1: number, x2: number, y2: number];

/** One pixel coordinate on an axis of `size` pixels → Qwen-VL's [0, 999] grid. */
export function pixelToNormalized(value: number, size: number): number {
  if (!(size > 0)) throw new RangeError(`image size must be positive, got ${size}`);
  const v = Math.round((value / size) * 1000);
  return Number.isFinite(v) ? Math.min(999, Math.max(0, v)) : 0;
}

/** A pixel box → normalized `[X1, Y1, X2, Y2]`, corners ordered (x1 ≤ x2, y1 ≤ y2). */
export function boxToNormalized(box: PixelBox, width: number, height: number): NormalizedBox {
  const [a, b, c, d] = box;
  const x1 = pixelToNormalized(Math.min(a, c), width);
  const x2 = pixelToNormalized(Math.max(a, c), width);
  const y1 = pixelToNormalized(Math.min(b, d), height);
  const y2 = pixelToNormalized(Math.max(b, d), height);
  return [x1, y1, x2, y2];
}

/**
 * `<ref>label</ref><box>(X1,Y1),(X2,Y2)</box>` as segments: the label is the client's text, so it is a
 * `user` segment between template tags (a label containing `</ref>` stays characters). A null or empty
 * label writes the box alone.
 */
export function boxToText(label: string | null, box: PixelBox, imageWidth: number, imageHeight: number): Segment[] {
  const [x1, y1, x2, y2] = boxToNormalized(box, imageWidth, imageHeight);
  const coords = `<box>(${x1},${y1}),(${x2},${y2})</box>`;
  if (label === null || label === "") return [{ type: "template", text: coords }];
  return [
    { type: "template", text: "<ref>" },
    { type: "user", text: label },
    { type: "template", text: `</ref>${coords}` },
  ];
}
