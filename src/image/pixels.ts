/**
 * The in-memory image handed from decoding to resizing: Pillow's `convert("RGB")` result, described
 * rather than copied where that is exact. RGBA pixels are read with a stride of 4 (Pillow drops alpha,
 * it does not composite); grayscale is resampled once and replicated at the end (every channel is
 * resampled with the same coefficients, so this equals resampling the replicated RGB image).
 */
export interface RgbPixels {
  /** Stored size, before EXIF orientation. */
  width: number;
  height: number;
  data: Uint8Array;
  /** Bytes from one pixel to the next (1–4). */
  stride: number;
  /** True: channel 0 is luminance (Pillow "L"); false: channels 0, 1, 2 are R, G, B. */
  gray: boolean;
}

/** Number of bytes a decoder or conversion holds, for the peak-memory figure. */
export const pixelBytes = (p: RgbPixels): number => p.data.byteLength;
