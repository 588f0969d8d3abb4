/**
 * Images for generation: each source (URL, data URI, or bytes already read) is fetched under the
 * safe-fetch rules and preprocessed to the f16 tensor the model sees. The sizes returned are the
 * image's as the user sees it (after orientation), for mapping boxes back to pixels.
 */
import type { Config } from "../config";
import { getCodecs } from "../image/codecs/worker";
import { fetchImage } from "../image/fetch";
import type { OrientationMode } from "../image/orient";
import { preprocessImage } from "../image/pipeline";

export type ImageSource = { url: string } | { bytes: Uint8Array };

export interface PreparedImage {
  tensor: Uint8Array;
  sha256: string;
  width: number;
  height: number;
  timings: { fetch: number; decode: number; resize: number; normalize: number };
}

export async function prepareImage(
  source: ImageSource,
  config: Config,
  options: { orientation?: OrientationMode; signal?: AbortSignal } = {},
): Promise<PreparedImage> {
  let bytes: Uint8Array;
  let fetchMs = 0;
  if ("bytes" in source) {
    bytes = source.bytes;
  } else {
    const started = performance.now();
    bytes = (await fetchImage(source.url, { maxBytes: config.image.maxBytes, ...config.fetch, signal: options.signal })).bytes;
    fetchMs = performance.now() - started;
  }
  const result = await preprocessImage(bytes, getCodecs(), {
    format: "f16",
    orientation: options.orientation ?? "apply",
    limits: config.image,
  });
  return {
    tensor: result.tensor,
    sha256: result.sha256,
    width: result.width,
    height: result.height,
    timings: { fetch: fetchMs, decode: result.timingMs.decode, resize: result.timingMs.resize, normalize: result.timingMs.normalize },
  };
}

/**
 * Several images: fetched concurrently (network-bound), preprocessed one after another inside the
 * isolate (CPU-bound, and one decoder at a time keeps peak memory to one image's).
 */
export async function prepareImages(
  sources: ImageSource[],
  config: Config,
  options: { orientation?: OrientationMode; signal?: AbortSignal } = {},
): Promise<PreparedImage[]> {
  const fetched = await Promise.all(
    sources.map(async (s): Promise<{ source: ImageSource; fetchMs: number }> => {
      if ("bytes" in s) return { source: s, fetchMs: 0 };
      const started = performance.now();
      const { bytes } = await fetchImage(s.url, { maxBytes: config.image.maxBytes, ...config.fetch, signal: options.signal });
      return { source: { bytes }, fetchMs: performance.now() - started };
    }),
  );
  const out: PreparedImage[] = [];
  for (const f of fetched) {
    const image = await prepareImage(f.source, config, options);
    image.timings.fetch = f.fetchMs;
    out.push(image);
  }
  return out;
}

/** `Server-Timing` entries for the image work of a request (summed over its images). */
export function imageServerTiming(images: PreparedImage[]): string[] {
  const sum = (k: keyof PreparedImage["timings"]) => images.reduce((n, i) => n + i.timings[k], 0).toFixed(1);
  return [`fetch;dur=${sum("fetch")}`, `decode;dur=${sum("decode")}`, `resize;dur=${sum("resize")}`, `normalize;dur=${sum("normalize")}`];
}
