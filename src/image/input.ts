/**
 * Image input from an HTTP request: a raw `image/*` (or octet-stream) body, or JSON
 * `{"image_url": "https://…" | "data:…"}`. Bodies are read under a byte cap counted while streaming.
 */
import { z } from "zod";
import { ApiError } from "../errors";
import { type FetchImageOptions, fetchImage, readCapped } from "./fetch";

export interface ImageInput {
  bytes: Uint8Array;
  source: "body" | "url" | "data";
  /** Milliseconds spent fetching a URL (0 for bodies and data URIs). */
  fetchMs: number;
}

const ImageUrlBody = z.object({ image_url: z.string().min(1).max(40_000_000) });

/** JSON bodies carry base64 data URIs: allow their 4/3 expansion plus some slack. */
const jsonCap = (maxBytes: number) => Math.ceil((maxBytes * 4) / 3) + 64 * 1024;

export async function readImageInput(request: Request, fetchOptions: FetchImageOptions & { maxBytes: number }): Promise<ImageInput> {
  const type = (request.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  if (type === "application/json") {
    const text = new TextDecoder().decode(await readBodyCapped(request, jsonCap(fetchOptions.maxBytes)));
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new ApiError("invalid_request", "The request body is not valid JSON.");
    }
    const parsed = ImageUrlBody.safeParse(json);
    if (!parsed.success) throw new ApiError("missing_image", 'Send {"image_url": "https://…" or "data:…"}.', { param: "image_url" });
    const started = performance.now();
    const fetched = await fetchImage(parsed.data.image_url, fetchOptions);
    return { bytes: fetched.bytes, source: fetched.source, fetchMs: fetched.source === "url" ? performance.now() - started : 0 };
  }
  if (type === "" || type === "application/octet-stream" || type.startsWith("image/")) {
    const bytes = await readBodyCapped(request, fetchOptions.maxBytes);
    if (bytes.length === 0) throw new ApiError("missing_image", "The request body is empty: send the image bytes.", { param: "image" });
    return { bytes, source: "body", fetchMs: 0 };
  }
  throw new ApiError(
    "unsupported_media_type",
    `Content-Type ${type} is not accepted: send image/*, application/octet-stream or application/json.`,
  );
}

/** Reads a request body, refusing (413) as soon as it exceeds `maxBytes`; Content-Length is only a hint. */
export async function readBodyCapped(request: Request, maxBytes: number): Promise<Uint8Array> {
  const tooLarge = () => new ApiError("image_too_large", `The request body exceeds ${maxBytes} bytes.`, { param: "image" });
  if (Number(request.headers.get("content-length") ?? Number.NaN) > maxBytes) throw tooLarge();
  if (!request.body) return new Uint8Array(0);
  try {
    return await readCapped(request.body, maxBytes, undefined, tooLarge);
  } catch (err) {
    if (err instanceof ApiError) throw err;
    // The client's connection failed mid-upload (workerd: "Network connection lost."): its request, not our fault.
    throw new ApiError("invalid_request", "The request body could not be read: the connection was lost before it ended.");
  }
}
