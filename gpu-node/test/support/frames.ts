/**
 * Real tensors and frames for the gpu-node tests: the dune photo through the edge's own preprocessing
 * pipeline (its f16 sha256 is in MANIFEST.json), and frames built with the protocol's encoder.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createNodeCodecs } from "../../../scripts/lib/node-codecs";
import { preprocessImage } from "../../../src/image/pipeline";
import { describeTensors, encodeFrame, type GenerateHeaderInput } from "../../../src/protocol/index";

export const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const IMAGES = `${ROOT}test/fixtures/images`;

export const MANIFEST = JSON.parse(readFileSync(`${IMAGES}/MANIFEST.json`, "utf8")) as {
  items: Array<{ file: string; reference_f16_sha256: string }>;
};

const cache = new Map<string, Promise<Uint8Array>>();

/** The preprocessed tensor of a fixture image (computed once per test file). */
export function fixtureTensor(file: string, format: "f16" | "u8"): Promise<Uint8Array> {
  const key = `${file}:${format}`;
  let tensor = cache.get(key);
  if (!tensor) {
    tensor = (async () => {
      const codecs = await createNodeCodecs();
      const result = await preprocessImage(new Uint8Array(readFileSync(`${IMAGES}/${file}`)), codecs, { format });
      return result.tensor;
    })();
    cache.set(key, tensor);
  }
  return tensor;
}

/** A synthetic tensor of the right size (cheap; for tests that do not look at pixels). */
export function syntheticTensor(dtype: "f16" | "u8", seed = 1): Uint8Array {
  const bytes = new Uint8Array(dtype === "f16" ? 3 * 448 * 448 * 2 : 448 * 448 * 3);
  if (dtype === "u8") for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + seed * 17) & 0xff;
  else {
    // Small finite halves (high byte 0x30..0x3e: no NaN or infinity), a different mean per channel.
    const plane = 448 * 448;
    for (let i = 0; i < bytes.length; i += 2) {
      const channel = Math.floor(i / 2 / plane);
      bytes[i] = (i * 13 + seed) & 0xff;
      bytes[i + 1] = 0x30 + channel * 4 + ((i >> 1) % 3);
    }
  }
  return bytes;
}

export type Prompts = GenerateHeaderInput["prompts"];

let counter = 0;

/** A frame with these prompts over these tensors; header fields overridable. */
export async function buildFrame(
  tensors: Array<{ dtype: "f16" | "u8"; bytes: Uint8Array }>,
  prompts: Prompts,
  overrides: Partial<GenerateHeaderInput> = {},
): Promise<{ frame: Uint8Array; header: GenerateHeaderInput }> {
  const header: GenerateHeaderInput = {
    version: 1,
    request_id: `test-${process.pid}-${++counter}`,
    variant: "qwen-vl-chat",
    prompts,
    images: await describeTensors(tensors),
    sampling: { max_tokens: 256 },
    ...overrides,
  };
  return {
    frame: encodeFrame(
      header,
      tensors.map((t) => t.bytes),
    ),
    header,
  };
}

/** A one-prompt, no-image frame: the cheapest valid request. */
export function textFrame(text = "Say something.", overrides: Partial<GenerateHeaderInput> = {}) {
  return buildFrame([], [[{ type: "user", text }]], overrides);
}

/** IEEE half → number (independent of the engine's table). */
export function halfToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** Per-channel means of a CHW f16 tensor, computed the slow obvious way. */
export function f16ChannelMeans(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const plane = 448 * 448;
  return [0, 1, 2].map((c) => {
    let sum = 0;
    for (let i = 0; i < plane; i++) sum += halfToNumber(view.getUint16((c * plane + i) * 2, true));
    return sum / plane;
  });
}
