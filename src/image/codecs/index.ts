/**
 * The decoders, each built from a compiled `WebAssembly.Module` handed in by the host: the Worker
 * imports the `.wasm` files (workerd cannot compile wasm from bytes at run time), Node compiles them
 * from disk (`scripts/lib/node-codecs.ts`). One `Codecs` per isolate; instances are reused.
 */

import type { ImageFormat } from "../sniff";
import { createJpegDecoder, type JpegDecoder } from "./libjpeg-turbo/index";
import { PngCodec } from "./png";
import { WebpCodec } from "./webp";

export interface CodecModules {
  jpeg: WebAssembly.Module;
  png: WebAssembly.Module;
  webp: WebAssembly.Module;
}

export interface Codecs {
  jpeg(): Promise<JpegDecoder>;
  png: PngCodec;
  webp: WebpCodec;
  /** Size of a decoder's wasm memory now (0 for the GIF decoder, which is plain JS). */
  heapBytes(format: ImageFormat): number;
  /**
   * Drops the JPEG decoder when its wasm memory has grown past `limitBytes` (a progressive photo's
   * coefficient buffer): wasm memory never shrinks, so the only way to give it back to the isolate is
   * a fresh instance (≈ 1 ms) for the next request.
   */
  releaseJpegIfGrown(limitBytes?: number): void;
}

/** Workers have no ImageData; the jsquash codecs construct one. */
function ensureImageData(): void {
  const g = globalThis as { ImageData?: unknown };
  g.ImageData ??= class ImageData {
    constructor(
      readonly data: Uint8ClampedArray,
      readonly width: number,
      readonly height: number,
    ) {}
  };
}

/** A decoder whose memory stayed at most this big is kept for the next request (baseline JPEGs stay at 16 MiB). */
const JPEG_KEEP_HEAP_BYTES = 24 * 1024 * 1024;

export function createCodecs(modules: CodecModules, options: { jpegMaxMemoryBytes?: number } = {}): Codecs {
  ensureImageData();
  let jpeg: Promise<JpegDecoder> | undefined;
  let jpegDecoder: JpegDecoder | undefined;
  const png = new PngCodec(modules.png);
  const webp = new WebpCodec(modules.webp);
  return {
    jpeg() {
      jpeg ??= createJpegDecoder(modules.jpeg, { maxMemoryBytes: options.jpegMaxMemoryBytes }).then((d) => (jpegDecoder = d));
      return jpeg;
    },
    png,
    webp,
    releaseJpegIfGrown(limitBytes = JPEG_KEEP_HEAP_BYTES) {
      if (jpegDecoder && jpegDecoder.heapBytes() > limitBytes) {
        jpegDecoder.dispose();
        jpegDecoder = undefined;
        jpeg = undefined;
      }
    },
    heapBytes: (format) =>
      format === "jpeg" ? (jpegDecoder?.heapBytes() ?? 0) : format === "png" ? png.heapBytes() : format === "webp" ? webp.heapBytes() : 0,
  };
}
