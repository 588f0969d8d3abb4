/**
 * Resize: a port of Pillow's `libImaging/Resample.c` 8-bit path with the bicubic filter (a = -0.5),
 * which is what `Resize((448, 448), BICUBIC)` runs on a PIL image. Byte-exact by construction:
 * coefficients in float64 exactly as the C code computes them, then 22-bit fixed point; horizontal
 * pass first (over only the source rows the vertical pass will read), clip to 8 bits, then the
 * vertical pass, clip again. Integer sums are exact in float64 (|sum| < 2^31), so JS numbers match
 * the C `INT32` arithmetic.
 */
import type { MemoryMeter } from "./memory";
import type { OrientedView } from "./orient";
import type { RgbPixels } from "./pixels";

export const TENSOR_SIZE = 448;

const PRECISION_BITS = 32 - 8 - 2;
const HALF = 1 << (PRECISION_BITS - 1);
const CLIP_MAX = (1 << PRECISION_BITS) << 8;
const BICUBIC_SUPPORT = 2.0;

function bicubicFilter(x: number): number {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

export interface Coefficients {
  /** Taps per output sample (the row length in `weights`). */
  ksize: number;
  /** Per output sample: first input index, number of taps. */
  bounds: Int32Array;
  /** 22-bit fixed-point weights, `ksize` per output sample. */
  weights: Int32Array;
}

/** `precompute_coeffs` + `normalize_coeffs_8bpc` for the box (0, inSize). */
export function precomputeCoefficients(inSize: number, outSize: number): Coefficients {
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = BICUBIC_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let ww = 0.0;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const w = bicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? k[x] / ww : k[x];
      weights[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, weights };
}

const clip8 = (v: number): number => (v >= CLIP_MAX ? 255 : v <= 0 ? 0 : v >> PRECISION_BITS);

/** Pillow's `ImagingResampleInner` for one 8-bit image: returns HWC bytes, 1 channel (gray) or 3. */
export function resizeBicubic(src: RgbPixels, view: OrientedView, outW = TENSOR_SIZE, outH = TENSOR_SIZE, meter?: MemoryMeter): Uint8Array {
  const channels = src.gray ? 1 : 3;
  const needHorizontal = outW !== view.width;
  const needVertical = outH !== view.height;
  const vert = precomputeCoefficients(view.height, outH);
  // Rows of the oriented image that the vertical pass reads.
  const yFirst = needVertical ? vert.bounds[0] : 0;
  const yLast = needVertical ? vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1] : view.height;
  const rows = yLast - yFirst;

  const temp = needHorizontal
    ? horizontalPass(src, view, yFirst, rows, precomputeCoefficients(view.width, outW), outW, channels)
    : copyRows(src, view, yFirst, rows, channels);
  if (!needVertical) return temp;
  meter?.alloc(temp.byteLength);
  for (let i = 0; i < outH; i++) vert.bounds[i * 2] -= yFirst;
  const out = verticalPass(temp, outW, vert, outH, channels);
  meter?.free(temp.byteLength);
  return out;
}

function horizontalPass(
  src: RgbPixels,
  view: OrientedView,
  yFirst: number,
  rows: number,
  c: Coefficients,
  outW: number,
  channels: number,
): Uint8Array {
  const out = new Uint8Array(outW * rows * channels);
  const { data, stride } = src;
  const { ksize, bounds, weights } = c;
  const step = view.dx * stride;
  let o = 0;
  for (let y = 0; y < rows; y++) {
    const rowBase = view.base + (y + yFirst) * view.dy;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const kOff = xx * ksize;
      let p = (rowBase + xmin * view.dx) * stride;
      if (channels === 3) {
        // int32 arithmetic (|0, Math.imul) keeps V8 on integer instructions; sums never overflow.
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0; x < xmax; x++) {
          const w = weights[kOff + x];
          s0 = (s0 + Math.imul(data[p], w)) | 0;
          s1 = (s1 + Math.imul(data[p + 1], w)) | 0;
          s2 = (s2 + Math.imul(data[p + 2], w)) | 0;
          p += step;
        }
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
        o += 3;
      } else {
        let s0 = HALF;
        for (let x = 0; x < xmax; x++) {
          s0 = (s0 + Math.imul(data[p], weights[kOff + x])) | 0;
          p += step;
        }
        out[o++] = clip8(s0);
      }
    }
  }
  return out;
}

/** When no horizontal pass is needed, the vertical pass reads the oriented rows as they are. */
function copyRows(src: RgbPixels, view: OrientedView, yFirst: number, rows: number, channels: number): Uint8Array {
  const out = new Uint8Array(view.width * rows * channels);
  let o = 0;
  for (let y = 0; y < rows; y++) {
    let p = view.base + (y + yFirst) * view.dy;
    for (let x = 0; x < view.width; x++, p += view.dx) {
      const b = p * src.stride;
      for (let ch = 0; ch < channels; ch++) out[o++] = src.data[b + ch];
    }
  }
  return out;
}

function verticalPass(temp: Uint8Array, width: number, c: Coefficients, outH: number, channels: number): Uint8Array {
  const out = new Uint8Array(width * outH * channels);
  const { ksize, bounds, weights } = c;
  const rowBytes = width * channels;
  let o = 0;
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2];
    const ymax = bounds[yy * 2 + 1];
    const kOff = yy * ksize;
    for (let i = 0; i < rowBytes; i++) {
      let s = HALF;
      let p = ymin * rowBytes + i;
      for (let y = 0; y < ymax; y++) {
        s = (s + Math.imul(temp[p], weights[kOff + y])) | 0;
        p += rowBytes;
      }
      out[o++] = clip8(s);
    }
  }
  return out;
}

/** Gray → RGB by replication (Pillow's L → RGB), HWC. */
export function grayToRgb(gray: Uint8Array): Uint8Array {
  const out = new Uint8Array(gray.length * 3);
  for (let i = 0, o = 0; i < gray.length; i++, o += 3) {
    const v = gray[i];
    out[o] = v;
    out[o + 1] = v;
    out[o + 2] = v;
  }
  return out;
}
