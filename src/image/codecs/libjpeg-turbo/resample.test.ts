/**
 * The streamed decode + resize inside libjpeg-turbo.wasm (resample.c), run inside workerd: for every
 * JPEG fixture and all 8 EXIF orientations it equals the JS resampler (`resizeBicubic`, itself checked
 * against Pillow) over a full decode, byte for byte, and Pillow's own output where the manifest has it;
 * corrupt, truncated and oversized JPEGs fail with the right error; the decoder survives 1,000 failures.
 */
import { beforeAll, describe, expect, it } from "vitest";
import manifest from "../../../../test/fixtures/images/MANIFEST.json";
import { fixture as fetchFixture, type ManifestItem, sha256Hex } from "../../../../test/workers/helpers";
import type { Orientation } from "../../exif";
import { orientedView } from "../../orient";
import { grayToRgb, resizeBicubic } from "../../resize";
import { invertedCmykToRgb } from "../../to-rgb";
import { createJpegDecoder, decodeJpeg, JpegDecodeError, type JpegDecoder, JpegErrorCode } from "./index";
import jpegModule from "./libjpeg-turbo.wasm";

const MiB = 1024 * 1024;
const ORIENTATIONS: Orientation[] = [1, 2, 3, 4, 5, 6, 7, 8];
const jpegs = (manifest.items as ManifestItem[]).filter((i) => i.format === "JPEG");

/**
 * Fixture bytes, all fetched up front: the tests below run for seconds between fetches, long enough for the
 * loopback server to drop an idle keep-alive connection that workerd then reuses ("Network connection lost").
 */
const BAD_FILES = ["truncated_half.jpg", "empty.jpg", "html_as_image.jpg", "jpeg_sof_65500x65500.jpg"];
const files = new Map<string, Uint8Array>();
beforeAll(async () => {
  for (const path of [...jpegs.map((i) => `fixtures/${i.file}`), ...BAD_FILES.map((f) => `bad/${f}`)]) {
    files.set(path, await fetchFixture(path).catch(() => fetchFixture(path)));
  }
});
const fixture = async (path: string): Promise<Uint8Array> => {
  const bytes = files.get(path);
  if (!bytes) throw new Error(`fixture ${path} was not fetched`);
  return bytes;
};

let shared: Promise<JpegDecoder> | undefined;
const decoder = () => (shared ??= createJpegDecoder(jpegModule, { maxMemoryBytes: 256 * MiB }));

/** The reference: the whole image decoded into JS, then the JS port of Pillow's resampler through an oriented view. */
function referenceResizer(dec: JpegDecoder, bytes: Uint8Array) {
  const full = decodeJpeg(dec, bytes);
  let data = full.data;
  if (full.channels === 4) {
    data = new Uint8Array(full.width * full.height * 3);
    invertedCmykToRgb(full.data, data, 0, full.width * full.height);
  }
  const pixels = {
    width: full.width,
    height: full.height,
    data,
    stride: full.channels === 4 ? 3 : full.channels,
    gray: full.channels === 1,
  };
  return (orientation: Orientation, outW: number, outH: number) =>
    resizeBicubic(pixels, orientedView(full.width, full.height, orientation), outW, outH);
}

const firstDifference = (a: Uint8Array, b: Uint8Array) => (a.length !== b.length ? -2 : a.findIndex((v, i) => v !== b[i]));

describe("decodeResized equals a full decode + the JS resampler", () => {
  it.each(jpegs.map((i) => [i.file, i] as const))("%s, all 8 orientations", async (_name, item) => {
    const dec = await decoder();
    const bytes = await fixture(`fixtures/${item.file}`);
    const reference = referenceResizer(dec, bytes);
    for (const orientation of ORIENTATIONS) {
      const got = dec.decodeResized(bytes, { orientation, outWidth: 448, outHeight: 448 });
      expect(got).toMatchObject({ width: 448, height: 448, sourceWidth: item.width, sourceHeight: item.height, orientation });
      expect(got.channels).toBe(item.mode === "L" ? 1 : 3);
      expect(firstDifference(got.data, reference(orientation, 448, 448)), `orientation ${orientation}`).toBe(-1);
      // and Pillow's own bytes where the manifest has them
      const rgb = got.channels === 1 ? grayToRgb(got.data) : got.data;
      if (orientation === 1) expect(await sha256Hex(rgb)).toBe(item.reference_rgb_sha256);
      if (orientation === item.exif_orientation) expect(await sha256Hex(rgb)).toBe(item.oriented_rgb_sha256);
    }
  });

  it("skips a pass exactly as Pillow does when a side already has the output size, for every orientation", async () => {
    const dec = await decoder();
    for (const name of ["upscale_120x80.jpg", "gray.jpg", "cmyk.jpg"]) {
      const bytes = await fixture(`fixtures/${name}`);
      const reference = referenceResizer(dec, bytes);
      const { width: w, height: h } = jpegs.find((i) => i.file === name)!;
      for (const orientation of ORIENTATIONS) {
        const [ow, oh] = orientation >= 5 ? [h, w] : [w, h];
        for (const [outW, outH] of [
          [ow, 97], // no horizontal pass
          [61, oh], // no vertical pass
          [ow, oh], // neither
          [3 * ow, 2], // upscale one side, squash the other
        ]) {
          const got = dec.decodeResized(bytes, { orientation, outWidth: outW, outHeight: outH });
          expect(firstDifference(got.data, reference(orientation, outW, outH)), `${name} o${orientation} ${outW}x${outH}`).toBe(-1);
        }
      }
    }
  });

  it("keeps a baseline 12 MP decode inside the initial 16 MiB wasm heap", async () => {
    const fresh = await createJpegDecoder(jpegModule);
    const initial = fresh.heapBytes();
    const got = fresh.decodeResized(await fixture("fixtures/exif_rot6_4032x3024.jpg"), { orientation: 6, outWidth: 448, outHeight: 448 });
    expect(got.resampleBytes).toBeLessThan(2 * MiB);
    expect(fresh.heapBytes()).toBe(initial);
    expect(initial).toBeLessThanOrEqual(16 * MiB);
    fresh.dispose();
  });
});

describe("bad JPEGs fail with the right error, and the decoder stays usable", () => {
  async function expectError(dec: JpegDecoder, bytes: Uint8Array, code: number, orientation: Orientation = 1) {
    let error: unknown;
    try {
      dec.decodeResized(bytes, { orientation, outWidth: 448, outHeight: 448 });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(JpegDecodeError);
    expect((error as JpegDecodeError).code, (error as Error).message).toBe(code);
  }

  it("refuses truncated, empty, non-JPEG and bomb headers", async () => {
    const dec = await decoder();
    await expectError(dec, await fixture("bad/truncated_half.jpg"), JpegErrorCode.truncated);
    await expectError(dec, await fixture("bad/truncated_half.jpg"), JpegErrorCode.truncated, 6);
    await expectError(dec, await fixture("bad/empty.jpg"), JpegErrorCode.empty);
    await expectError(dec, await fixture("bad/html_as_image.jpg"), JpegErrorCode.notJpeg);
    await expectError(dec, await fixture("bad/jpeg_sof_65500x65500.jpg"), JpegErrorCode.tooManyPixels);
    const dune = await fixture("fixtures/dune_1.8mp.jpg");
    await expectError(dec, dune.subarray(0, Math.floor(dune.length * 0.99)), JpegErrorCode.truncated, 8);
    // corrupt entropy data: libjpeg's own error
    const corrupt = dune.slice();
    corrupt.fill(0xff, corrupt.length >> 1, (corrupt.length >> 1) + 64);
    expect(() => dec.decodeResized(corrupt, { orientation: 1, outWidth: 448, outHeight: 448 })).toThrow(JpegDecodeError);
  });

  it("has the same outcome as the row decoder (checked against Pillow) for cut, EOI-less, padded and corrupt files", async () => {
    const dec = await decoder();
    for (const name of ["dune_1.8mp.jpg", "brushes_1.5mp_prog444.jpg", "gray.jpg", "cmyk.jpg", "upscale_120x80.jpg"]) {
      const bytes = await fixture(`fixtures/${name}`);
      const corrupt = bytes.slice();
      for (let i = corrupt.length >> 1, end = i + 40; i < end; i++)
        corrupt[i] = corrupt[i] === 0xff || (corrupt[i] ^ 0x5a) === 0xff ? 0 : corrupt[i] ^ 0x5a;
      const padded = new Uint8Array(bytes.length + 1024).fill(0x55);
      padded.set(bytes);
      const variants: Array<[string, Uint8Array]> = [
        ["no EOI", bytes.subarray(0, bytes.length - 2)],
        ["cut at 99%", bytes.subarray(0, Math.floor(bytes.length * 0.99))],
        ["trailing bytes", padded],
        ["corrupt entropy data", corrupt],
      ];
      for (const [label, variant] of variants) {
        let reference: ReturnType<typeof referenceResizer> | undefined;
        let referenceError: unknown;
        try {
          reference = referenceResizer(dec, variant);
        } catch (e) {
          referenceError = e;
        }
        for (const orientation of [1, 6] as const) {
          let got: Uint8Array | undefined;
          let error: unknown;
          try {
            got = dec.decodeResized(variant, { orientation, outWidth: 448, outHeight: 448 }).data;
          } catch (e) {
            error = e;
          }
          if (reference) {
            expect(error, `${name} ${label} o${orientation}`).toBeUndefined();
            expect(firstDifference(got!, reference(orientation, 448, 448)), `${name} ${label} o${orientation}`).toBe(-1);
          } else {
            expect(error, `${name} ${label} o${orientation}`).toBeInstanceOf(JpegDecodeError);
            expect((error as JpegDecodeError).code).toBe((referenceError as JpegDecodeError).code);
          }
        }
      }
    }
  });

  it("refuses bad arguments", async () => {
    const dec = await decoder();
    const bytes = await fixture("fixtures/upscale_120x80.jpg");
    for (const options of [
      { orientation: 0 as Orientation, outWidth: 448, outHeight: 448 },
      { orientation: 9 as Orientation, outWidth: 448, outHeight: 448 },
      { outWidth: 0, outHeight: 448 },
      { outWidth: 448, outHeight: 1.5 },
      { outWidth: 70000, outHeight: 448 },
    ]) {
      expect(() => dec.decodeResized(bytes, options)).toThrow(expect.objectContaining({ code: JpegErrorCode.resize }));
    }
  });

  it("respects the memory cap: libjpeg's coefficient buffer and the resampler's window", async () => {
    // A progressive 12 MP file needs a 52.8 MiB coefficient buffer: over a 32 MiB cap.
    const capped = await createJpegDecoder(jpegModule, { maxMemoryBytes: 32 * MiB });
    await expectError(capped, await fixture("fixtures/sunset_12mp_prog.jpg"), JpegErrorCode.memoryCap);
    // A header claiming 65500 × 65500 past a raised pixel cap: rotated, the resampler's window of stored rows
    // (ksize = 587 rows of 65500 × 3 bytes) is over the cap, refused before anything is allocated.
    const unlimited = await createJpegDecoder(jpegModule, { maxMemoryBytes: 64 * MiB, maxPixels: Number.POSITIVE_INFINITY });
    const heap = unlimited.heapBytes();
    await expectError(unlimited, await fixture("bad/jpeg_sof_65500x65500.jpg"), JpegErrorCode.memoryCap, 6);
    expect(unlimited.heapBytes()).toBe(heap);
    // (Unrotated it would need little memory and decode 4.3 gigapixels of zeros: the pixel cap is what refuses that.)
    const item = jpegs.find((i) => i.file === "dune_1.8mp.jpg")!;
    for (const dec of [capped, unlimited]) {
      const got = dec.decodeResized(await fixture(`fixtures/${item.file}`), { orientation: 1, outWidth: 448, outHeight: 448 });
      expect(await sha256Hex(got.data)).toBe(item.reference_rgb_sha256);
      dec.dispose();
    }
  });

  it("works after 1,000 failed decodes in a row", async () => {
    const dec = await createJpegDecoder(jpegModule);
    const small = await fixture("fixtures/upscale_120x80.jpg");
    const bad: Array<[Uint8Array, number]> = [
      [await fixture("bad/empty.jpg"), JpegErrorCode.empty],
      [await fixture("bad/html_as_image.jpg"), JpegErrorCode.notJpeg],
      [await fixture("bad/jpeg_sof_65500x65500.jpg"), JpegErrorCode.tooManyPixels],
      [small.subarray(0, small.length >> 1), JpegErrorCode.truncated],
    ];
    const truncatedHalf = await fixture("bad/truncated_half.jpg");
    let thrown = 0;
    for (let i = 0; i < 1000; i++) {
      // every 100th: the big truncated photo (fails deep inside the decode, the resampler half done)
      const [bytes, code] = i % 100 === 99 ? [truncatedHalf, JpegErrorCode.truncated] : bad[i % bad.length];
      try {
        dec.decodeResized(bytes, { orientation: ((i % 8) + 1) as Orientation, outWidth: 448, outHeight: 448 });
      } catch (e) {
        if (e instanceof JpegDecodeError && e.code === code) thrown++;
        else throw e;
      }
    }
    expect(thrown).toBe(1000);
    const heapAfterFailures = dec.heapBytes();
    for (const name of ["dune_1.8mp.jpg", "exif_rot6_4032x3024.jpg"]) {
      const item = jpegs.find((i) => i.file === name)!;
      const got = dec.decodeResized(await fixture(`fixtures/${name}`), { orientation: 1, outWidth: 448, outHeight: 448 });
      expect(await sha256Hex(got.data)).toBe(item.reference_rgb_sha256);
    }
    // nothing leaked: the failures did not grow the heap beyond what one decode needs
    expect(heapAfterFailures).toBeLessThanOrEqual(16 * MiB);
    dec.dispose();
  });
});
