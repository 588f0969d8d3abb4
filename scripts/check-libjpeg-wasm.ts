/**
 * Checks src/image/codecs/libjpeg-turbo/libjpeg-turbo.wasm against Pillow 9.4 (Debian's python3-pil, which
 * links the same libjpeg-turbo 2.1.5), byte for byte:
 *  - every fixture JPEG: full decode (raw mode and `convert("RGB")`) and DCT-scaled decodes at 1/2, 1/4,
 *    1/8 against `im.draft(im.mode, (w // s, h // s))` (which makes Pillow 9.4 pick exactly 1/s);
 *  - variants made on the fly (EOI missing, truncated, trailing bytes, corrupt entropy data): same
 *    outcome as Pillow (same bytes, or an error where Pillow raises);
 *  - the bad fixtures fail with a JpegDecodeError, no crash; 1,000 failed decodes in a row leave the
 *    decoder working; the memory cap refuses a progressive file whose coefficient buffer exceeds it;
 *  - decode + resize in the module (`decodeResized`, resample.c): every fixture in all 8 EXIF orientations
 *    against Pillow's `im.transpose(...)` (as `ImageOps.exif_transpose` does it) + `convert("RGB")` +
 *    `resize((448, 448), BICUBIC)`, plus sizes where Pillow skips a pass; the variants and bad files give
 *    the same outcome through it as through the row API;
 *  - timings and peak wasm heap of full decodes (row API) and of decodeResized for the big fixtures.
 *
 *   npx tsx scripts/check-libjpeg-wasm.ts [--fixtures DIR] [--bad DIR] [--python /usr/bin/python3]
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createJpegDecoder,
  decodeJpeg,
  JpegDecodeError,
  type JpegDecoder,
  JpegErrorCode,
  type JpegOrientation,
  type JpegScaleDenom,
  pillowDraftScale,
  toRgb,
} from "../src/image/codecs/libjpeg-turbo/index";

const args = process.argv.slice(2);
const opt = (name: string, fallback: string): string => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
};
const FIXTURES = opt("--fixtures", "/work/shared/fixtures/images");
const BAD = opt("--bad", "/work/shared/fixtures/bad");
const PYTHON = opt("--python", "/usr/bin/python3");
const CODEC_DIR = fileURLToPath(new URL("../src/image/codecs/libjpeg-turbo/", import.meta.url));
const SCALES: JpegScaleDenom[] = [1, 2, 4, 8];
const MiB = 1024 * 1024;

/** Pillow's reference: for each file, per scale, size + sha256 of `tobytes()` (raw mode) and of `convert("RGB")`, or the error. */
const PILLOW_REFERENCE = `
import hashlib, json, sys
from PIL import Image
out = {}
for p in sys.argv[1:]:
    r = {}
    for s in (1, 2, 4, 8):
        try:
            im = Image.open(p)
            w, h = im.size
            if s > 1:
                im.draft(im.mode, (w // s, h // s))
                assert im.decoderconfig[0] == s, (p, s, im.decoderconfig)
                assert im.size == ((w + s - 1) // s, (h + s - 1) // s), (p, s, im.size)
            im.load()
            raw = im.tobytes()
            rgb = im.convert("RGB").tobytes()
            r[str(s)] = {"ok": True, "mode": im.mode, "width": im.size[0], "height": im.size[1],
                         "raw": hashlib.sha256(raw).hexdigest(), "rgb": hashlib.sha256(rgb).hexdigest()}
        except Exception as e:
            r[str(s)] = {"ok": False, "error": type(e).__name__ + ": " + str(e)}
        if s == 1 and not r["1"]["ok"]:
            break
    out[p] = r
json.dump(out, sys.stdout)
`;

/** Variants of fixture JPEGs, written for both sides to read. */
const MAKE_VARIANTS = String.raw`
import os, sys
src, dst = sys.argv[1], sys.argv[2]
def rd(n): return open(os.path.join(src, n), "rb").read()
def wr(n, b): open(os.path.join(dst, n), "wb").write(b)
def corrupt(b, frac, n):
    b = bytearray(b); i = int(len(b) * frac)
    for k in range(i, i + n):
        v = b[k] ^ 0x5A
        b[k] = 0 if v == 0xFF or b[k] == 0xFF else v
    return bytes(b)
for name in ("dune_1.8mp.jpg", "brushes_1.5mp_prog444.jpg", "gray.jpg", "cmyk.jpg", "upscale_120x80.jpg"):
    b = rd(name); stem = name[:-4]
    assert b.endswith(b"\xff\xd9"), name
    wr(stem + ".no-eoi.jpg", b[:-2])
    wr(stem + ".cut-99.jpg", b[: int(len(b) * 0.99)])
    wr(stem + ".trailing.jpg", b + b"trailing garbage\x00\xff" * 64)
    wr(stem + ".corrupt.jpg", corrupt(b, 0.5, 40))
`;

/**
 * Pillow's reference for decodeResized: per file, per "orientation:width:height", sha256 of
 * `transpose → convert("RGB") → resize(BICUBIC)`, or the error. argv: a JSON list of [path, [[o, w, h], ...]].
 */
const PILLOW_RESIZED = `
import hashlib, json, sys
from PIL import Image
T = Image.Transpose
METHOD = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}
out = {}
for p, cases in json.loads(sys.argv[1]):
    r = {}
    for o, w, h in cases:
        key = "%d:%d:%d" % (o, w, h)
        try:
            im = Image.open(p)
            im.load()
            if o != 1:
                im = im.transpose(METHOD[o])
            im = im.convert("RGB").resize((w, h), Image.BICUBIC)
            r[key] = {"ok": True, "rgb": hashlib.sha256(im.tobytes()).hexdigest()}
        except Exception as e:
            r[key] = {"ok": False, "error": type(e).__name__ + ": " + str(e)}
    out[p] = r
json.dump(out, sys.stdout)
`;

interface Ref {
  ok: boolean;
  error?: string;
  mode?: string;
  width?: number;
  height?: number;
  raw?: string;
  rgb?: string;
}

const sha = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex");
const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function python(code: string, argv: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(PYTHON, ["-c", code, ...argv], { encoding: "utf8", maxBuffer: 64 * MiB, env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${PYTHON} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

let failures = 0;
let simdOnly = 0;
const fail = (msg: string): void => {
  failures++;
  console.log(`  FAIL ${msg}`);
};

type ResizeCase = [orientation: JpegOrientation, width: number, height: number];
const ALL_ORIENTATIONS: JpegOrientation[] = [1, 2, 3, 4, 5, 6, 7, 8];

/** decodeResized as Pillow's RGB bytes (gray replicated), or the JpegDecodeError. */
function oursResized(
  decoder: JpegDecoder,
  bytes: Uint8Array,
  [orientation, outWidth, outHeight]: ResizeCase,
): { rgb?: string; error?: unknown } {
  try {
    const r = decoder.decodeResized(bytes, { orientation, outWidth, outHeight });
    if (r.channels === 3) return { rgb: sha(r.data) };
    const rgb = new Uint8Array(r.data.length * 3);
    for (let i = 0; i < r.data.length; i++) rgb.fill(r.data[i], i * 3, i * 3 + 3);
    return { rgb: sha(rgb) };
  } catch (error) {
    return { error };
  }
}

/** Compare decodeResized with Pillow for each case; `noSimd` as in {@link compare}. */
function compareResized(
  label: string,
  decoder: JpegDecoder,
  bytes: Uint8Array,
  cases: ResizeCase[],
  refs: Record<string, { ok: boolean; rgb?: string; error?: string }>,
  noSimd?: Record<string, { ok: boolean; rgb?: string }>,
): string[] {
  const notes: string[] = [];
  for (const c of cases) {
    const key = c.join(":");
    const ref = refs[key];
    const got = oursResized(decoder, bytes, c);
    if (!ref) fail(`${label} ${key}: no Pillow reference`);
    else if (!ref.ok) {
      if (got.rgb) fail(`${label} ${key}: Pillow raised (${ref.error}) but we decoded`);
      else if (!(got.error instanceof JpegDecodeError)) fail(`${label} ${key}: not a JpegDecodeError: ${String(got.error)}`);
      else notes.push(`${key} both fail`);
    } else if (!got.rgb) fail(`${label} ${key}: Pillow decoded, we threw ${String(got.error)}`);
    else if (got.rgb === ref.rgb) notes.push(`${key} ok`);
    else if (got.rgb === noSimd?.[key]?.rgb) {
      notes.push(`${key} equals Pillow with JSIMD_FORCENONE=1`);
      simdOnly++;
    } else fail(`${label} ${key}: ${got.rgb.slice(0, 12)} vs Pillow ${ref.rgb!.slice(0, 12)}`);
  }
  return notes;
}

/** Our decode at 1/s: raw bytes in Pillow's terms (CMYK;I inverted to Pillow's CMYK) and convert("RGB"). */
function ours(decoder: JpegDecoder, bytes: Uint8Array, s: JpegScaleDenom) {
  const img = decodeJpeg(decoder, bytes, s);
  const raw = img.channels === 4 ? img.data.map((v) => 255 - v) : img.data;
  const mode = img.channels === 1 ? "L" : img.channels === 3 ? "RGB" : "CMYK";
  return { img, mode, raw: sha(raw), rgb: sha(toRgb(img)) };
}

/**
 * Compare with Pillow at every scale. `noSimd` is Pillow's output with libjpeg-turbo's SIMD disabled
 * (JSIMD_FORCENONE=1): accepted as well, for corrupt files only, see the note printed for them.
 */
function compare(
  label: string,
  decoder: JpegDecoder,
  bytes: Uint8Array,
  refs: Record<string, Ref>,
  noSimd?: Record<string, Ref>,
): string[] {
  const notes: string[] = [];
  for (const s of SCALES) {
    const ref = refs[String(s)];
    if (!ref) continue;
    let got: ReturnType<typeof ours> | undefined;
    let err: unknown;
    try {
      got = ours(decoder, bytes, s);
    } catch (e) {
      err = e;
    }
    if (!ref.ok) {
      if (got) fail(`${label} 1/${s}: Pillow raised (${ref.error}) but we decoded`);
      else if (!(err instanceof JpegDecodeError)) fail(`${label} 1/${s}: not a JpegDecodeError: ${String(err)}`);
      else notes.push(`1/${s}: both fail (Pillow: ${ref.error}; ours: ${err.message})`);
      if (s === 1) break;
      continue;
    }
    if (!got) {
      fail(`${label} 1/${s}: Pillow decoded, we threw ${String(err)}`);
      continue;
    }
    const w0 = refs["1"].width!;
    const h0 = refs["1"].height!;
    if (pillowDraftScale(w0, h0, Math.floor(w0 / s), Math.floor(h0 / s)) !== s) fail(`${label} 1/${s}: pillowDraftScale disagrees`);
    const equal = (r: Ref | undefined): boolean =>
      !!r && got.img.width === r.width && got.img.height === r.height && got.mode === r.mode && got.raw === r.raw && got.rgb === r.rgb;
    const same = equal(ref);
    if (!same && equal(noSimd?.[String(s)])) {
      notes.push(`1/${s} differs from Pillow but equals Pillow with JSIMD_FORCENONE=1`);
      simdOnly++;
    } else if (!same) {
      fail(
        `${label} 1/${s}: ours ${got.img.width}x${got.img.height} ${got.mode} raw ${got.raw.slice(0, 12)} rgb ${got.rgb.slice(0, 12)}` +
          ` vs Pillow ${ref.width}x${ref.height} ${ref.mode} raw ${ref.raw!.slice(0, 12)} rgb ${ref.rgb!.slice(0, 12)}`,
      );
    } else notes.push(`1/${s} ${got.img.width}x${got.img.height} ${got.mode} ok`);
  }
  return notes;
}

async function main(): Promise<void> {
  const wasmBytes = readFileSync(join(CODEC_DIR, "libjpeg-turbo.wasm"));
  const recorded = readFileSync(join(CODEC_DIR, "libjpeg-turbo.wasm.sha256"), "utf8").split(/\s+/)[0];
  const wasmSha = sha(wasmBytes);
  console.log(
    `libjpeg-turbo.wasm: ${wasmBytes.byteLength} bytes, sha256 ${wasmSha} (${wasmSha === recorded ? "matches" : "DIFFERS FROM"} the .sha256 file)`,
  );
  if (wasmSha !== recorded) fail("wasm sha256 differs from libjpeg-turbo.wasm.sha256");
  const module = await WebAssembly.compile(wasmBytes);
  const decoder = await createJpegDecoder(module, { maxMemoryBytes: 256 * MiB });

  const fixtures = readdirSync(FIXTURES)
    .filter((f) => f.toLowerCase().endsWith(".jpg"))
    .sort()
    .map((f) => join(FIXTURES, f));
  const tmp = mkdtempSync(join(tmpdir(), "qvl-jpeg-check-"));
  try {
    python(MAKE_VARIANTS, [FIXTURES, tmp]);
    const variants = readdirSync(tmp)
      .sort()
      .map((f) => join(tmp, f));
    const badFiles = readdirSync(BAD)
      .filter((f) => f.toLowerCase().endsWith(".jpg"))
      .sort()
      .map((f) => join(BAD, f));
    const t0 = performance.now();
    const refs = JSON.parse(python(PILLOW_REFERENCE, [...fixtures, ...variants, ...badFiles])) as Record<string, Record<string, Ref>>;
    console.log(
      `Pillow reference for ${fixtures.length + variants.length + badFiles.length} files in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );

    console.log(`\nFixtures (${FIXTURES}): full decode + draft 1/2, 1/4, 1/8 vs Pillow`);
    for (const p of fixtures) {
      const before = failures;
      const notes = compare(basename(p), decoder, readFileSync(p), refs[p]);
      if (failures === before) console.log(`  ok   ${basename(p)}: ${notes.join(", ")}`);
    }

    console.log("\nVariants (same outcome as Pillow)");
    const noSimd = JSON.parse(
      python(
        PILLOW_REFERENCE,
        variants.filter((p) => p.includes(".corrupt.")),
        { JSIMD_FORCENONE: "1" },
      ),
    ) as Record<string, Record<string, Ref>>;
    for (const p of variants) {
      const before = failures;
      const notes = compare(basename(p), decoder, readFileSync(p), refs[p], noSimd[p]);
      if (failures === before) console.log(`  ok   ${basename(p)}: ${notes.join("; ")}`);
    }

    console.log("\nDecode + resize in the module (decodeResized) vs Pillow's transpose + convert('RGB') + resize((w, h), BICUBIC)");
    const t1 = performance.now();
    const resizeCases = new Map<string, ResizeCase[]>();
    for (const p of fixtures) {
      const cases: ResizeCase[] = ALL_ORIENTATIONS.map((o) => [o, 448, 448]);
      const r = refs[p]["1"];
      if (r.ok && (r.width! < 2000 || ["gray", "cmyk"].some((n) => basename(p).includes(n)))) {
        // sizes where Pillow skips the horizontal or the vertical pass (the side already has the output size)
        for (const o of [1, 2, 3, 4, 5, 6, 7, 8] as JpegOrientation[]) {
          const [ow, oh] = o >= 5 ? [r.height!, r.width!] : [r.width!, r.height!];
          cases.push([o, ow, 97], [o, 61, oh]);
        }
      }
      resizeCases.set(p, cases);
    }
    for (const p of variants)
      resizeCases.set(p, [
        [1, 448, 448],
        [6, 448, 448],
      ]);
    for (const p of badFiles) resizeCases.set(p, [[1, 448, 448]]);
    const resizedRefs = JSON.parse(python(PILLOW_RESIZED, [JSON.stringify([...resizeCases])])) as Record<
      string,
      Record<string, { ok: boolean; rgb?: string; error?: string }>
    >;
    const resizedNoSimd = JSON.parse(
      python(PILLOW_RESIZED, [JSON.stringify([...resizeCases].filter(([p]) => p.includes(".corrupt.")))], { JSIMD_FORCENONE: "1" }),
    ) as Record<string, Record<string, { ok: boolean; rgb?: string }>>;
    console.log(`  (Pillow reference in ${((performance.now() - t1) / 1000).toFixed(1)} s)`);
    for (const [p, cases] of resizeCases) {
      if (badFiles.includes(p)) continue; // below
      const before = failures;
      const notes = compareResized(basename(p), decoder, readFileSync(p), cases, resizedRefs[p], resizedNoSimd[p]);
      const okCount = notes.filter((n) => n.endsWith(" ok")).length;
      const other = notes.filter((n) => !n.endsWith(" ok"));
      if (failures === before)
        console.log(`  ok   ${basename(p)}: ${okCount} of ${cases.length} identical${other.length ? `; ${other.join("; ")}` : ""}`);
    }

    if (simdOnly > 0) {
      console.log(
        `  note: ${simdOnly} decode(s) of corrupt entropy data differ from Pillow as Debian ships it but equal Pillow with\n` +
          "        libjpeg-turbo's SIMD off (JSIMD_FORCENONE=1): Debian's build uses the SSE2/AVX2 IDCT, which works in\n" +
          "        16-bit lanes, and out-of-range coefficients from corrupt data come out differently than from the C\n" +
          "        IDCT built here (no SIMD in wasm). Valid JPEGs decode identically.",
      );
    }

    console.log(`\nBad files (${BAD})`);
    const badBytes: Uint8Array[] = [];
    for (const p of badFiles) {
      const bytes = readFileSync(p);
      badBytes.push(bytes);
      const ref = refs[p]?.["1"];
      try {
        decodeJpeg(decoder, bytes);
        fail(`${basename(p)} decoded without an error`);
      } catch (e) {
        const expected: Record<string, number> = {
          "empty.jpg": JpegErrorCode.empty,
          "html_as_image.jpg": JpegErrorCode.notJpeg,
          "jpeg_sof_65500x65500.jpg": JpegErrorCode.tooManyPixels,
          "truncated_half.jpg": JpegErrorCode.truncated,
        };
        const want = expected[basename(p)];
        if (!(e instanceof JpegDecodeError)) fail(`${basename(p)}: ${String(e)}`);
        else if (want !== undefined && e.code !== want) fail(`${basename(p)}: code ${e.code}, expected ${want} (${e.message})`);
        else {
          const resized = oursResized(decoder, bytes, [6, 448, 448]).error;
          if (!(resized instanceof JpegDecodeError) || resized.code !== e.code)
            fail(`${basename(p)}: decodeResized gave ${String(resized)}`);
          else
            console.log(
              `  ok   ${basename(p)}: JpegDecodeError(${e.code}) "${e.message}", decodeResized too (Pillow: ${ref?.ok ? "decoded!" : ref?.error})`,
            );
        }
      }
    }

    console.log("\n1,000 failed decodes in a row, then a good one");
    const good = fixtures.find((p) => basename(p) === "dune_1.8mp.jpg") ?? fixtures[0];
    const goodBytes = readFileSync(good);
    const heapBefore = decoder.heapBytes();
    let thrown = 0;
    for (let i = 0; i < 1000; i++) {
      try {
        // alternately through the row API and through decodeResized (rotated)
        if (i % 2) decodeJpeg(decoder, badBytes[i % badBytes.length]);
        else decoder.decodeResized(badBytes[i % badBytes.length], { orientation: 6, outWidth: 448, outHeight: 448 });
      } catch (e) {
        if (e instanceof JpegDecodeError) thrown++;
        else throw e;
      }
    }
    if (thrown !== 1000) fail(`only ${thrown} of 1,000 bad decodes threw`);
    const after = ours(decoder, goodBytes, 1);
    const afterResized = oursResized(decoder, goodBytes, [6, 448, 448]);
    if (after.rgb !== refs[good]["1"].rgb) fail("the good decode after 1,000 failures differs from Pillow");
    else if (afterResized.rgb !== resizedRefs[good]["6:448:448"].rgb)
      fail("the good decodeResized after 1,000 failures differs from Pillow");
    else
      console.log(
        `  ok   ${thrown} JpegDecodeErrors, then ${basename(good)} identical to Pillow; heap ${mib(heapBefore)} -> ${mib(decoder.heapBytes())}`,
      );

    console.log("\nMemory cap");
    const sunset = fixtures.find((p) => basename(p) === "sunset_12mp_prog.jpg");
    if (sunset) {
      const small = await createJpegDecoder(module, { maxMemoryBytes: 32 * MiB });
      const bytes = readFileSync(sunset);
      const header = small.open(bytes);
      try {
        small.start(4);
        fail("a 32 MiB cap did not refuse the 12 MP progressive file");
      } catch (e) {
        if (e instanceof JpegDecodeError && e.code === JpegErrorCode.memoryCap) {
          console.log(
            `  ok   32 MiB cap refuses sunset_12mp_prog.jpg (${mib(header.coefficientBytes)} coefficients): "${e.message}"; heap ${mib(small.heapBytes())}`,
          );
        } else fail(`unexpected ${String(e)}`);
      }
      // Exactly the coefficient buffer: passes the wrapper's check, then libjpeg's own accounting (which adds
      // what it allocated before) refuses.
      const tight = await createJpegDecoder(module, { maxMemoryBytes: header.coefficientBytes });
      try {
        decodeJpeg(tight, bytes, 8);
        fail("a cap just above the coefficient buffer did not refuse the progressive file");
      } catch (e) {
        if (e instanceof JpegDecodeError && e.code === JpegErrorCode.overMemoryCap) {
          console.log(`  ok   a ${header.coefficientBytes}-byte cap: libjpeg refuses it: "${e.message}"; heap ${mib(tight.heapBytes())}`);
        } else fail(`unexpected ${String(e)}`);
      }
      const tightOk = ours(tight, goodBytes, 2);
      if (tightOk.rgb !== refs[good]["2"].rgb) fail("the tight-cap decoder cannot decode a baseline file afterwards");
      tight.dispose();
      const again = ours(small, goodBytes, 1);
      if (again.rgb !== refs[good]["1"].rgb) fail("capped decoder cannot decode a baseline file afterwards");
      else console.log(`  ok   the capped decoder then decodes ${basename(good)} identically; heap ${mib(small.heapBytes())}`);
      small.dispose();
    }

    console.log("\nTimings (fresh decoder per file; median of 5; peak heap = wasm memory after the first decode)");
    for (const name of ["sunset_12mp_prog.jpg", "kleiber_20mp.jpg", "exif_rot6_4032x3024.jpg", "dune_1.8mp.jpg"]) {
      const p = fixtures.find((f) => basename(f) === name);
      if (!p) continue;
      const bytes = readFileSync(p);
      const cols: string[] = [];
      for (const s of SCALES) {
        const fresh = await createJpegDecoder(module, { maxMemoryBytes: 256 * MiB });
        const initial = fresh.heapBytes();
        const times: number[] = [];
        let peak = 0;
        for (let i = 0; i < 5; i++) {
          const t = performance.now();
          fresh.open(bytes);
          const out = fresh.start(s);
          // streamed as a resizer would read it: 16 rows at a time, no full-image copy
          while (fresh.readRows(16).length > 0);
          if (fresh.outputRow !== out.height) fail(`${name} 1/${s}: ${fresh.outputRow} of ${out.height} rows`);
          fresh.finish();
          times.push(performance.now() - t);
          peak = Math.max(peak, fresh.heapBytes());
        }
        cols.push(`1/${s} ${median(times).toFixed(0)} ms, heap ${mib(peak)}`);
        if (s === 1) {
          const full = await createJpegDecoder(module, { maxMemoryBytes: 256 * MiB });
          const t = performance.now();
          decodeJpeg(full, bytes);
          cols.push(
            `(decodeJpeg full buffer: ${(performance.now() - t).toFixed(0)} ms, heap ${mib(full.heapBytes())}; initial heap ${mib(initial)})`,
          );
          full.dispose();
        }
        fresh.dispose();
      }
      for (const orientation of [1, 6] as const) {
        // decode + resize to 448² inside the module: the whole preprocessing up to normalization
        const fresh = await createJpegDecoder(module, { maxMemoryBytes: 256 * MiB });
        const times: number[] = [];
        let resampleBytes = 0;
        for (let i = 0; i < 5; i++) {
          const t = performance.now();
          resampleBytes = fresh.decodeResized(bytes, { orientation, outWidth: 448, outHeight: 448 }).resampleBytes;
          times.push(performance.now() - t);
        }
        cols.push(
          `decodeResized o${orientation} ${median(times).toFixed(0)} ms, heap ${mib(fresh.heapBytes())} (resampler ${mib(resampleBytes)})`,
        );
        fresh.dispose();
      }
      console.log(`  ${name}: ${cols.join("; ")}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  console.log(failures === 0 ? "\nPASS: libjpeg-turbo.wasm matches Pillow 9.4 byte for byte" : `\nFAIL: ${failures} problem(s)`);
  process.exitCode = failures === 0 ? 0 : 1;
}

await main();
