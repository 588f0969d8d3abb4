/**
 * A 48 MP JPEG for memory tests and benchmarks, made from a fixture photo (the repository keeps no
 * multi-MB generated file): `exif_rot6_4032x3024.jpg`'s stored pixels upscaled 2× per side to 8064×6048
 * with libvips (sharp), written as a baseline 4:2:0 JPEG at quality 90, no EXIF; or the same pixels as a
 * progressive JPEG, whose whole-image coefficient buffer (≈ 140 MiB) cannot fit the decoder's 64 MiB cap.
 * sharp is pinned, so the bytes are the same on every run with the same sharp build.
 */
import { fileURLToPath } from "node:url";
import sharp from "sharp";

export const BIG_PHOTO = {
  name: "photo_48mp_baseline.jpg",
  progressiveName: "photo_48mp_progressive.jpg",
  source: "exif_rot6_4032x3024.jpg",
  width: 8064,
  height: 6048,
} as const;

const sourcePath = fileURLToPath(new URL(`../../test/fixtures/images/${BIG_PHOTO.source}`, import.meta.url));

const made = new Map<boolean, Promise<Buffer>>();

export function makeBigPhoto(progressive = false): Promise<Buffer> {
  let photo = made.get(progressive);
  if (!photo) {
    photo = sharp(sourcePath, { autoOrient: false })
      .resize(BIG_PHOTO.width, BIG_PHOTO.height, { fit: "fill", kernel: "lanczos3" })
      .jpeg({ quality: 90, progressive, chromaSubsampling: "4:2:0", mozjpeg: false })
      .toBuffer();
    made.set(progressive, photo);
  }
  return photo;
}
