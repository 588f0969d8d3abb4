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
    heapBytes: (format) =>
      format === "jpeg" ? (jpegDecoder?.heapBytes() ?? 0) : format === "png" ? png.heapBytes() : format === "webp" ? webp.heapBytes() : 0,
  };
}
