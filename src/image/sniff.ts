/**
 * Sniff: the image format from its magic bytes. Content-Type headers and file names are never trusted.
 */
import { ApiError } from "../errors";

export type ImageFormat = "jpeg" | "png" | "webp" | "gif";

const startsWith = (bytes: Uint8Array, sig: readonly number[], at = 0): boolean =>
  bytes.length >= at + sig.length && sig.every((b, i) => bytes[at + i] === b);

const ascii = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));

const JPEG = [0xff, 0xd8, 0xff];
const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const GIF87 = ascii("GIF87a");
const GIF89 = ascii("GIF89a");
const RIFF = ascii("RIFF");
const WEBP = ascii("WEBP");

/** Returns the format, or null when the bytes are none of the four we decode. */
export function detectImageFormat(bytes: Uint8Array): ImageFormat | null {
  if (startsWith(bytes, JPEG)) return "jpeg";
  if (startsWith(bytes, PNG)) return "png";
  if (startsWith(bytes, GIF87) || startsWith(bytes, GIF89)) return "gif";
  if (startsWith(bytes, RIFF) && startsWith(bytes, WEBP, 8)) return "webp";
  return null;
}

/** Like detectImageFormat, but refuses anything else with 415 unsupported_image_format. */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat {
  if (bytes.length === 0) throw new ApiError("missing_image", "The image is empty (0 bytes).", { param: "image" });
  const format = detectImageFormat(bytes);
  if (format === null) {
    throw new ApiError(
      "unsupported_image_format",
      "Unsupported image format: expected JPEG, PNG, WebP or GIF (detected from the file's first bytes).",
      { param: "image" },
    );
  }
  return format;
}
