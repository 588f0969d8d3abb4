/**
 * Decode: encoded bytes → `RgbPixels` (Pillow's `convert("RGB")`, described without copying where
 * possible), for the JS resampler (PNG, WebP, GIF; JPEG too through {@link decodeImage}, which the
 * tests use as the reference path).
 *
 * The pipeline decodes JPEG with {@link decodeJpegResized} instead: libjpeg-turbo's rows stream
 * through Pillow's bicubic resampler inside the same wasm module (EXIF orientation applied there),
 * so a JPEG never exists as a full-size image anywhere, only as a window of rows and the small output.
 */
import { ApiError } from "../errors";
import { decodeGif } from "./codecs/gif";
import type { Codecs } from "./codecs/index";
import { fastDctScale, JpegDecodeError, type JpegDecoder, type JpegScaleDenom } from "./codecs/libjpeg-turbo/index";
import type { Orientation } from "./exif";
import type { MemoryMeter } from "./memory";
import type { RgbPixels } from "./pixels";
import type { ImageInfo, ImageLimits } from "./probe";
import { invertedCmykToRgb } from "./to-rgb";

const JPEG_ROWS_PER_READ = 16;

export async function decodeImage(
  bytes: Uint8Array,
  info: ImageInfo,
  codecs: Codecs,
  limits: ImageLimits,
  meter: MemoryMeter,
): Promise<RgbPixels> {
  let pixels: RgbPixels;
  switch (info.format) {
    case "jpeg":
      pixels = await decodeJpeg(bytes, info, codecs, meter);
      break;
    case "png":
      pixels = codecs.png.decode(bytes, info);
      break;
    case "webp":
      pixels = await codecs.webp.decode(bytes, info);
      break;
    case "gif":
      pixels = decodeGif(bytes, info, limits.maxPixels);
      break;
  }
  if (info.format !== "jpeg") meter.alloc(pixels.data.byteLength);
  meter.wasm(codecs.heapBytes(info.format));
  return pixels;
}

async function decodeJpeg(bytes: Uint8Array, info: ImageInfo, codecs: Codecs, meter: MemoryMeter): Promise<RgbPixels> {
  const decoder = await codecs.jpeg();
  try {
    const header = decoder.open(bytes);
    if (header.width !== info.width || header.height !== info.height) {
      throw new ApiError("image_decode_failed", "The JPEG's frame header is inconsistent.", { param: "image" });
    }
    const out = decoder.start(1);
    const cmyk = out.channels === 4;
    const stride = cmyk ? 3 : out.channels;
    const rowBytes = out.width * stride;
    const data = new Uint8Array(rowBytes * out.height);
    meter.alloc(data.byteLength);
    for (let y = 0; y < out.height; ) {
      const rows = decoder.readRows(JPEG_ROWS_PER_READ);
      const n = rows.byteLength / (out.width * out.channels);
      if (n === 0) throw new ApiError("image_decode_failed", "The JPEG ended early.", { param: "image" });
      if (cmyk) invertedCmykToRgb(rows, data, y * rowBytes, n * out.width);
      else data.set(rows, y * rowBytes);
      y += n;
      meter.wasm(codecs.heapBytes("jpeg"));
    }
    decoder.finish();
    return { width: out.width, height: out.height, data, stride, gray: out.channels === 1 };
  } catch (err) {
    throw jpegFailure(decoder, err);
  } finally {
    meter.wasm(codecs.heapBytes("jpeg"));
  }
}

/** Resets the decoder for its next use and maps a failure to the client's error. */
function jpegFailure(decoder: JpegDecoder, err: unknown): unknown {
  decoder.abort();
  return err instanceof JpegDecodeError ? jpegError(err) : err;
}

function jpegError(err: JpegDecodeError): ApiError {
  if (/memory|insufficient|too large|exceed/i.test(err.message)) {
    // A multi-scan (progressive) file keeps every DCT coefficient until its last scan: say what helps.
    const hint = /coefficient buffer/.test(err.message)
      ? " A progressive JPEG is held whole while it decodes: send this image as a baseline JPEG, or smaller."
      : "";
    return new ApiError("image_too_large", `The JPEG needs more memory to decode than allowed: ${err.message}.${hint}`, {
      param: "image",
      cause: err,
    });
  }
  return new ApiError("image_decode_failed", `The JPEG could not be decoded: ${err.message}.`, { param: "image", cause: err });
}

/** A JPEG decoded and resized in one pass (see {@link decodeJpegResized}). */
export interface ResizedJpegImage {
  /** width × height × (gray ? 1 : 3) bytes, HWC. */
  data: Uint8Array;
  width: number;
  height: number;
  /** True: Pillow "L", one channel (replicate it for RGB); false: RGB. */
  gray: boolean;
  /** Size of the oriented source image (the stored image's, whatever the decode scale). */
  orientedWidth: number;
  orientedHeight: number;
  /** The DCT scale the JPEG was decoded at before resizing: 1 (exact), or 2, 4, 8 in fast mode. */
  dctScale: JpegScaleDenom;
}

/**
 * How a JPEG is decoded before the resize: `exact` decodes at full scale (byte-identical to Pillow without
 * `draft()`); `fast` decodes at the DCT scale Pillow's `draft("RGB", (1.5 × outWidth, 1.5 × outHeight))` picks
 * for the stored image (`fastDctScale`: the smallest 1/N still ≥ 1.5× the output on both sides) and resizes
 * from there with the same resampler, i.e. what that `im.draft(...)` before `resize` gives in Pillow.
 */
export type JpegQuality = "exact" | "fast";

/**
 * JPEG → `outWidth` × `outHeight`: decoded at full size and resized while it decodes, inside the wasm
 * module (libjpeg-turbo + a streamed port of Pillow's `Resample.c`), with `orientation` applied first.
 * Byte-identical to `exif_transpose` (when `orientation` is the file's) + `convert("RGB")` +
 * `resize((outWidth, outHeight), BICUBIC)`, except that gray stays one channel. With `quality: "fast"` it
 * decodes at the DCT scale `fastDctScale` picks (see {@link JpegQuality}) and resizes from there.
 *
 * Memory: the meter gets the wasm heap's high-water mark (the input copy, libjpeg's buffers, the
 * resampler's window of rows; for progressive files libjpeg's whole-image coefficient buffer) and the
 * one JS buffer held, the output.
 */
export async function decodeJpegResized(
  bytes: Uint8Array,
  info: ImageInfo,
  codecs: Codecs,
  orientation: Orientation,
  outWidth: number,
  outHeight: number,
  meter: MemoryMeter,
  quality: JpegQuality = "exact",
): Promise<ResizedJpegImage> {
  const decoder = await codecs.jpeg();
  try {
    const header = decoder.open(bytes);
    if (header.width !== info.width || header.height !== info.height) {
      throw new ApiError("image_decode_failed", "The JPEG's frame header is inconsistent.", { param: "image" });
    }
    // draft() works on the stored image: with orientations 5-8 the request's sides swap, which is the
    // same request for a square output (the only one the pipeline makes).
    const [reqW, reqH] = orientation >= 5 ? [outHeight, outWidth] : [outWidth, outHeight];
    const scaleDenom = quality === "fast" ? fastDctScale(header.width, header.height, reqW, reqH) : 1;
    const out = decoder.readResized({ orientation, outWidth, outHeight, scaleDenom });
    meter.alloc(out.data.byteLength);
    const transposed = orientation >= 5;
    return {
      data: out.data,
      width: out.width,
      height: out.height,
      gray: out.channels === 1,
      orientedWidth: transposed ? header.height : header.width,
      orientedHeight: transposed ? header.width : header.height,
      dctScale: out.scaleDenom,
    };
  } catch (err) {
    throw jpegFailure(decoder, err);
  } finally {
    meter.wasm(codecs.heapBytes("jpeg"));
    codecs.releaseJpegIfGrown();
  }
}
