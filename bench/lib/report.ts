/**
 * Where every benchmark writes its figures: its own section of docs/benchmarks.md (between
 * `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`, appended when missing) and its own key of
 * docs/benchmarks.json. Both files are re-read right before writing, so the other benchmarks' sections
 * and keys stay as they are; a benchmarks.json that is not valid JSON is refused, not overwritten.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const docs = fileURLToPath(new URL("../../docs/", import.meta.url));
const HEADER = "# Benchmarks\n\nFigures are produced by the commands named in each section; rerun them to refresh.\n\n";

export function writeBenchSection(name: string, section: string, data: unknown): void {
  const mdPath = `${docs}benchmarks.md`;
  let doc = existsSync(mdPath) ? readFileSync(mdPath, "utf8") : HEADER;
  const re = new RegExp(`<!-- bench:${name}:start -->[\\s\\S]*<!-- bench:${name}:end -->`);
  // A function replacement: the section's own `$` characters stay literal.
  doc = re.test(doc) ? doc.replace(re, () => section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(mdPath, doc);

  const jsonPath = `${docs}benchmarks.json`;
  let json: Record<string, unknown> = {};
  if (existsSync(jsonPath)) {
    try {
      json = JSON.parse(readFileSync(jsonPath, "utf8")) as Record<string, unknown>;
    } catch {
      throw new Error("docs/benchmarks.json is not valid JSON: not overwriting it");
    }
  }
  json[name] = data;
  writeFileSync(jsonPath, `${JSON.stringify(json, null, 2)}\n`);
}
