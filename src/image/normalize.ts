/**
 * Normalize: torchvision's `ToTensor` + `Normalize` with CLIP's mean/std, in float32, CHW, then rounded
 * to float16 (nearest-even). Each step is rounded to float32 (`Math.fround`) as torch computes it.
 * The result depends only on (channel, byte), so it is a 3 × 256 lookup table built once.
 */

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 binary16 bits of a float32 value, rounding to nearest, ties to even. */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // Inf, NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    // Subnormal half (or zero): the 24-bit significand shifted into units of 2^-24.
    const shift = 126 - exp;
    if (shift >= 25) return sign;
    const m = mant | 0x800000;
    let h = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++; // a carry into the exponent is correct
  return sign | h;
}

/** float16 bits → number (for tests and per-channel means). */
export function float16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** The float32 value the reference computes for byte `v` of channel `c`. */
export function normalizedFloat32(v: number, c: number): number {
  const x = Math.fround(Math.fround(v) / 255);
  return Math.fround(Math.fround(x - Math.fround(CLIP_MEAN[c])) / Math.fround(CLIP_STD[c]));
}

let table: Uint16Array | undefined;

function f16Table(): Uint16Array {
  if (!table) {
    table = new Uint16Array(3 * 256);
    for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) table[c * 256 + v] = float32ToFloat16Bits(normalizedFloat32(v, c));
  }
  return table;
}

/** HWC uint8 RGB → CHW float16 (as raw bits). */
export function normalizeToFloat16(rgb: Uint8Array, width: number, height: number): Uint16Array {
  const plane = width * height;
  if (rgb.length !== plane * 3) throw new RangeError(`expected ${plane * 3} bytes, got ${rgb.length}`);
  const t = f16Table();
  const out = new Uint16Array(plane * 3);
  for (let i = 0, p = 0; i < plane; i++, p += 3) {
    out[i] = t[rgb[p]];
    out[plane + i] = t[256 + rgb[p + 1]];
    out[2 * plane + i] = t[512 + rgb[p + 2]];
  }
  return out;
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Little-endian bytes of a float16 tensor, whatever the host's endianness: on a little-endian host (every
 * one Workers and Node run on) a view of the same memory, no copy (a per-element copy cost ≈ 3.5 ms for
 * 3×448×448); otherwise swapped into a new buffer.
 */
export function float16Bytes(tensor: Uint16Array): Uint8Array {
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(tensor.buffer, tensor.byteOffset, tensor.byteLength);
  const out = new Uint8Array(tensor.length * 2);
  const v = new DataView(out.buffer);
  for (let i = 0; i < tensor.length; i++) v.setUint16(i * 2, tensor[i], true);
  return out;
}
