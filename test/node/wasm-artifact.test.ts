/**
 * The committed libjpeg-turbo WebAssembly is the one its recorded hash names. (`npm run check:wasm`
 * rebuilds it from Debian's source and compares; `.ci/run` does that when emscripten is installed.)
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const dir = fileURLToPath(new URL("../../src/image/codecs/libjpeg-turbo/", import.meta.url));

describe("libjpeg-turbo.wasm", () => {
  it("matches libjpeg-turbo.wasm.sha256", () => {
    const recorded = readFileSync(`${dir}libjpeg-turbo.wasm.sha256`, "utf8").trim().split(/\s+/)[0];
    const actual = createHash("sha256")
      .update(readFileSync(`${dir}libjpeg-turbo.wasm`))
      .digest("hex");
    expect(recorded).toMatch(/^[0-9a-f]{64}$/);
    expect(actual).toBe(recorded);
  });

  it("ships libjpeg-turbo's licence notices", () => {
    const licence = readFileSync(`${dir}LICENSE.md`, "utf8");
    expect(licence).toMatch(/Independent JPEG Group/);
    expect(licence).toMatch(/BSD/);
  });
});
