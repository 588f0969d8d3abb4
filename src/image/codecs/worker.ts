/**
 * The decoders inside the Worker: the `.wasm` files arrive as compiled `WebAssembly.Module`s.
 * One set per isolate, created on first use.
 */

// @ts-expect-error the package's own .wasm.d.ts describes the instance's exports, not the compiled module
import png from "@jsquash/png/codec/pkg/squoosh_png_bg.wasm";
import webp from "@jsquash/webp/codec/dec/webp_dec.wasm";
import { type Codecs, createCodecs } from "./index";
import jpeg from "./libjpeg-turbo/libjpeg-turbo.wasm";

let codecs: Codecs | undefined;

export function getCodecs(): Codecs {
  codecs ??= createCodecs({ jpeg, png, webp });
  return codecs;
}
