import { describe, expect, it } from "vitest";
import type { Orientation } from "./exif";
import { orientedView } from "./orient";
import type { RgbPixels } from "./pixels";
import { precomputeCoefficients, resizeBicubic } from "./resize";

describe("Pillow bicubic coefficients", () => {
  it("sum to 1.0 in 22-bit fixed point (within rounding) for down- and upscaling", () => {
    for (const [inSize, outSize] of [
      [4272, 448],
      [120, 448],
      [449, 448],
      [448, 448],
      [1, 448],
    ]) {
      const { ksize, bounds, weights } = precomputeCoefficients(inSize, outSize);
      for (let i = 0; i < outSize; i++) {
        let sum = 0;
        for (let k = 0; k < bounds[i * 2 + 1]; k++) sum += weights[i * ksize + k];
        expect(Math.abs(sum - (1 << 22))).toBeLessThanOrEqual(ksize);
        expect(bounds[i * 2]).toBeGreaterThanOrEqual(0);
        expect(bounds[i * 2] + bounds[i * 2 + 1]).toBeLessThanOrEqual(inSize);
      }
    }
  });

  it("uses Pillow's support: 2 × scale taps each side when downscaling", () => {
    expect(precomputeCoefficients(4480, 448).ksize).toBe(Math.ceil(2 * 10) * 2 + 1);
    expect(precomputeCoefficients(100, 448).ksize).toBe(5);
  });
});

function naiveOrient(src: Uint8Array, w: number, h: number, o: Orientation): { data: Uint8Array; w: number; h: number } {
  // Straightforward per-orientation transforms, written independently of orientedView.
  const transposed = o >= 5;
  const ow = transposed ? h : w;
  const oh = transposed ? w : h;
  const out = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      let sx: number;
      let sy: number;
      switch (o) {
        case 1:
          [sx, sy] = [x, y];
          break;
        case 2:
          [sx, sy] = [w - 1 - x, y];
          break;
        case 3:
          [sx, sy] = [w - 1 - x, h - 1 - y];
          break;
        case 4:
          [sx, sy] = [x, h - 1 - y];
          break;
        case 5:
          [sx, sy] = [y, x];
          break; // transpose
        case 6:
          [sx, sy] = [y, h - 1 - x];
          break; // rotate 90° clockwise
        case 7:
          [sx, sy] = [w - 1 - y, h - 1 - x];
          break; // transverse
        case 8:
          [sx, sy] = [w - 1 - y, x];
          break; // rotate 90° counter-clockwise
      }
      out.set(src.subarray((sy * w + sx) * 3, (sy * w + sx) * 3 + 3), (y * ow + x) * 3);
    }
  }
  return { data: out, w: ow, h: oh };
}

describe("orientation is folded into the resampler exactly", () => {
  const w = 37;
  const h = 23;
  const data = new Uint8Array(w * h * 3).map((_, i) => (i * 7919) % 256);
  const src: RgbPixels = { width: w, height: h, data, stride: 3, gray: false };

  it.each([1, 2, 3, 4, 5, 6, 7, 8] as Orientation[])("orientation %i equals transpose-then-resize", (o) => {
    const expected = naiveOrient(data, w, h, o);
    const plain: RgbPixels = { width: expected.w, height: expected.h, data: expected.data, stride: 3, gray: false };
    const viaView = resizeBicubic(src, orientedView(w, h, o), 16, 16);
    const viaCopy = resizeBicubic(plain, orientedView(expected.w, expected.h, 1), 16, 16);
    expect(viaView).toEqual(viaCopy);
  });

  it("reads RGBA with stride 4, ignoring alpha", () => {
    const rgba = new Uint8Array(w * h * 4);
    for (let i = 0; i < w * h; i++) {
      rgba.set(data.subarray(i * 3, i * 3 + 3), i * 4);
      rgba[i * 4 + 3] = i % 256; // alpha must not matter
    }
    const a = resizeBicubic({ width: w, height: h, data: rgba, stride: 4, gray: false }, orientedView(w, h, 1), 9, 30);
    const b = resizeBicubic(src, orientedView(w, h, 1), 9, 30);
    expect(a).toEqual(b);
  });

  it("returns the pixels unchanged when the size already matches", () => {
    expect(resizeBicubic(src, orientedView(w, h, 1), w, h)).toEqual(data);
  });
});
