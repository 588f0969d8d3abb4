/**
 * The preprocessing CLI: the same pipeline as the Worker, run in Node, to see exactly what the model sees.
 *
 *   npm run --silent preprocess -- INPUT --out OUTPUT [--format f16|u8] [--orientation apply|ignore]
 *                                  [--quality exact|fast]
 *
 * Writes the raw tensor to OUTPUT and one JSON line to stdout. A refused input exits with status 2
 * and `{"error":{"code","message"}}` on stderr; a usage or I/O error exits with status 1.
 */
import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { ApiError } from "../src/errors";
import { preprocessImage } from "../src/image/pipeline";
import { DEFAULT_IMAGE_LIMITS } from "../src/image/probe";
import { createNodeCodecs } from "./lib/node-codecs";

const USAGE = `usage: npm run --silent preprocess -- INPUT --out OUTPUT [--format f16|u8] [--orientation apply|ignore]
                                   [--quality exact|fast] [--max-bytes N] [--max-pixels N]
  f16: 3x448x448 little-endian float16, CHW, CLIP-normalized (what the model sees)
  u8:  448x448x3 uint8, HWC, before normalization
  exact: byte-identical to Pillow (default); fast: JPEGs decoded at the DCT scale Pillow's draft() picks for 1.5x the output`;

function usageError(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse();
  } catch (err) {
    usageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (positionals.length !== 1) usageError("expected exactly one INPUT file");
  if (!values.out) usageError("--out OUTPUT is required");
  const format = values.format ?? "f16";
  if (format !== "f16" && format !== "u8") usageError(`--format must be f16 or u8, not ${format}`);
  const orientation = values.orientation ?? "apply";
  if (orientation !== "apply" && orientation !== "ignore") usageError(`--orientation must be apply or ignore, not ${orientation}`);
  const quality = values.quality ?? "exact";
  if (quality !== "exact" && quality !== "fast") usageError(`--quality must be exact or fast, not ${quality}`);
  const limits = {
    maxBytes: positiveInt(values["max-bytes"], "--max-bytes") ?? DEFAULT_IMAGE_LIMITS.maxBytes,
    maxPixels: positiveInt(values["max-pixels"], "--max-pixels") ?? DEFAULT_IMAGE_LIMITS.maxPixels,
  };

  const bytes = new Uint8Array(await readFile(positionals[0]));
  const codecs = await createNodeCodecs();
  try {
    const result = await preprocessImage(bytes, codecs, { format, orientation, limits, quality });
    await writeFile(values.out, result.tensor);
    const round = (ms: number) => Math.round(ms * 100) / 100;
    process.stdout.write(
      `${JSON.stringify({
        format: result.format,
        shape: result.shape,
        sha256: result.sha256,
        width: result.width,
        height: result.height,
        orientation,
        quality: result.quality,
        dct_scale: result.dctScale,
        exif_orientation: result.exifOrientation,
        source_format: result.sourceFormat,
        timing_ms: {
          decode: round(result.timingMs.decode),
          resize: round(result.timingMs.resize),
          normalize: round(result.timingMs.normalize),
          total: round(result.timingMs.total),
        },
        peak_bytes: result.peakBytes,
      })}\n`,
    );
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    process.stderr.write(`${JSON.stringify({ error: { code: err.code, message: err.message } })}\n`);
    process.exitCode = 2;
  }
}

function parse() {
  return parseArgs({
    allowPositionals: true,
    options: {
      out: { type: "string", short: "o" },
      format: { type: "string" },
      orientation: { type: "string" },
      quality: { type: "string" },
      "max-bytes": { type: "string" },
      "max-pixels": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

function positiveInt(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) usageError(`${flag} must be a positive integer`);
  return n;
}

main().catch((err) => {
  process.stderr.write(`preprocess: ${(err as Error).message}\n`);
  process.exit(1);
});
