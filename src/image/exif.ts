/**
 * EXIF orientation from a TIFF-structured EXIF block (the payload of JPEG APP1 "Exif\0\0", PNG eXIf,
 * WebP EXIF). Only IFD0's Orientation tag (0x0112) is read; anything malformed means "no orientation"
 * (1), as Pillow's exif_transpose treats an unreadable EXIF block.
 */

export type Orientation = 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8;

const ORIENTATION_TAG = 0x0112;
const TYPE_SHORT = 3;
const TYPE_LONG = 4;

export function readExifOrientation(tiff: Uint8Array): Orientation {
  if (tiff.length < 8) return 1;
  const little = tiff[0] === 0x49 && tiff[1] === 0x49;
  const big = tiff[0] === 0x4d && tiff[1] === 0x4d;
  if (!little && !big) return 1;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  if (view.getUint16(2, little) !== 42) return 1;
  const ifd = view.getUint32(4, little);
  if (ifd + 2 > tiff.length) return 1;
  const count = view.getUint16(ifd, little);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + i * 12;
    if (entry + 12 > tiff.length) return 1;
    if (view.getUint16(entry, little) !== ORIENTATION_TAG) continue;
    // Pillow reads the tag whatever its declared integer type; SHORT is the standard one.
    const type = view.getUint16(entry + 2, little);
    let value: number;
    if (type === TYPE_SHORT) value = view.getUint16(entry + 8, little);
    else if (type === TYPE_LONG) value = view.getUint32(entry + 8, little);
    else return 1;
    return value >= 1 && value <= 8 ? (value as Orientation) : 1;
  }
  return 1;
}
