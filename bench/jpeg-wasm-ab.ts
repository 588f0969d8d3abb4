/**
 * `npm run bench:jpeg-ab -- A.wasm B.wasm [files…]`: two builds of libjpeg-turbo.wasm side by side, in one
 * Node process, taking turns per run: the time of one streamed decode + resize to 448×448 (`readResized`,
 * exact and fast scale) per file, min and median, and whether both builds give the same bytes. For
 * measuring a change to the build (e.g. `git show REV:src/image/codecs/libjpeg-turbo/libjpeg-turbo.wasm > /tmp/a.wasm`).
 * Env: BENCH_RUNS (default 7). Default files: the fixture JPEGs of 8 MP or more.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createJpegDecoder, fastDctScale, type JpegScaleDenom } from "../src/image/codecs/libjpeg-turbo/index";

const images = fileURLToPath(new URL("../test/fixtures/images/", import.meta.url));
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const [a, b, ...rest] = process.argv.slice(2);
if (!a || !b) {
  console.error("usage: npm run bench:jpeg-ab -- A.wasm B.wasm [file.jpg …]");
  process.exit(2);
}
const files = rest.length ? rest : ["sunset_12mp_prog.jpg", "kleiber_20mp.jpg", "exif_rot6_4032x3024.jpg"].map((f) => images + f);
const builds = await Promise.all(
  [a, b].map(async (path) => ({
    path,
    decoder: await createJpegDecoder(await WebAssembly.compile(readFileSync(path)), { maxMemoryBytes: 0 }),
  })),
);
const stats = (xs: number[]) => {
  const s = [...xs].sort((p, q) => p - q);
  return { min: s[0], median: s[s.length >> 1] };
};
console.log(`| file | scale | ${a} min / median ms | ${b} min / median ms | B / A (median) | same bytes |`);
console.log("|---|---:|---:|---:|---:|:---:|");
for (const file of files) {
  const bytes = readFileSync(file);
  for (const fast of [false, true]) {
    const times: number[][] = [[], []];
    const digests: string[] = ["", ""];
    let scale: JpegScaleDenom = 1;
    for (let run = 0; run < RUNS + 1; run++) {
      builds.forEach(({ decoder }, i) => {
        const header = decoder.open(bytes);
        scale = fast ? fastDctScale(header.width, header.height, 448, 448) : 1;
        const t = performance.now();
        const out = decoder.readResized({ outWidth: 448, outHeight: 448, scaleDenom: scale });
        if (run > 0) times[i].push(performance.now() - t); // the first run warms up
        digests[i] = createHash("sha256").update(out.data).digest("hex");
      });
    }
    const [sa, sb] = times.map(stats);
    const name = file.split("/").pop();
    console.log(
      `| ${name} | 1/${scale} | ${sa.min.toFixed(1)} / ${sa.median.toFixed(1)} | ${sb.min.toFixed(1)} / ${sb.median.toFixed(1)} | ${(sb.median / sa.median).toFixed(2)} | ${digests[0] === digests[1] ? "yes" : "**no**"} |`,
    );
  }
}
