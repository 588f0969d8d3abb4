/**
 * The WebAssembly SIMD kernels (simd-kernels.c: islow IDCT, YCbCr -> RGB, fancy upsampling) against
 * libjpeg-turbo's own C code, inside workerd: the module's self-test runs both on generated inputs
 * (typical, shortcut-path, dense and overflowing IDCT blocks; every extreme colour pairing; rows of
 * every width mod 16) and counts differences. Whole images are checked against Pillow by
 * resample.test.ts and test/workers/tensors.test.ts.
 */
import { describe, expect, it } from "vitest";
import { createJpegDecoder, SIMD_KERNELS } from "./index";
import jpegModule from "./libjpeg-turbo.wasm";

describe("libjpeg-turbo.wasm SIMD kernels", () => {
  for (const kernel of SIMD_KERNELS) {
    it(`${kernel}: identical to libjpeg-turbo's C code on 50,000 generated cases`, async () => {
      const decoder = await createJpegDecoder(jpegModule);
      try {
        for (const seed of [1, 0x9e3779b9]) {
          expect(decoder.simdSelfTest(kernel, seed, 25_000)).toBe(0);
        }
      } finally {
        decoder.dispose();
      }
    });
  }

  it("refuses an unknown kernel", async () => {
    const decoder = await createJpegDecoder(jpegModule);
    expect(() => decoder.simdSelfTest("nope" as never, 1, 1)).toThrow(RangeError);
    decoder.dispose();
  });
});
