/**
 * Probe: width, height and EXIF orientation read from the header, before any decoding, so that
 * decompression bombs are refused from a few bytes (413) and headers that make no sense are refused
 * as undecodable (422).
 */
import { ApiError } from "../errors";
import { type Orientation, readExifOrientation } from "./exif";
import type { ImageFormat } from "./sniff";

export interface ImageLimits {
  /** Largest accepted encoded size, in bytes. */
  maxBytes: number;
  /** Largest accepted width × height of the decoded image. */
  maxPixels: number;
}

export const DEFAULT_IMAGE_LIMITS: ImageLimits = { maxBytes: 20_000_000, maxPixels: 50_000_000 };

export interface ImageInfo {
  format: ImageFormat;
  width: number;
  height: number;
  /** EXIF orientation (1 when absent or unreadable). */
  orientation: Orientation;
  /** JPEG only: progressive (needs libjpeg's whole-image coefficient buffer). */
  progressive?: boolean;
  /** JPEG only: number of components (1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK). */
  components?: number;
  /** PNG only: IHDR bit depth and colour type. */
  bitDepth?: number;
  colorType?: number;
  interlaced?: boolean;
}

const decodeFailed = (message: string) => new ApiError("image_decode_failed", message, { param: "image" });

export function probeImage(bytes: Uint8Array, format: ImageFormat, limits: ImageLimits = DEFAULT_IMAGE_LIMITS): ImageInfo {
  if (bytes.length > limits.maxBytes) {
    throw new ApiError("image_too_large", `The image is ${bytes.length} bytes; the limit is ${limits.maxBytes} bytes.`, {
      param: "image",
    });
  }
  const info = PROBES[format](bytes);
  if (info.width < 1 || info.height < 1) throw decodeFailed(`The ${format.toUpperCase()} header declares an empty image.`);
  if (info.width * info.height > limits.maxPixels) {
    throw new ApiError(
      "image_too_large",
      `The image is ${info.width}×${info.height} pixels (${info.width * info.height}); the limit is ${limits.maxPixels} pixels.`,
      { param: "image" },
    );
  }
  return info;
}

const PROBES: Record<ImageFormat, (bytes: Uint8Array) => ImageInfo> = {
  jpeg: probeJpeg,
  png: probePng,
  webp: probeWebp,
  gif: probeGif,
};

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const ascii = (b: Uint8Array, at: number, n: number) => String.fromCharCode(...b.subarray(at, at + n));

// --- JPEG: walk the marker segments up to the first SOFn; note APP1 Exif on the way. -------------

const SOF_MARKERS = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);
const PROGRESSIVE_SOF = new Set([0xc2, 0xc6, 0xca, 0xce]);

function probeJpeg(b: Uint8Array): ImageInfo {
  const v = view(b);
  let orientation: Orientation = 1;
  let exifSeen = false;
  let pos = 2;
  while (pos + 4 <= b.length) {
    if (b[pos] !== 0xff) throw decodeFailed("The JPEG header is corrupt (expected a marker).");
    const marker = b[pos + 1];
    if (marker === 0xff) {
      pos += 1; // fill byte
      continue;
    }
    // Standalone markers carry no length.
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      pos += 2;
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) break; // EOI or SOS before any SOF
    const length = v.getUint16(pos + 2);
    if (length < 2 || pos + 2 + length > b.length) throw decodeFailed("The JPEG header is truncated or corrupt.");
    const body = b.subarray(pos + 4, pos + 2 + length);
    if (marker === 0xe1 && !exifSeen && body.length >= 6 && ascii(body, 0, 6) === "Exif\0\0") {
      exifSeen = true; // Pillow reads the first Exif APP1 only
      orientation = readExifOrientation(body.subarray(6));
    }
    if (SOF_MARKERS.has(marker)) {
      if (body.length < 6) throw decodeFailed("The JPEG frame header is truncated.");
      const bv = view(body);
      const components = body[5];
      if (components !== 1 && components !== 3 && components !== 4) {
        throw decodeFailed(`The JPEG has ${components} colour components; 1, 3 or 4 are supported.`);
      }
      if (marker !== 0xc0 && marker !== 0xc1 && marker !== 0xc2) {
        throw decodeFailed("The JPEG uses lossless or arithmetic coding, which is not supported.");
      }
      return {
        format: "jpeg",
        height: bv.getUint16(1),
        width: bv.getUint16(3),
        orientation,
        progressive: PROGRESSIVE_SOF.has(marker),
        components,
      };
    }
    pos += 2 + length;
  }
  throw decodeFailed("The JPEG has no frame header (SOF) before its data: truncated or corrupt.");
}

// --- PNG: IHDR must be the first chunk; eXIf may follow before IDAT. -------------------------------

const PNG_DEPTHS: Record<number, number[]> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };

function probePng(b: Uint8Array): ImageInfo {
  if (b.length < 33) throw decodeFailed("The PNG is truncated before its header.");
  const v = view(b);
  if (v.getUint32(8) !== 13 || ascii(b, 12, 4) !== "IHDR") throw decodeFailed("The PNG does not start with an IHDR chunk.");
  if (crc32(b.subarray(12, 29)) !== v.getUint32(29)) throw decodeFailed("The PNG header chunk fails its CRC check.");
  const width = v.getUint32(16);
  const height = v.getUint32(20);
  const bitDepth = b[24];
  const colorType = b[25];
  if (!PNG_DEPTHS[colorType]?.includes(bitDepth)) {
    throw decodeFailed(`The PNG declares an invalid colour type ${colorType} with bit depth ${bitDepth}.`);
  }
  if (width > 0x7fffffff || height > 0x7fffffff) throw decodeFailed("The PNG declares an invalid size.");
  // Walk the chunks by length: check each chunk's type and, except for image data (which the decoder
  // checks as it inflates), its CRC, as Pillow does; pick up eXIf on the way.
  let orientation: Orientation = 1;
  for (let pos = 33; pos + 12 <= b.length; ) {
    const length = v.getUint32(pos);
    if (!/^[A-Za-z]{4}$/.test(ascii(b, pos + 4, 4))) throw decodeFailed("The PNG has a corrupt chunk.");
    const type = ascii(b, pos + 4, 4);
    if (pos + 12 + length > b.length) break; // truncated: the decoder reports it
    if (type !== "IDAT" && crc32(b.subarray(pos + 4, pos + 8 + length)) !== v.getUint32(pos + 8 + length)) {
      throw decodeFailed(`The PNG's ${type} chunk fails its CRC check.`);
    }
    if (type === "eXIf") orientation = readExifOrientation(b.subarray(pos + 8, pos + 8 + length));
    if (type === "IEND") break;
    pos += 12 + length;
  }
  return { format: "png", width, height, orientation, bitDepth, colorType, interlaced: b[28] === 1 };
}

// --- WebP: VP8 (lossy), VP8L (lossless) or VP8X (extended, with an optional EXIF chunk). ----------

function probeWebp(b: Uint8Array): ImageInfo {
  if (b.length < 30) throw decodeFailed("The WebP is truncated before its header.");
  const v = view(b);
  const chunk = ascii(b, 12, 4);
  const data = 20;
  if (chunk === "VP8 ") {
    if (b[data + 3] !== 0x9d || b[data + 4] !== 0x01 || b[data + 5] !== 0x2a) throw decodeFailed("The WebP (VP8) frame header is corrupt.");
    return {
      format: "webp",
      width: v.getUint16(data + 6, true) & 0x3fff,
      height: v.getUint16(data + 8, true) & 0x3fff,
      orientation: 1,
    };
  }
  if (chunk === "VP8L") {
    if (b[data] !== 0x2f) throw decodeFailed("The WebP (VP8L) header is corrupt.");
    const bits = v.getUint32(data + 1, true);
    return { format: "webp", width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, orientation: 1 };
  }
  if (chunk === "VP8X") {
    const flags = b[data];
    const width = (b[data + 4] | (b[data + 5] << 8) | (b[data + 6] << 16)) + 1;
    const height = (b[data + 7] | (b[data + 8] << 8) | (b[data + 9] << 16)) + 1;
    let orientation: Orientation = 1;
    if (flags & 0x08) {
      for (let pos = 12; pos + 8 <= b.length; ) {
        const size = v.getUint32(pos + 4, true);
        if (ascii(b, pos, 4) === "EXIF" && pos + 8 + size <= b.length) {
          let exif = b.subarray(pos + 8, pos + 8 + size);
          if (exif.length >= 6 && ascii(exif, 0, 6) === "Exif\0\0") exif = exif.subarray(6);
          orientation = readExifOrientation(exif);
          break;
        }
        pos += 8 + size + (size & 1);
      }
    }
    return { format: "webp", width, height, orientation };
  }
  throw decodeFailed(`The WebP has an unknown first chunk "${chunk.replace(/[^\x20-\x7e]/g, "?")}".`);
}

// --- GIF: the logical screen descriptor (Pillow's image size). ------------------------------------

function probeGif(b: Uint8Array): ImageInfo {
  if (b.length < 13) throw decodeFailed("The GIF is truncated before its header.");
  const v = view(b);
  return { format: "gif", width: v.getUint16(6, true), height: v.getUint16(8, true), orientation: 1 };
}

// --- CRC-32 (PNG chunks) -----------------------------------------------------------------------------

let crcTable: Uint32Array | undefined;

export function crc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
