/**
 * The preprocessing pipeline, shared by the Worker routes and the CLI:
 * sniff → probe → decode (to RGB) → orient → resize (Pillow-exact bicubic, 448²) → normalize.
 * JPEG does decode, orient and resize in one streamed pass inside the libjpeg-turbo wasm
 * (`decodeJpegResized`); PNG, WebP and GIF are decoded whole and resized by `resizeBicubic`.
 */
import type { Codecs } from "./codecs/index";
import { decodeImage, decodeJpegResized, type JpegQuality } from "./decode";
import type { Orientation } from "./exif";
import { MemoryMeter } from "./memory";
import { float16Bytes, normalizeToFloat16 } from "./normalize";
import { effectiveOrientation, type OrientationMode, orientedView } from "./orient";
import { DEFAULT_IMAGE_LIMITS, type ImageLimits, probeImage } from "./probe";
import { grayToRgb, resizeBicubic, TENSOR_SIZE } from "./resize";
import { type ImageFormat, sniffImageFormat } from "./sniff";

/** Bumped whenever the bytes a given input produces could change (cache keys include it). */
export const PREPROCESS_VERSION = "qvl-pre-1";

export type TensorFormat = "f16" | "u8";

/**
 * `exact` (default): byte-identical to Pillow. `fast`: JPEGs are decoded with libjpeg's DCT scaling at the
 * scale Pillow's `draft()` picks for a 672×672 request (`fastDctScale`: smallest 1/N still ≥ 1.5 × 448 on both
 * sides), then resized with the same resampler; other formats ignore it (always exact).
 */
export type PreprocessQuality = JpegQuality;

export interface PreprocessOptions {
  format: TensorFormat;
  orientation: OrientationMode;
  limits: ImageLimits;
  quality: PreprocessQuality;
}

export const DEFAULT_PREPROCESS_OPTIONS: PreprocessOptions = {
  format: "f16",
  orientation: "apply",
  limits: DEFAULT_IMAGE_LIMITS,
  quality: "exact",
};

export interface PreprocessResult {
  format: TensorFormat;
  /** f16: [3, 448, 448] CHW; u8: [448, 448, 3] HWC. */
  shape: [number, number, number];
  dtype: "float16" | "uint8";
  /** Little-endian tensor bytes. */
  tensor: Uint8Array;
  sha256: string;
  sourceFormat: ImageFormat;
  /** Size of the image as the model's input was made from it (after orientation, when applied). */
  width: number;
  height: number;
  /** EXIF orientation found in the file (1 when none) and whether it was applied. */
  exifOrientation: Orientation;
  orientationApplied: boolean;
  /** The quality asked for (`fast` only changes JPEGs). */
  quality: PreprocessQuality;
  /** The JPEG DCT scale decoded at (1 = full; 2, 4, 8 in fast mode); 1 for other formats. */
  dctScale: 1 | 2 | 4 | 8;
  /**
   * `decode` includes sniffing and probing. For JPEG, decoding and resizing happen together in one wasm
   * call (rows are resampled as they are decoded), so `decode` is the combined time and `resize` is 0.
   */
  timingMs: { decode: number; resize: number; normalize: number; total: number };
  peakBytes: number;
}

const now = () => performance.now();

export async function preprocessImage(
  bytes: Uint8Array,
  codecs: Codecs,
  options: Partial<PreprocessOptions> = {},
): Promise<PreprocessResult> {
  const opts = { ...DEFAULT_PREPROCESS_OPTIONS, ...options };
  const meter = new MemoryMeter();
  const t0 = now();
  const sourceFormat = sniffImageFormat(bytes);
  const info = probeImage(bytes, sourceFormat, opts.limits);
  const orientation = effectiveOrientation(info.orientation, opts.orientation);
  let rgb: Uint8Array;
  let width: number;
  let height: number;
  let t1: number;
  let dctScale: 1 | 2 | 4 | 8 = 1;
  if (info.format === "jpeg") {
    // Decode + orient + resize in one streamed wasm pass: its whole time counts as `decode`, `resize` is 0.
    const resized = await decodeJpegResized(bytes, info, codecs, orientation, TENSOR_SIZE, TENSOR_SIZE, meter, opts.quality);
    t1 = now();
    dctScale = resized.dctScale;
    rgb = resized.data;
    if (resized.gray) {
      rgb = grayToRgb(resized.data);
      meter.alloc(rgb.byteLength);
      meter.free(resized.data.byteLength);
    }
    width = resized.orientedWidth;
    height = resized.orientedHeight;
  } else {
    const pixels = await decodeImage(bytes, info, codecs, opts.limits, meter);
    t1 = now();
    const view = orientedView(pixels.width, pixels.height, orientation);
    rgb = resizeBicubic(pixels, view, TENSOR_SIZE, TENSOR_SIZE, meter);
    if (pixels.gray) rgb = grayToRgb(rgb);
    meter.alloc(rgb.byteLength);
    meter.free(pixels.data.byteLength);
    width = view.width;
    height = view.height;
  }
  const t2 = now();

  let tensor: Uint8Array;
  if (opts.format === "f16") {
    tensor = float16Bytes(normalizeToFloat16(rgb, TENSOR_SIZE, TENSOR_SIZE));
    meter.alloc(tensor.byteLength);
  } else {
    tensor = rgb;
  }
  const t3 = now();
  const sha256 = await sha256Hex(tensor);
  return {
    format: opts.format,
    shape: opts.format === "f16" ? [3, TENSOR_SIZE, TENSOR_SIZE] : [TENSOR_SIZE, TENSOR_SIZE, 3],
    dtype: opts.format === "f16" ? "float16" : "uint8",
    tensor,
    sha256,
    sourceFormat,
    width,
    height,
    exifOrientation: info.orientation,
    orientationApplied: orientation !== 1,
    quality: opts.quality,
    dctScale,
    timingMs: { decode: t1 - t0, resize: t2 - t1, normalize: t3 - t2, total: now() - t0 },
    peakBytes: meter.peak,
  };
}

export async function sha256Hex(data: Uint8Array): Promise<string> {
  // Never a SharedArrayBuffer here; the cast only narrows the buffer type for lib.dom.
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
