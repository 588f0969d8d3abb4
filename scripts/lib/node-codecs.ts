/**
 * The same decoders as the Worker, for Node (CLI, benchmarks): compile the `.wasm` files from disk.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { type CodecModules, type Codecs, createCodecs } from "../../src/image/codecs/index";

const require = createRequire(import.meta.url);

export const WASM_PATHS = {
  jpeg: fileURLToPath(new URL("../../src/image/codecs/libjpeg-turbo/libjpeg-turbo.wasm", import.meta.url)),
  png: require.resolve("@jsquash/png/codec/pkg/squoosh_png_bg.wasm"),
  webp: require.resolve("@jsquash/webp/codec/dec/webp_dec.wasm"),
} as const;

export async function loadCodecModules(): Promise<CodecModules> {
  const [jpeg, png, webp] = await Promise.all(
    [WASM_PATHS.jpeg, WASM_PATHS.png, WASM_PATHS.webp].map(async (p) => WebAssembly.compile(await readFile(p))),
  );
  return { jpeg, png, webp };
}

export async function createNodeCodecs(): Promise<Codecs> {
  return createCodecs(await loadCodecModules());
}
