/**
 * GIF, first frame, as Pillow 9.4 loads it: mode P over the logical screen, pixels outside the first
 * frame's rectangle set to the transparency index (else 0), then `convert("RGB")` through the frame's
 * palette (local, else global; missing entries black). A GIF without any palette is mode L.
 */
import { decompressFrame, parseGIF } from "gifuct-js";
import { ApiError } from "../../errors";
import type { RgbPixels } from "../pixels";
import type { ImageInfo } from "../probe";

type Rgb = [number, number, number];

export function decodeGif(bytes: Uint8Array, info: ImageInfo, maxPixels: number): RgbPixels {
  const fail = (why: string, cause?: unknown) =>
    new ApiError("image_decode_failed", `The GIF could not be decoded: ${why}.`, { param: "image", cause });
  let gif: ReturnType<typeof parseGIF>;
  try {
    gif = parseGIF(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
  } catch (err) {
    throw fail("corrupt data", err);
  }
  const frame = gif.frames.find((f) => "image" in f);
  if (!frame || !("image" in frame)) throw fail("it has no image");
  const d = frame.image.descriptor;
  if (d.width * d.height > maxPixels) {
    throw new ApiError("image_too_large", `The GIF's first frame is ${d.width}×${d.height} pixels; the limit is ${maxPixels} pixels.`, {
      param: "image",
    });
  }
  let decoded: { pixels: number[]; colorTable: Rgb[] };
  try {
    decoded = decompressFrame(frame, gif.gct, false) as unknown as { pixels: number[]; colorTable: Rgb[] };
  } catch (err) {
    throw fail("corrupt image data", err);
  }
  const hasPalette = d.lct.exists || gif.lsd.gct.exists;
  const transparent = "gce" in frame && frame.gce.extras.transparentColorGiven ? frame.gce.transparentColorIndex : 0;
  const { width, height } = info;
  const indices = new Uint8Array(width * height).fill(transparent);
  for (let y = 0; y < d.height; y++) {
    const ty = d.top + y;
    if (ty >= height) break;
    for (let x = 0; x < d.width; x++) {
      const tx = d.left + x;
      if (tx >= width) break;
      indices[ty * width + tx] = decoded.pixels[y * d.width + x] ?? 0;
    }
  }
  if (!hasPalette) return { width, height, data: indices, stride: 1, gray: true };
  const palette = decoded.colorTable ?? [];
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, o = 0; i < indices.length; i++, o += 3) {
    const c = palette[indices[i]];
    if (c) {
      rgb[o] = c[0];
      rgb[o + 1] = c[1];
      rgb[o + 2] = c[2];
    }
  }
  return { width, height, data: rgb, stride: 3, gray: false };
}
