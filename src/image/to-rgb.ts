/**
 * To RGB: Pillow's `convert("RGB")` for the decoder outputs that need real arithmetic. Most modes need
 * none (RGBA and LA are read with a stride; L and P are handled by the decoders), see `RgbPixels`.
 */

/**
 * Adobe CMYK JPEG rows (stored inverted; Pillow reads them as "CMYK;I") → RGB, with Pillow 9.4's
 * `cmyk2rgb`: `nk = 255 - k; out = clip8(nk - MULDIV255(c, nk))`.
 */
export function invertedCmykToRgb(src: Uint8Array, dst: Uint8Array, dstOffset: number, pixels: number): void {
  for (let i = 0, s = 0, d = dstOffset; i < pixels; i++, s += 4, d += 3) {
    const nk = src[s + 3]; // 255 - (255 - stored K)
    dst[d] = clip8(nk - muldiv255(255 - src[s], nk));
    dst[d + 1] = clip8(nk - muldiv255(255 - src[s + 1], nk));
    dst[d + 2] = clip8(nk - muldiv255(255 - src[s + 2], nk));
  }
}

/** Pillow's MULDIV255: `((a * b + 128) + ((a * b + 128) >> 8)) >> 8`. */
const muldiv255 = (a: number, b: number): number => {
  const t = a * b + 128;
  return (t + (t >> 8)) >> 8;
};

const clip8 = (v: number): number => (v <= 0 ? 0 : v >= 255 ? 255 : v);
