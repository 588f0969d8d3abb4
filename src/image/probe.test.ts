import { describe, expect, it } from "vitest";
import { ApiError } from "../errors";
import { readExifOrientation } from "./exif";
import { crc32, probeImage } from "./probe";
import { detectImageFormat, sniffImageFormat } from "./sniff";

const be32 = (n: number) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
const ascii = (s: string) => Array.from(s, (c) => c.charCodeAt(0));

function pngHeader(width: number, height: number, depth = 8, colorType = 2, extra: number[] = []): Uint8Array {
  const ihdr = [...ascii("IHDR"), ...be32(width), ...be32(height), depth, colorType, 0, 0, 0];
  const crc = crc32(new Uint8Array(ihdr));
  return new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...be32(13), ...ihdr, ...be32(crc), ...extra]);
}

function chunk(type: string, data: number[]): number[] {
  const body = [...ascii(type), ...data];
  return [...be32(data.length), ...body, ...be32(crc32(new Uint8Array(body)))];
}

/** A TIFF block with IFD0 holding one Orientation entry. */
function tiff(orientation: number, little = true): number[] {
  const u16 = (n: number) => (little ? [n & 255, n >> 8] : [n >> 8, n & 255]);
  const u32 = (n: number) => (little ? [n & 255, (n >> 8) & 255, (n >> 16) & 255, n >>> 24] : be32(n));
  return [
    ...ascii(little ? "II" : "MM"),
    ...u16(42),
    ...u32(8),
    ...u16(1),
    ...u16(0x0112),
    ...u16(3),
    ...u32(1),
    ...u16(orientation),
    0,
    0,
    ...u32(0),
  ];
}

function jpeg(width: number, height: number, options: { sof?: number; exif?: number[]; components?: number } = {}): Uint8Array {
  const parts: number[] = [0xff, 0xd8];
  if (options.exif) {
    const body = [...ascii("Exif"), 0, 0, ...options.exif];
    parts.push(0xff, 0xe1, (body.length + 2) >> 8, (body.length + 2) & 255, ...body);
  }
  const n = options.components ?? 3;
  const sof = [8, height >> 8, height & 255, width >> 8, width & 255, n];
  for (let i = 0; i < n; i++) sof.push(i + 1, 0x11, 0);
  parts.push(0xff, options.sof ?? 0xc0, (sof.length + 2) >> 8, (sof.length + 2) & 255, ...sof, 0xff, 0xd9);
  return new Uint8Array(parts);
}

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return err instanceof ApiError ? `${err.status} ${err.code}` : `not an ApiError: ${err}`;
  }
  return undefined;
};

describe("sniff", () => {
  it("knows the four formats by their magic bytes only", () => {
    expect(detectImageFormat(jpeg(1, 1))).toBe("jpeg");
    expect(detectImageFormat(pngHeader(1, 1))).toBe("png");
    expect(detectImageFormat(new Uint8Array(ascii("GIF89a...")))).toBe("gif");
    expect(detectImageFormat(new Uint8Array(ascii("RIFF\0\0\0\0WEBPVP8 ")))).toBe("webp");
    expect(detectImageFormat(new Uint8Array(ascii("RIFF\0\0\0\0WAVEfmt ")))).toBeNull();
    expect(detectImageFormat(new Uint8Array(ascii("<svg xmlns=")))).toBeNull();
  });

  it("refuses others with 415 and empty input with 400", () => {
    expect(codeOf(() => sniffImageFormat(new Uint8Array(ascii("%PDF-1.7"))))).toBe("415 unsupported_image_format");
    expect(codeOf(() => sniffImageFormat(new Uint8Array(0)))).toBe("400 missing_image");
  });
});

describe("probe", () => {
  it("reads PNG IHDR and refuses a 30000² bomb from the header alone", () => {
    expect(probeImage(pngHeader(640, 480), "png")).toMatchObject({ width: 640, height: 480, bitDepth: 8, colorType: 2 });
    expect(codeOf(() => probeImage(pngHeader(30000, 30000), "png"))).toBe("413 image_too_large");
  });

  it("honours configured caps on bytes and pixels", () => {
    const limits = { maxBytes: 1_000_000, maxPixels: 100 * 100 };
    expect(codeOf(() => probeImage(pngHeader(101, 100), "png", limits))).toBe("413 image_too_large");
    expect(probeImage(pngHeader(100, 100), "png", limits).width).toBe(100);
    expect(codeOf(() => probeImage(pngHeader(10, 10), "png", { maxBytes: 20, maxPixels: 1e6 }))).toBe("413 image_too_large");
  });

  it("refuses PNG headers that lie or are corrupt with 422", () => {
    const bad = pngHeader(10, 10);
    bad[20] ^= 1; // height changed, CRC now wrong
    expect(codeOf(() => probeImage(bad, "png"))).toBe("422 image_decode_failed");
    expect(codeOf(() => probeImage(pngHeader(10, 10, 3, 2), "png"))).toBe("422 image_decode_failed"); // depth 3
    expect(codeOf(() => probeImage(pngHeader(0, 10), "png"))).toBe("422 image_decode_failed");
    const badChunk = pngHeader(10, 10, 8, 2, chunk("tEXt", ascii("a\0b")));
    badChunk[badChunk.length - 1] ^= 0xff;
    expect(codeOf(() => probeImage(badChunk, "png"))).toBe("422 image_decode_failed");
  });

  it("reads PNG eXIf orientation", () => {
    expect(probeImage(pngHeader(10, 20, 8, 2, chunk("eXIf", tiff(6))), "png").orientation).toBe(6);
  });

  it("reads JPEG SOF, progressive flag and EXIF orientation (both byte orders)", () => {
    expect(probeImage(jpeg(4032, 3024, { exif: tiff(6) }), "jpeg")).toMatchObject({
      width: 4032,
      height: 3024,
      orientation: 6,
      progressive: false,
      components: 3,
    });
    expect(probeImage(jpeg(100, 50, { sof: 0xc2, exif: tiff(8, false) }), "jpeg")).toMatchObject({ progressive: true, orientation: 8 });
    expect(codeOf(() => probeImage(jpeg(65500, 65500), "jpeg"))).toBe("413 image_too_large");
    expect(codeOf(() => probeImage(jpeg(10, 0), "jpeg"))).toBe("422 image_decode_failed");
    expect(codeOf(() => probeImage(jpeg(10, 10, { components: 2 }), "jpeg"))).toBe("422 image_decode_failed");
    expect(codeOf(() => probeImage(jpeg(10, 10, { sof: 0xc3 }), "jpeg"))).toBe("422 image_decode_failed"); // lossless
    expect(codeOf(() => probeImage(new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0x00]), "jpeg"))).toBe("422 image_decode_failed");
  });

  it("reads WebP VP8, VP8L and VP8X sizes", () => {
    const riff = (chunkType: string, data: number[]) =>
      new Uint8Array([
        ...ascii("RIFF"),
        0,
        0,
        0,
        0,
        ...ascii("WEBP"),
        ...ascii(chunkType),
        data.length,
        0,
        0,
        0,
        ...data,
        ...new Array(16).fill(0),
      ]);
    const vp8 = riff("VP8 ", [0, 0, 0, 0x9d, 0x01, 0x2a, 1224 & 255, 1224 >> 8, 816 & 255, 816 >> 8]);
    expect(probeImage(vp8, "webp")).toMatchObject({ width: 1224, height: 816 });
    const bits = (300 - 1) | ((200 - 1) << 14);
    const vp8l = riff("VP8L", [0x2f, bits & 255, (bits >> 8) & 255, (bits >> 16) & 255, bits >>> 24]);
    expect(probeImage(vp8l, "webp")).toMatchObject({ width: 300, height: 200 });
    const vp8x = riff("VP8X", [0, 0, 0, 0, 39999 & 255, (39999 >> 8) & 255, 0, 39999 & 255, (39999 >> 8) & 255, 0]);
    expect(codeOf(() => probeImage(vp8x, "webp"))).toBe("413 image_too_large");
  });

  it("reads the GIF logical screen", () => {
    const gif = new Uint8Array([...ascii("GIF89a"), 0x30, 0x75, 0x30, 0x75, 0, 0, 0]);
    expect(codeOf(() => probeImage(gif, "gif"))).toBe("413 image_too_large"); // 30000 × 30000
  });
});

describe("EXIF orientation", () => {
  it("returns 1 for garbage, out-of-range values and missing tags", () => {
    expect(readExifOrientation(new Uint8Array(tiff(9)))).toBe(1);
    expect(readExifOrientation(new Uint8Array(tiff(0)))).toBe(1);
    expect(readExifOrientation(new Uint8Array([1, 2, 3]))).toBe(1);
    const truncated = new Uint8Array(tiff(6)).subarray(0, 14);
    expect(readExifOrientation(truncated)).toBe(1);
    for (let o = 1; o <= 8; o++) expect(readExifOrientation(new Uint8Array(tiff(o)))).toBe(o);
  });
});
