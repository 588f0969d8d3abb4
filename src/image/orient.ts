/**
 * Orient: EXIF orientation as an index mapping, not a copy. The resampler reads the stored pixels
 * through `OrientedView`, so a rotated 12 MP photo costs no extra 36 MB buffer. The mapping follows
 * Pillow's `ImageOps.exif_transpose` (2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM,
 * 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90).
 */
import type { Orientation } from "./exif";

export type OrientationMode = "apply" | "ignore";

/** Pixel (x, y) of the oriented image is stored pixel `base + x * dx + y * dy` (in pixels, not bytes). */
export interface OrientedView {
  width: number;
  height: number;
  base: number;
  dx: number;
  dy: number;
}

export function orientedView(width: number, height: number, orientation: Orientation): OrientedView {
  const W = width;
  const H = height;
  switch (orientation) {
    case 1:
      return { width: W, height: H, base: 0, dx: 1, dy: W };
    case 2:
      return { width: W, height: H, base: W - 1, dx: -1, dy: W };
    case 3:
      return { width: W, height: H, base: (H - 1) * W + W - 1, dx: -1, dy: -W };
    case 4:
      return { width: W, height: H, base: (H - 1) * W, dx: 1, dy: -W };
    case 5:
      return { width: H, height: W, base: 0, dx: W, dy: 1 };
    case 6:
      return { width: H, height: W, base: (H - 1) * W, dx: -W, dy: 1 };
    case 7:
      return { width: H, height: W, base: (H - 1) * W + W - 1, dx: -W, dy: -1 };
    case 8:
      return { width: H, height: W, base: W - 1, dx: W, dy: -1 };
  }
}

/** The orientation actually applied for a mode: `ignore` reproduces the reference (no EXIF). */
export const effectiveOrientation = (exif: Orientation, mode: OrientationMode): Orientation => (mode === "apply" ? exif : 1);
