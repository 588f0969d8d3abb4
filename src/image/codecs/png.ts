/**
 * PNG through @jsquash/png (the Rust `png` crate in WebAssembly): palette + tRNS, gray/LA, 16-bit and
 * Adam7 are expanded to RGBA by the codec. Pillow reads 16-bit samples by their high byte, except
 * 16-bit grayscale, which Pillow opens as mode "I" and whose `convert("RGB")` clips each value to
 * 0..255 (so anything above 255 turns white): kept here, because that is what the reference sees.
 */
import { decode as decodeRgba8, decode_rgba16 as decodeRgba16, initSync } from "@jsquash/png/codec/pkg/squoosh_png.js";
import { ApiError } from "../../errors";
import type { RgbPixels } from "../pixels";
import type { ImageInfo } from "../probe";

export class PngCodec {
  #module: WebAssembly.Module;
  #memory: WebAssembly.Memory | undefined;

  constructor(module: WebAssembly.Module) {
    this.#module = module;
  }

  /** Current size of the codec's wasm memory (it only grows). */
  heapBytes(): number {
    return this.#memory?.buffer.byteLength ?? 0;
  }

  decode(bytes: Uint8Array, info: ImageInfo): RgbPixels {
    // wasm-bindgen keeps one instance per JS module; initSync is a no-op after the first call.
    this.#memory ??= initSync(this.#module).memory;
    try {
      if (info.bitDepth === 16 && info.colorType === 0) return gray16ToL(decodeRgba16(bytes));
      const image = decodeRgba8(bytes);
      checkSize(image, info);
      return { width: image.width, height: image.height, data: new Uint8Array(image.data.buffer), stride: 4, gray: false };
    } catch (err) {
      if (err instanceof ApiError) throw err;
      throw new ApiError("image_decode_failed", `The PNG could not be decoded: ${describe(err)}.`, { param: "image", cause: err });
    }
  }
}

function checkSize(image: { width: number; height: number }, info: ImageInfo): void {
  if (image.width !== info.width || image.height !== info.height) {
    throw new ApiError("image_decode_failed", "The PNG's pixel data does not match its header.", { param: "image" });
  }
}

function gray16ToL(image: { width: number; height: number; data: Uint16Array; free(): void }): RgbPixels {
  try {
    const out = new Uint8Array(image.width * image.height);
    const src = image.data;
    for (let i = 0, p = 0; i < out.length; i++, p += 4) out[i] = src[p] > 255 ? 255 : src[p];
    return { width: image.width, height: image.height, data: out, stride: 1, gray: true };
  } finally {
    image.free();
  }
}

function describe(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  // The codec's messages are short and about the file (e.g. "CRC error"); keep them, bounded.
  return text.replace(/\s+/g, " ").slice(0, 160) || "corrupt data";
}
