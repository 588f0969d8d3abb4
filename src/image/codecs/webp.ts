/**
 * WebP through @jsquash/webp (libwebp in WebAssembly), decoded to RGBA as Pillow's WebP plugin does;
 * alpha is dropped by reading RGB with a stride of 4. An Emscripten module that aborted is not reused.
 */
import webpFactory from "@jsquash/webp/codec/dec/webp_dec.js";
import { ApiError } from "../../errors";
import type { RgbPixels } from "../pixels";
import type { ImageInfo } from "../probe";

interface WebpModule {
  decode(data: BufferSource): { data: Uint8ClampedArray; width: number; height: number } | null;
  HEAP8: Int8Array;
}

export class WebpCodec {
  #module: WebAssembly.Module;
  #instance: Promise<WebpModule> | undefined;

  constructor(module: WebAssembly.Module) {
    this.#module = module;
  }

  #load(): Promise<WebpModule> {
    this.#instance ??= (webpFactory as unknown as (o: object) => Promise<WebpModule>)({
      noInitialRun: true,
      instantiateWasm: (imports: WebAssembly.Imports, callback: (i: WebAssembly.Instance) => void) => {
        const instance = new WebAssembly.Instance(this.#module, imports);
        callback(instance);
        return instance.exports;
      },
    });
    return this.#instance;
  }

  heapBytes(): number {
    return this.#heap;
  }
  #heap = 0;

  async decode(bytes: Uint8Array, info: ImageInfo): Promise<RgbPixels> {
    const codec = await this.#load();
    let image: ReturnType<WebpModule["decode"]>;
    try {
      image = codec.decode(bytes as Uint8Array<ArrayBuffer>);
    } catch (err) {
      this.#instance = undefined; // aborted: a fresh instance next time
      throw new ApiError("image_decode_failed", "The WebP could not be decoded.", { param: "image", cause: err });
    } finally {
      this.#heap = Math.max(this.#heap, codec.HEAP8?.buffer.byteLength ?? 0);
    }
    if (!image) throw new ApiError("image_decode_failed", "The WebP could not be decoded: corrupt or truncated data.", { param: "image" });
    if (image.width !== info.width || image.height !== info.height) {
      throw new ApiError("image_decode_failed", "The WebP's pixel data does not match its header.", { param: "image" });
    }
    return {
      width: image.width,
      height: image.height,
      data: new Uint8Array(image.data.buffer, image.data.byteOffset, image.data.byteLength),
      stride: 4,
      gray: false,
    };
  }
}
