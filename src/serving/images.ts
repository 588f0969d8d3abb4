/**
 * Images for generation: each source (URL, data URI, or bytes already read) becomes the f16 tensor the
 * model sees, through the caches (src/cache/):
 *
 *   URL ──▶ source cache (Cache API, by URL, as long as the origin allows) ──▶ bytes, sha256
 *   bytes ──▶ tensor cache (R2, by sha256 of the bytes + PREPROCESS_VERSION + orientation mode + quality)
 *         ──▶ miss: fetch-safe bytes → decode → orient → resize → normalize (and store)
 *
 * `quality` is `exact` (Pillow-identical) or `fast` (JPEGs decoded at a DCT scale first): the request's
 * own, else its API key's default, else `exact` (`imageQuality`).
 *
 * What comes back is the tensor's identity (sha256) and the image's size as the user sees it (for
 * mapping boxes back to pixels); the tensor bytes are loaded only when a GPU needs them (`tensor()`), so
 * an answer from the result cache costs neither an R2 read nor a decode. Identical images preprocessed
 * at the same time in one isolate are preprocessed once.
 */
import type { Context } from "hono";
import { type CachePolicy, requestCachePolicy } from "../cache/policy";
import { cachedSourceBytes, cachedSourceSha, recordingFetch, sha256Hex, storeSource } from "../cache/source";
import { findTensor, loadTensor, storeTensor, type TensorMeta, tensorCacheKey } from "../cache/tensors";
import type { Config } from "../config";
import type { AppEnv, Env } from "../env";
import { getCodecs } from "../image/codecs/worker";
import { fetchImage } from "../image/fetch";
import type { OrientationMode } from "../image/orient";
import { preprocessImage } from "../image/pipeline";
import { DEFAULT_QUALITY, type ImageQuality } from "../keys/keys";
import { waitUntil } from "../middleware/rate-limit";
import { tensorBytes } from "../protocol/index";

export type ImageSource = { url: string } | { bytes: Uint8Array };

export type SourceCacheStatus = "hit" | "miss" | "bypass" | "none";
export type TensorCacheStatus = "hit" | "miss" | "bypass" | "coalesced";

export interface PreparedImage {
  /** sha256 of the f16 tensor. */
  sha256: string;
  width: number;
  height: number;
  /** How it was preprocessed, and the JPEG DCT scale it was decoded at (1: full size). */
  quality: ImageQuality;
  dctScale: number;
  /** `lookup`: time spent asking the source and tensor caches. */
  timings: { fetch: number; lookup: number; decode: number; resize: number; normalize: number };
  cache: { source: SourceCacheStatus; tensor: TensorCacheStatus };
  /** The tensor bytes: from memory, the tensor cache, or preprocessed again if the cache lost them. */
  tensor(): Promise<Uint8Array>;
}

export interface ImageContext {
  env: Env;
  config: Config;
  policy: CachePolicy;
  signal?: AbortSignal;
  waitUntil: (promise: Promise<unknown>) => void;
  /** Resolves once the request is admitted by its rate limiter (awaited before an origin fetch or a decode). */
  admitted?: () => Promise<void>;
  /** Runs CPU-bound preprocessing one at a time (several images of one request). */
  serialize?: <T>(work: () => Promise<T>) => Promise<T>;
}

/** The image quality of a request: what it asked for, else its API key's default, else `exact`. */
export function imageQuality(c: Context<AppEnv>, requested: ImageQuality | undefined): ImageQuality {
  return requested ?? c.get("principal")?.quality ?? DEFAULT_QUALITY;
}

export function imageContext(c: Context<AppEnv>, policy: CachePolicy = requestCachePolicy(c.req.raw.headers)): ImageContext {
  return {
    env: c.env,
    config: c.get("config"),
    policy,
    signal: c.req.raw.signal,
    waitUntil: (p) => waitUntil(c, p),
    admitted: c.get("admitted"),
  };
}

interface Computed {
  tensor: Uint8Array;
  meta: TensorMeta;
  timings: { decode: number; resize: number; normalize: number };
}

type Found = { cached: TensorMeta } | { computed: Computed };

const F16_BYTES = tensorBytes("f16");
const preprocessing = new Map<string, Promise<Found>>();

/** A cache that fails is a miss, never a failed request. */
async function tolerant<T>(promise: Promise<T>, fallback: T): Promise<T> {
  try {
    return await promise;
  } catch {
    return fallback;
  }
}

export async function prepareImage(
  source: ImageSource,
  ctx: ImageContext,
  orientation: OrientationMode = "apply",
  quality: ImageQuality = DEFAULT_QUALITY,
): Promise<PreparedImage> {
  const { config, policy } = ctx;
  const fetchOptions = { maxBytes: config.image.maxBytes, ...config.fetch, signal: ctx.signal };

  // 1. The source bytes, or at least their sha256.
  let bytes: Uint8Array | null = null;
  let sourceSha: string;
  let sourceStatus: SourceCacheStatus = "none";
  let fetchMs = 0;
  let lookupMs = 0;
  let getBytes: () => Promise<Uint8Array>;
  if ("bytes" in source || /^data:/i.test(source.url)) {
    bytes = "bytes" in source ? source.bytes : (await fetchImage(source.url, fetchOptions)).bytes;
    sourceSha = await sha256Hex(bytes);
    const b = bytes;
    getBytes = async () => b;
  } else {
    const url = source.url;
    const fetchFresh = async (): Promise<Uint8Array> => {
      await ctx.admitted?.();
      const recorder = recordingFetch();
      const started = performance.now();
      const fetched = await fetchImage(url, { ...fetchOptions, fetch: recorder.fetch });
      fetchMs += performance.now() - started;
      const sha = await sha256Hex(fetched.bytes);
      if (policy.write && config.cache.sourceMaxTtlS > 0 && fetched.source === "url") {
        ctx.waitUntil(storeSource(url, fetched.bytes, sha, recorder.headers(), config.cache.sourceMaxTtlS));
      }
      return fetched.bytes;
    };
    const asked = performance.now();
    const cachedSha = config.cache.sourceMaxTtlS > 0 ? await tolerant(cachedSourceSha(url, policy), null) : null;
    lookupMs += performance.now() - asked;
    if (cachedSha) {
      sourceSha = cachedSha;
      sourceStatus = "hit";
      getBytes = async () => (await tolerant(cachedSourceBytes(url, cachedSha), null)) ?? fetchFresh();
    } else {
      bytes = await fetchFresh();
      sourceSha = await sha256Hex(bytes);
      sourceStatus = policy.read ? "miss" : "bypass";
      const b = bytes;
      getBytes = async () => b;
    }
  }

  // 2. The tensor: cached, being computed by an identical request, or computed here.
  const bucket = ctx.env.TENSOR_CACHE;
  const key = tensorCacheKey(sourceSha, orientation, quality);
  // Callers have awaited the request's admission (a decode costs).
  const compute = async (): Promise<Computed> => {
    const input = await getBytes();
    const run = () => preprocessImage(input, getCodecs(), { format: "f16", orientation, quality, limits: config.image });
    const result = await (ctx.serialize ? ctx.serialize(run) : run());
    const meta: TensorMeta = { sha256: result.sha256, width: result.width, height: result.height, dctScale: result.dctScale };
    if (policy.write && config.cache.tensorMaxAgeS > 0) ctx.waitUntil(storeTensor(bucket, key, result.tensor, meta));
    return {
      tensor: result.tensor,
      meta,
      timings: { decode: result.timingMs.decode, resize: result.timingMs.resize, normalize: result.timingMs.normalize },
    };
  };
  const finish = (computed: Computed, status: TensorCacheStatus): PreparedImage => ({
    ...computed.meta,
    quality,
    timings: {
      fetch: fetchMs,
      lookup: lookupMs,
      ...(status === "miss" || status === "bypass" ? computed.timings : { decode: 0, resize: 0, normalize: 0 }),
    },
    cache: { source: sourceStatus, tensor: status },
    tensor: async () => computed.tensor,
  });

  if (!policy.read) {
    await ctx.admitted?.();
    return finish(await compute(), "bypass");
  }
  const fromCache = (cached: TensorMeta): PreparedImage => ({
    ...cached,
    quality,
    timings: { fetch: fetchMs, lookup: lookupMs, decode: 0, resize: 0, normalize: 0 },
    cache: { source: sourceStatus, tensor: "hit" },
    tensor: async () => (await tolerant(loadTensor(bucket, key, cached, F16_BYTES), null)) ?? (await compute()).tensor,
  });
  const join = async (pending: Promise<Found>) => {
    const found = await pending;
    return "cached" in found ? fromCache(found.cached) : finish(found.computed, "coalesced");
  };
  const early = preprocessing.get(key);
  if (early) return join(early);
  // Our own lookup travels alongside the rate limiter's decision; a decode waits for that decision.
  const asked = performance.now();
  const cached = await tolerant(findTensor(bucket, key, config.cache.tensorMaxAgeS), null);
  lookupMs += performance.now() - asked;
  if (cached) return fromCache(cached);
  await ctx.admitted?.();
  // One decode per key in this isolate: identical images arriving together join the first one's. The
  // unit looks again first (this isolate's map knows at once about a decode that has just finished).
  const pending = preprocessing.get(key);
  if (pending) return join(pending);
  const started = (async (): Promise<Found> => {
    const again = await tolerant(findTensor(bucket, key, config.cache.tensorMaxAgeS), null);
    return again ? { cached: again } : { computed: await compute() };
  })();
  preprocessing.set(key, started);
  const drop = () => {
    if (preprocessing.get(key) === started) preprocessing.delete(key);
  };
  started.then(drop, drop);
  const found = await started;
  return "cached" in found ? fromCache(found.cached) : finish(found.computed, "miss");
}

/**
 * Several images: fetched and identified concurrently (network-bound), preprocessed one after another
 * inside the isolate (CPU-bound, and one decoder at a time keeps peak memory to one image's).
 */
export async function prepareImages(
  sources: ImageSource[],
  ctx: ImageContext,
  orientation: OrientationMode = "apply",
  quality: ImageQuality = DEFAULT_QUALITY,
): Promise<PreparedImage[]> {
  let tail: Promise<unknown> = Promise.resolve();
  const serialize = <T>(work: () => Promise<T>): Promise<T> => {
    const run = tail.then(work, work);
    tail = run.catch(() => {});
    return run;
  };
  return Promise.all(sources.map((s) => prepareImage(s, { ...ctx, serialize }, orientation, quality)));
}

/** `Server-Timing` entries for the image work of a request (summed over its images). */
export function imageServerTiming(images: PreparedImage[]): string[] {
  const sum = (k: keyof PreparedImage["timings"]) => images.reduce((n, i) => n + i.timings[k], 0).toFixed(1);
  return [
    `fetch;dur=${sum("fetch")}`,
    `lookup;dur=${sum("lookup")}`,
    `decode;dur=${sum("decode")}`,
    `resize;dur=${sum("resize")}`,
    `normalize;dur=${sum("normalize")}`,
  ];
}

/** `x-cache-detail` parts for the image layers: `source=hit,miss; tensor=hit,hit` (one entry per image). */
export function imageCacheDetail(images: PreparedImage[]): string[] {
  if (images.length === 0) return [];
  return [`source=${images.map((i) => i.cache.source).join(",")}`, `tensor=${images.map((i) => i.cache.tensor).join(",")}`];
}

/**
 * `x-image-quality` (the request's quality) and `x-image-dct-scale` (the JPEG DCT scale each image was
 * decoded at: 1 is full size; only `fast` goes below it, and only for JPEGs large enough).
 */
export function imageQualityHeaders(quality: ImageQuality, images: PreparedImage[]): Record<string, string> {
  return {
    "x-image-quality": quality,
    ...(images.length ? { "x-image-dct-scale": images.map((i) => String(i.dctScale)).join(",") } : {}),
  };
}
