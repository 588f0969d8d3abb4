import { describe, expect, it } from "vitest";
import { float16BitsToNumber, float32ToFloat16Bits, normalizedFloat32, normalizeToFloat16 } from "./normalize";

describe("float32 → float16, round to nearest even", () => {
  it.each([
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff], // largest half
    [65520, 0x7c00], // rounds up to Inf (tie goes to even, which is the Inf encoding)
    [1e6, 0x7c00],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // exactly half of it: ties to even → 0
    [1.5 * 2 ** -25, 0x0001],
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10: even mantissa wins
    [1 + 3 * 2 ** -11, 0x3c02], // tie between odd and even: rounds up to even
    [0.1, 0x2e66],
  ])("%d → 0x%s", (value, bits) => {
    expect(float32ToFloat16Bits(value)).toBe(bits);
  });

  it("NaN stays NaN", () => {
    expect(Number.isNaN(float16BitsToNumber(float32ToFloat16Bits(Number.NaN)))).toBe(true);
  });

  it("round-trips every finite half exactly", () => {
    for (let h = 0; h < 0x7c00; h++) {
      expect(float32ToFloat16Bits(float16BitsToNumber(h))).toBe(h);
      expect(float32ToFloat16Bits(-float16BitsToNumber(h))).toBe(h | 0x8000);
    }
  });
});

describe("CLIP normalization", () => {
  it("computes in float32 like torch (x/255 - mean) / std", () => {
    // A float64 computation differs from the float32 one in the last bits for some inputs.
    const f64 = (0 / 255 - 0.48145466) / 0.26862954;
    expect(normalizedFloat32(0, 0)).toBe(Math.fround(normalizedFloat32(0, 0)));
    expect(Math.abs(normalizedFloat32(0, 0) - f64)).toBeLessThan(1e-6);
    expect(normalizedFloat32(255, 2)).toBeCloseTo((1 - 0.40821073) / 0.27577711, 5);
  });

  it("lays out CHW: plane c holds channel c of every pixel", () => {
    const rgb = new Uint8Array([0, 128, 255, 10, 20, 30]); // two pixels
    const out = normalizeToFloat16(rgb, 2, 1);
    expect(out.length).toBe(6);
    expect(out[0]).toBe(float32ToFloat16Bits(normalizedFloat32(0, 0)));
    expect(out[1]).toBe(float32ToFloat16Bits(normalizedFloat32(10, 0)));
    expect(out[2]).toBe(float32ToFloat16Bits(normalizedFloat32(128, 1)));
    expect(out[5]).toBe(float32ToFloat16Bits(normalizedFloat32(30, 2)));
  });
});
