/**
 * Tensors in R2 (binding `TENSOR_CACHE`), keyed by what determines them and nothing else:
 *
 *   tensors/<PREPROCESS_VERSION>/<orientation mode>/<quality>/<sha256 of the source bytes>
 *
 * `quality` is `exact` or `fast` (a JPEG decoded at a DCT scale: a different tensor), so a fast tensor
 * never answers an exact request nor the reverse. The object is the f16 tensor (3×448×448, 1.2 MB); its
 * custom metadata holds the tensor's sha256, the image's size as the user sees it and the DCT scale it
 * was decoded at. A per-isolate map keeps that metadata for recent sources, so a
 * request whose answer is cached needs neither the tensor nor an R2 call. R2 rather than the Cache API:
 * it is one store for every colo (a popular image is decoded once, not once per colo) and it works on
 * workers.dev hosts, where the Cache API does nothing. Expiry is the bucket's lifecycle rule (README).
 */
import { PREPROCESS_VERSION } from "../image/pipeline";

export interface TensorMeta {
  /** sha256 of the f16 tensor bytes. */
  sha256: string;
  width: number;
  height: number;
  /** The JPEG DCT scale it was decoded at (1: full size; 2, 4 or 8 in fast mode). */
  dctScale: number;
}

interface Known extends TensorMeta {
  /** When the object was written (epoch ms). */
  at: number;
}

const META_MAX = 4_096;
const meta = new Map<string, Known>();

export function tensorCacheKey(sourceSha: string, orientation: string, quality: string): string {
  return `tensors/${PREPROCESS_VERSION}/${orientation}/${quality}/${sourceSha}`;
}

function remember(key: string, value: Known): void {
  meta.delete(key);
  if (meta.size >= META_MAX) meta.delete(meta.keys().next().value as string);
  meta.set(key, value);
}

function parseMeta(m: Record<string, string> | undefined): TensorMeta | null {
  if (!m || !/^[0-9a-f]{64}$/.test(m.sha256 ?? "")) return null;
  const width = Number(m.width);
  const height = Number(m.height);
  if (!(Number.isInteger(width) && width > 0 && Number.isInteger(height) && height > 0)) return null;
  const dctScale = Number(m.dct_scale ?? "1");
  if (![1, 2, 4, 8].includes(dctScale)) return null;
  return { sha256: m.sha256, width, height, dctScale };
}

/** The tensor's metadata when it is cached and younger than `maxAgeS` (this isolate's map first, then an R2 HEAD). */
export async function findTensor(bucket: R2Bucket | undefined, key: string, maxAgeS: number): Promise<TensorMeta | null> {
  if (!bucket || maxAgeS <= 0) return null;
  const fresh = (at: number) => Date.now() - at < maxAgeS * 1000;
  const hit = meta.get(key);
  if (hit && fresh(hit.at)) return hit;
  const head = await bucket.head(key);
  const found = parseMeta(head?.customMetadata);
  if (!head || !found || !fresh(head.uploaded.getTime())) return null;
  remember(key, { ...found, at: head.uploaded.getTime() });
  return found;
}

/** The tensor bytes, or null when the object is gone or not what its metadata says. */
export async function loadTensor(
  bucket: R2Bucket | undefined,
  key: string,
  expect: TensorMeta,
  expectBytes: number,
): Promise<Uint8Array | null> {
  if (!bucket) return null;
  const object = await bucket.get(key);
  if (!object) {
    meta.delete(key);
    return null;
  }
  const bytes = new Uint8Array(await object.arrayBuffer());
  if (bytes.byteLength !== expectBytes || object.customMetadata?.sha256 !== expect.sha256) return null;
  return bytes;
}

export async function storeTensor(bucket: R2Bucket | undefined, key: string, tensor: Uint8Array, value: TensorMeta): Promise<void> {
  if (!bucket) return;
  remember(key, { ...value, at: Date.now() });
  await bucket.put(key, tensor as Uint8Array<ArrayBuffer>, {
    httpMetadata: { contentType: "application/octet-stream" },
    customMetadata: {
      sha256: value.sha256,
      width: String(value.width),
      height: String(value.height),
      dct_scale: String(value.dctScale),
      version: PREPROCESS_VERSION,
    },
  });
}
