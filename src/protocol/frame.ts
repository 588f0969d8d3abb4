/**
 * The request frame: `u32 big-endian header length | JSON header | tensor bytes`.
 * Decoding validates everything before any work is done: sizes, JSON, schema, that each image's bytes
 * lie inside the tensor section without overlapping, and (optionally) their sha256.
 */
import { GenerateHeader, type GenerateHeaderInput, PROTOCOL_LIMITS, PROTOCOL_VERSION } from "./schema";

export type FrameErrorCode =
  | "frame_truncated"
  | "frame_too_large"
  | "header_too_large"
  | "header_invalid_json"
  | "header_invalid"
  | "unsupported_version"
  | "image_out_of_bounds"
  | "image_overlap"
  | "image_checksum_mismatch"
  | "trailing_bytes";

export class FrameError extends Error {
  constructor(
    readonly code: FrameErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "FrameError";
  }
}

export interface DecodedFrame {
  header: GenerateHeader;
  /** One view per header image, into the frame's bytes. */
  images: Uint8Array[];
}

export interface FrameLimits {
  maxFrameBytes: number;
  maxHeaderBytes: number;
}

export const DEFAULT_FRAME_LIMITS: FrameLimits = {
  maxFrameBytes: 4 + PROTOCOL_LIMITS.maxHeaderBytes + PROTOCOL_LIMITS.maxImages * 3 * 448 * 448 * 2,
  maxHeaderBytes: PROTOCOL_LIMITS.maxHeaderBytes,
};

/** Builds a frame; image offsets, lengths and order come from `header.images`, which must match `tensors`. */
export function encodeFrame(header: GenerateHeaderInput, tensors: Uint8Array[]): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  if (json.length > PROTOCOL_LIMITS.maxHeaderBytes) throw new FrameError("header_too_large", `header is ${json.length} bytes`);
  const body = tensors.reduce((n, t) => n + t.byteLength, 0);
  const out = new Uint8Array(4 + json.length + body);
  new DataView(out.buffer).setUint32(0, json.length);
  out.set(json, 4);
  let offset = 4 + json.length;
  for (const t of tensors) {
    out.set(t, offset);
    offset += t.byteLength;
  }
  return out;
}

/** Lays out tensors back to back and returns the descriptors to put in the header. */
export async function describeTensors(
  tensors: Array<{ dtype: "f16" | "u8"; bytes: Uint8Array; sha256?: string }>,
): Promise<GenerateHeaderInput["images"]> {
  let offset = 0;
  const out: GenerateHeaderInput["images"] = [];
  for (const t of tensors) {
    out.push({
      dtype: t.dtype,
      shape: t.dtype === "f16" ? [3, 448, 448] : [448, 448, 3],
      offset,
      length: t.bytes.byteLength,
      sha256: t.sha256 ?? (await sha256Hex(t.bytes)),
    });
    offset += t.bytes.byteLength;
  }
  return out;
}

export async function decodeFrame(
  frame: Uint8Array,
  options: Partial<FrameLimits> & { verifyChecksums?: boolean } = {},
): Promise<DecodedFrame> {
  const limits = { ...DEFAULT_FRAME_LIMITS, ...options };
  if (frame.byteLength > limits.maxFrameBytes)
    throw new FrameError("frame_too_large", `frame is ${frame.byteLength} bytes; the limit is ${limits.maxFrameBytes}`);
  if (frame.byteLength < 4) throw new FrameError("frame_truncated", "frame is shorter than its 4-byte header length");
  const headerLength = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(0);
  if (headerLength > limits.maxHeaderBytes)
    throw new FrameError("header_too_large", `header is ${headerLength} bytes; the limit is ${limits.maxHeaderBytes}`);
  if (4 + headerLength > frame.byteLength) throw new FrameError("frame_truncated", "frame ends inside its JSON header");
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(frame.subarray(4, 4 + headerLength)));
  } catch {
    throw new FrameError("header_invalid_json", "header is not valid UTF-8 JSON");
  }
  if (typeof json === "object" && json !== null && "version" in json && json.version !== PROTOCOL_VERSION) {
    throw new FrameError(
      "unsupported_version",
      `protocol version ${String(json.version)} is not supported (this side speaks ${PROTOCOL_VERSION})`,
    );
  }
  const parsed = GenerateHeader.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new FrameError("header_invalid", `header.${issue.path.join(".")}: ${issue.message}`);
  }
  const header = parsed.data;
  const tensorSection = frame.subarray(4 + headerLength);
  const spans = header.images.map((img, i) => ({ i, start: img.offset, end: img.offset + img.length })).sort((a, b) => a.start - b.start);
  let cursor = 0;
  for (const span of spans) {
    if (span.end > tensorSection.byteLength) throw new FrameError("image_out_of_bounds", `image ${span.i} ends past the frame`);
    if (span.start < cursor) throw new FrameError("image_overlap", `image ${span.i} overlaps another image`);
    cursor = span.end;
  }
  if (cursor !== tensorSection.byteLength)
    throw new FrameError("trailing_bytes", `${tensorSection.byteLength - cursor} bytes follow the last image`);
  const images = header.images.map((img) => tensorSection.subarray(img.offset, img.offset + img.length));
  if (options.verifyChecksums ?? true) {
    for (const [i, img] of header.images.entries()) {
      if ((await sha256Hex(images[i])) !== img.sha256)
        throw new FrameError("image_checksum_mismatch", `image ${i}'s bytes do not match its sha256`);
    }
  }
  return { header, images };
}

export async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
