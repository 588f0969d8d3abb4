/**
 * The preprocessing CLI as a user runs it: a real child process, real files.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const images = join(root, "test/fixtures/images");
const manifest = JSON.parse(readFileSync(join(images, "MANIFEST.json"), "utf8")) as {
  items: Array<{ file: string; width: number; height: number; reference_f16_sha256: string; oriented_rgb_sha256?: string }>;
};
const out = mkdtempSync(join(tmpdir(), "qvl-cli-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(join(root, "node_modules/.bin/tsx"), [join(root, "scripts/preprocess.ts"), ...args], { cwd: root }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("npm run preprocess", () => {
  it("writes the exact f16 tensor and reports it", async () => {
    const item = manifest.items.find((i) => i.file === "dune_1.8mp.jpg")!;
    const target = join(out, "dune.f16");
    const r = await run([join(images, item.file), "--out", target, "--orientation", "ignore"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    const report = JSON.parse(lines[0]);
    expect(report).toMatchObject({
      format: "f16",
      shape: [3, 448, 448],
      sha256: item.reference_f16_sha256,
      width: item.width,
      height: item.height,
    });
    expect(Object.keys(report.timing_ms)).toEqual(expect.arrayContaining(["decode", "resize", "normalize", "total"]));
    expect(report.peak_bytes).toBeLessThan(32 * 1024 * 1024); // JPEG is resized while it decodes: no full-size image is ever held
    expect(sha256(target)).toBe(item.reference_f16_sha256);
  });

  it("applies EXIF orientation by default and writes u8 HWC on request", async () => {
    const item = manifest.items.find((i) => i.oriented_rgb_sha256)!;
    const target = join(out, "rot.u8");
    const r = await run([join(images, item.file), "--out", target, "--format", "u8"]);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({
      format: "u8",
      shape: [448, 448, 3],
      orientation: "apply",
      exif_orientation: 6,
      width: item.height,
      height: item.width,
    });
    expect(sha256(target)).toBe(item.oriented_rgb_sha256);
  });

  it("--quality fast decodes the JPEG at Pillow's draft scale and reports it", async () => {
    const item = manifest.items.find((i) => i.file === "kleiber_20mp.jpg")!;
    const target = join(out, "kleiber-fast.u8");
    const r = await run([join(images, item.file), "--out", target, "--format", "u8", "--quality", "fast", "--orientation", "ignore"]);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    // 6028 // 448 = 13, 3391 // 448 = 7: draft picks 1/4
    expect(report).toMatchObject({ format: "u8", quality: "fast", dct_scale: 4, width: item.width, height: item.height });
    const fast = readFileSync(target);
    const reference = readFileSync(join(images, `${item.file}.rgb`));
    expect(fast.length).toBe(reference.length);
    let sse = 0;
    for (let i = 0; i < fast.length; i++) sse += (fast[i] - reference[i]) ** 2;
    const psnr = 10 * Math.log10((255 * 255) / (sse / fast.length));
    expect(psnr).toBeGreaterThanOrEqual(40);

    const exact = await run([join(images, item.file), "--out", join(out, "kleiber-exact.u8"), "--format", "u8", "--orientation", "ignore"]);
    expect(JSON.parse(exact.stdout)).toMatchObject({ quality: "exact", dct_scale: 1 });

    const bad = await run([join(images, item.file), "--out", join(out, "w"), "--quality", "turbo"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--quality must be exact or fast[\s\S]*usage:/);
  });

  it("refuses a bad input with exit status 2 and a JSON error on stderr", async () => {
    const r = await run([join(root, "test/fixtures/bad/png_bomb_30000x30000.png"), "--out", join(out, "x")]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(JSON.parse(r.stderr)).toEqual({ error: { code: "image_too_large", message: expect.stringContaining("30000") } });
  });

  it("honours --max-pixels", async () => {
    const r = await run([join(images, "dune_1.8mp.jpg"), "--out", join(out, "y"), "--max-pixels", "1000000"]);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stderr).error.code).toBe("image_too_large");
  });

  it("explains its usage on a bad flag (status 1)", async () => {
    const r = await run([join(images, "dune_1.8mp.jpg"), "--out", join(out, "z"), "--format", "f32"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--format must be f16 or u8[\s\S]*usage:/);
  });
});
