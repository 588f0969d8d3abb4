/**
 * `gpu-node build`: the Qwen-VL engines for the trtllm engine, from a Hugging Face checkpoint.
 *
 * The steps follow NVIDIA/TensorRT-LLM examples/models/core/qwenvl/README.md (read at main, version.py
 * 1.2.0rc2): ViT -> ONNX -> FP16 TensorRT plan (vit_onnx_trt.py, here qvl_worker/build_vit.py), the Qwen
 * checkpoint converted by examples/models/core/qwen/convert_checkpoint.py with `--dtype float16`, then
 * `trtllm-build` with `--max_prompt_embedding_table_size = 256 × max_batch_size` ("query_token_num *
 * max_batch_size"). The build is resumable: OUT/manifest.json records, per step, a fingerprint of its command
 * and inputs and the size and sha256 of every output file; a step whose fingerprint matches and whose
 * outputs verify is skipped. A step that runs clears its outputs first, and is recorded only once it
 * finished, so an interrupted build leaves nothing that looks done.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { Command, CommandContext } from "./command";

const PYTHON_DIR = fileURLToPath(new URL("../../python", import.meta.url));
const IMAGE_SLOTS = 256;
const MANIFEST = "manifest.json";
const MANIFEST_FORMAT = 1;
const EXIT_FAILED = 1;
const EXIT_INVALID = 2;
const EX_USAGE = 64;

const TOKENIZER_FILES = ["qwen.tiktoken", "tokenization_qwen.py", "tokenizer_config.json"];
const TOKENIZER_OPTIONAL = ["special_tokens_map.json", "config.json", "configuration_qwen.py", "generation_config.json"];
/** trust_remote_code: the ViT export loads the model through the checkpoint's own code. */
const MODEL_CODE = ["configuration_qwen.py", "modeling_qwen.py", "visual.py"];
const CONTAINER_EXAMPLES = "/app/tensorrt_llm/examples";

const USAGE = `usage: gpu-node build --checkpoint DIR --out DIR [options]

Builds the engines of the trtllm engine from a Qwen-VL checkpoint (Qwen/Qwen-VL-Chat or Qwen/Qwen-VL):
  1. vit-onnx     the ViT (transformer.visual) exported to ONNX: input FP32 [B,3,448,448], output [B,256,4096]
  2. vit-plan     the ONNX model built into an FP16 TensorRT plan (batch 1..--vit-max-batch)
  3. llm-convert  the LLM converted by TensorRT-LLM's examples/models/core/qwen/convert_checkpoint.py, float16
  4. llm-build    trtllm-build, max_prompt_embedding_table_size = 256 x --max-batch
  5. tokenizer    the checkpoint's tokenizer files, copied next to the engines
  6. verify       the plan's inputs and outputs, the engine's limits, then OUT/manifest.json is marked complete
Steps whose outputs exist and verify against OUT/manifest.json are skipped: an interrupted build resumes.
Progress goes to stderr; the tools' own output too.

options:
  --checkpoint DIR        the Hugging Face checkpoint (config.json with a 'visual' section, tokenizer, weights)
  --out DIR               where the engines go: OUT/vision/, OUT/llm/, OUT/tokenizer/, OUT/manifest.json
  --max-batch N           in-flight batch size of the LLM engine (default 8)
  --max-input-len N       longest prompt in tokens; an image is 258 (default 2048)
  --max-output-len N      most tokens generated per prompt (default 1024)
  --vit-max-batch N       most images per vision pass (default 8, the protocol's image limit)
  --variant V             qwen-vl | qwen-vl-chat (default: generation_config.json's chat_format)
  --python PATH           Python with TensorRT-LLM, torch and transformers (default python3)
  --trtllm-build PATH     the trtllm-build command (default trtllm-build)
  --trtllm-examples DIR   TensorRT-LLM's examples/ (default $TRTLLM_EXAMPLES, else ${CONTAINER_EXAMPLES})
  --force                 run every step even if its outputs verify
  --dry-run               check the inputs and print the plan with the exact commands; run nothing

exit codes: 0 built (or plan printed), 1 a step failed, 2 invalid checkpoint or output directory, 64 usage`;

export interface BuildConfig {
  checkpoint: string;
  out: string;
  maxBatch: number;
  maxInputLen: number;
  maxOutputLen: number;
  vitMaxBatch: number;
  variant?: "qwen-vl" | "qwen-vl-chat";
  python: string;
  trtllmBuild: string;
  trtllmExamples: string;
  force: boolean;
  dryRun: boolean;
}

interface CheckpointInfo {
  variant: "qwen-vl" | "qwen-vl-chat";
  vocabSize: number;
  hiddenSize: number;
  visualOutputDim: number;
  configSha256: string;
  /** Cheap identity of the weights: config.json's hash plus every file's name and size. */
  fingerprint: string;
}

interface OutputFile {
  path: string;
  bytes: number;
  sha256: string;
}

interface StepRecord {
  fingerprint: string;
  command: string[];
  outputs: OutputFile[];
  digest: string;
  seconds: number;
  finished_at: string;
}

interface Manifest {
  format: number;
  checkpoint: { path: string; variant: string; config_sha256: string; fingerprint: string };
  config: Record<string, number | string>;
  steps: Record<string, StepRecord>;
  complete: boolean;
}

interface Step {
  name: string;
  description: string;
  /** The command shown in the plan and run (absent: in-process only). */
  argv?: string[];
  /** In-process work after (or instead of) the command. */
  action?: () => Promise<void>;
  /** Paths under OUT this step produces (files or directories). */
  outputs: string[];
  deps: string[];
}

class BuildError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

function parseConfig(argv: string[], env: NodeJS.ProcessEnv): BuildConfig {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      checkpoint: { type: "string" },
      out: { type: "string" },
      "max-batch": { type: "string" },
      "max-input-len": { type: "string" },
      "max-output-len": { type: "string" },
      "vit-max-batch": { type: "string" },
      variant: { type: "string" },
      python: { type: "string" },
      "trtllm-build": { type: "string" },
      "trtllm-examples": { type: "string" },
      force: { type: "boolean" },
      "dry-run": { type: "boolean" },
    },
  });
  if (positionals.length) throw new BuildError(EX_USAGE, `unexpected argument '${positionals[0]}'`);
  if (!values.checkpoint) throw new BuildError(EX_USAGE, "--checkpoint DIR is required");
  if (!values.out) throw new BuildError(EX_USAGE, "--out DIR is required");
  const int = (name: string, raw: string | undefined, fallback: number, min: number, max: number) => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!/^\d+$/.test(raw) || n < min || n > max) throw new BuildError(EX_USAGE, `--${name} must be an integer in [${min}, ${max}]`);
    return n;
  };
  const variant = values.variant;
  if (variant !== undefined && variant !== "qwen-vl" && variant !== "qwen-vl-chat")
    throw new BuildError(EX_USAGE, "--variant must be qwen-vl or qwen-vl-chat");
  return {
    checkpoint: path.resolve(values.checkpoint),
    out: path.resolve(values.out),
    maxBatch: int("max-batch", values["max-batch"], 8, 1, 256),
    maxInputLen: int("max-input-len", values["max-input-len"], 2048, IMAGE_SLOTS + 3, 32_768),
    maxOutputLen: int("max-output-len", values["max-output-len"], 1024, 1, 32_768),
    vitMaxBatch: int("vit-max-batch", values["vit-max-batch"], 8, 1, 64),
    variant,
    python: values.python ?? "python3",
    trtllmBuild: values["trtllm-build"] ?? "trtllm-build",
    trtllmExamples: path.resolve(values["trtllm-examples"] ?? env.TRTLLM_EXAMPLES ?? CONTAINER_EXAMPLES),
    force: values.force ?? false,
    dryRun: values["dry-run"] ?? false,
  };
}

async function readJson(file: string): Promise<unknown> {
  return JSON.parse(await fs.readFile(file, "utf8"));
}

function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Checks the checkpoint is a complete Qwen-VL checkpoint; every problem is reported, then exit 2. */
async function inspectCheckpoint(config: BuildConfig): Promise<CheckpointInfo> {
  const dir = config.checkpoint;
  const stat = await fs.stat(dir).catch(() => undefined);
  if (!stat?.isDirectory()) throw new BuildError(EXIT_INVALID, `--checkpoint ${dir}: no such directory`);
  const problems: string[] = [];
  const names = new Set(await fs.readdir(dir));
  let hf: Record<string, unknown> = {};
  let configText = "";
  try {
    configText = await fs.readFile(path.join(dir, "config.json"), "utf8");
    const parsed: unknown = JSON.parse(configText);
    if (typeof parsed !== "object" || parsed === null) throw new Error("not an object");
    hf = parsed as Record<string, unknown>;
  } catch (err) {
    problems.push(`config.json: ${names.has("config.json") ? `not valid JSON (${(err as Error).message})` : "missing"}`);
  }
  const visual = hf.visual as Record<string, unknown> | undefined;
  if (configText && (typeof visual !== "object" || visual === null)) {
    problems.push("config.json has no 'visual' section: this is not a Qwen-VL checkpoint");
  } else if (visual) {
    if (visual.image_size !== 448) problems.push(`config.json: visual.image_size is ${visual.image_size}, Qwen-VL's is 448`);
    if (typeof visual.image_start_id !== "number") problems.push("config.json: visual.image_start_id is missing");
    if (typeof visual.output_dim !== "number") problems.push("config.json: visual.output_dim is missing");
  }
  if (configText && typeof hf.vocab_size !== "number") problems.push("config.json: vocab_size is missing");
  if (configText && typeof hf.hidden_size !== "number") problems.push("config.json: hidden_size is missing");
  for (const f of [...TOKENIZER_FILES, ...MODEL_CODE])
    if (!names.has(f)) problems.push(`${f}: missing (tokenizer and model code come with the checkpoint)`);

  const index = ["model.safetensors.index.json", "pytorch_model.bin.index.json"].find((f) => names.has(f));
  if (index) {
    try {
      const map = ((await readJson(path.join(dir, index))) as { weight_map?: Record<string, string> }).weight_map ?? {};
      const shards = [...new Set(Object.values(map))];
      if (shards.length === 0) problems.push(`${index}: weight_map is empty`);
      for (const shard of shards) if (!names.has(shard)) problems.push(`${shard}: missing (listed in ${index})`);
    } catch (err) {
      problems.push(`${index}: not valid JSON (${(err as Error).message})`);
    }
  } else if (![...names].some((f) => /^(model.*\.safetensors|pytorch_model.*\.bin)$/.test(f))) {
    problems.push("no weights: expected model*.safetensors or pytorch_model*.bin (with their index when sharded)");
  }

  let variant = config.variant;
  if (!variant) {
    const gen = (await readJson(path.join(dir, "generation_config.json")).catch(() => undefined)) as { chat_format?: string } | undefined;
    if (gen?.chat_format === "chatml") variant = "qwen-vl-chat";
    else if (gen?.chat_format === "raw") variant = "qwen-vl";
    else problems.push("cannot tell the variant: generation_config.json has no chat_format 'chatml' or 'raw'; pass --variant");
  }
  if (problems.length) throw new BuildError(EXIT_INVALID, `invalid checkpoint ${dir}:\n  - ${problems.join("\n  - ")}`);

  const listing = [];
  for (const name of [...names].sort()) {
    const s = await fs.stat(path.join(dir, name));
    if (s.isFile()) listing.push([name, s.size]);
  }
  const configSha256 = sha256(configText);
  return {
    variant: variant!,
    vocabSize: hf.vocab_size as number,
    hiddenSize: hf.hidden_size as number,
    visualOutputDim: visual!.output_dim as number,
    configSha256,
    fingerprint: sha256(JSON.stringify({ configSha256, listing })),
  };
}

async function listFiles(root: string, rel: string): Promise<string[]> {
  const full = path.join(root, rel);
  const stat = await fs.stat(full).catch(() => undefined);
  if (!stat) return [];
  if (stat.isFile()) return [rel];
  const out: string[] = [];
  for (const entry of (await fs.readdir(full)).sort()) out.push(...(await listFiles(root, path.join(rel, entry))));
  return out;
}

async function hashFile(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function describeOutputs(out: string, outputs: string[]): Promise<OutputFile[]> {
  const files: OutputFile[] = [];
  for (const rel of outputs) {
    for (const f of await listFiles(out, rel)) {
      const full = path.join(out, f);
      files.push({ path: f, bytes: (await fs.stat(full)).size, sha256: await hashFile(full) });
    }
  }
  return files;
}

function digestOf(files: OutputFile[]): string {
  return sha256(JSON.stringify(files.map((f) => [f.path, f.bytes, f.sha256])));
}

/** Do the recorded outputs still exist, byte for byte (or, with `quick`, by size)? */
async function outputsVerify(out: string, step: Step, record: StepRecord, quick: boolean): Promise<boolean> {
  const present: string[] = [];
  for (const rel of step.outputs) present.push(...(await listFiles(out, rel)));
  if (present.length === 0 && step.outputs.length > 0) return false;
  if (JSON.stringify(present.sort()) !== JSON.stringify(record.outputs.map((f) => f.path).sort())) return false;
  for (const f of record.outputs) {
    const full = path.join(out, f.path);
    if ((await fs.stat(full)).size !== f.bytes) return false;
    if (!quick && (await hashFile(full)) !== f.sha256) return false;
  }
  return true;
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

function planSteps(config: BuildConfig, ckpt: CheckpointInfo): Step[] {
  const out = (...p: string[]) => path.join(config.out, ...p);
  const maxSeqLen = config.maxInputLen + config.maxOutputLen;
  const tableSize = IMAGE_SLOTS * config.maxBatch;
  const onnx = out("vision", "onnx", "visual_encoder.onnx");
  const plan = out("vision", "visual_encoder_fp16.plan");
  const convert = path.join(config.trtllmExamples, "models", "core", "qwen", "convert_checkpoint.py");
  return [
    {
      name: "vit-onnx",
      description: "export the ViT to ONNX",
      argv: [config.python, "-m", "qvl_worker.build_vit", "onnx", "--checkpoint", config.checkpoint, "--out", onnx],
      outputs: ["vision/onnx"],
      deps: [],
    },
    {
      name: "vit-plan",
      description: "build the FP16 TensorRT plan of the ViT",
      argv: [
        config.python,
        ...["-m", "qvl_worker.build_vit", "plan", "--onnx", onnx, "--plan", plan],
        ...["--min-batch", "1", "--opt-batch", "1", "--max-batch", String(config.vitMaxBatch)],
      ],
      outputs: ["vision/visual_encoder_fp16.plan"],
      deps: ["vit-onnx"],
    },
    {
      name: "llm-convert",
      description: "convert the LLM checkpoint (TensorRT-LLM's Qwen convert_checkpoint.py, float16)",
      argv: [config.python, convert, "--model_dir", config.checkpoint, "--output_dir", out("checkpoint"), "--dtype", "float16"],
      outputs: ["checkpoint"],
      deps: [],
    },
    {
      name: "llm-build",
      description: `build the LLM engine (prompt table ${IMAGE_SLOTS} x ${config.maxBatch} = ${tableSize} rows)`,
      argv: [
        config.trtllmBuild,
        ...["--checkpoint_dir", out("checkpoint"), "--output_dir", out("llm")],
        ...[
          "--gemm_plugin",
          "float16",
          "--gpt_attention_plugin",
          "float16",
          "--remove_input_padding",
          "enable",
          "--kv_cache_type",
          "paged",
        ],
        ...["--max_batch_size", String(config.maxBatch), "--max_input_len", String(config.maxInputLen), "--max_seq_len", String(maxSeqLen)],
        ...["--max_prompt_embedding_table_size", String(tableSize)],
      ],
      outputs: ["llm"],
      deps: ["llm-convert"],
    },
    {
      name: "tokenizer",
      description: `copy the tokenizer (${TOKENIZER_FILES.join(", ")}) to ${out("tokenizer")}`,
      action: async () => {
        await fs.mkdir(out("tokenizer"), { recursive: true });
        for (const f of [...TOKENIZER_FILES, ...TOKENIZER_OPTIONAL]) {
          if (existsSync(path.join(config.checkpoint, f))) await fs.copyFile(path.join(config.checkpoint, f), out("tokenizer", f));
        }
      },
      outputs: ["tokenizer"],
      deps: [],
    },
    {
      name: "verify",
      description: "check the plan's I/O and the engine's limits",
      argv: [config.python, "-m", "qvl_worker.build_vit", "inspect", "--plan", plan, "--hidden", String(ckpt.visualOutputDim)],
      action: async () => {
        const engine = (await readJson(out("llm", "config.json"))) as {
          build_config?: Record<string, number>;
          pretrained_config?: Record<string, number>;
        };
        const build = engine.build_config ?? {};
        const want: Record<string, number> = {
          max_batch_size: config.maxBatch,
          max_input_len: config.maxInputLen,
          max_seq_len: maxSeqLen,
          max_prompt_embedding_table_size: tableSize,
        };
        const wrong = Object.entries(want).filter(([k, v]) => build[k] !== v);
        if (engine.pretrained_config?.vocab_size !== ckpt.vocabSize) wrong.push(["vocab_size", ckpt.vocabSize]);
        if (wrong.length) throw new Error(`llm/config.json: ${wrong.map(([k, v]) => `${k} should be ${v}`).join(", ")}`);
        if (!(await listFiles(config.out, "llm")).some((f) => f.endsWith(".engine"))) throw new Error("llm/: no .engine file");
      },
      outputs: [],
      deps: ["vit-plan", "llm-build", "tokenizer"],
    },
  ];
}

async function runCommand(argv: string[], ctx: CommandContext, capture: boolean): Promise<string> {
  const env = { ...ctx.env, PYTHONPATH: [PYTHON_DIR, ctx.env.PYTHONPATH].filter(Boolean).join(":"), PYTHONUNBUFFERED: "1" };
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { env, stdio: ["ignore", "pipe", "pipe"] });
    let captured = "";
    child.stdout.setEncoding("utf8").on("data", (t: string) => {
      if (capture) captured += t;
      else ctx.stderr(t);
    });
    child.stderr.setEncoding("utf8").on("data", (t: string) => ctx.stderr(t));
    child.on("error", (err) => reject(new Error(`cannot run ${argv[0]}: ${err.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) resolve(captured);
      else
        reject(
          new Error(
            `${path.basename(argv[0])} failed (${signal ? `signal ${signal}` : `exit code ${code}`})${captured ? `: ${captured.trim()}` : ""}`,
          ),
        );
    });
  });
}

async function loadManifest(out: string): Promise<Manifest | undefined> {
  try {
    const m = (await readJson(path.join(out, MANIFEST))) as Manifest;
    return m.format === MANIFEST_FORMAT && typeof m.steps === "object" ? m : undefined;
  } catch {
    return undefined;
  }
}

async function saveManifest(out: string, manifest: Manifest): Promise<void> {
  const tmp = path.join(out, `${MANIFEST}.tmp`);
  await fs.writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
  await fs.rename(tmp, path.join(out, MANIFEST));
}

function fingerprintOf(step: Step, ckpt: CheckpointInfo, manifest: Manifest): string | undefined {
  const deps = step.deps.map((d) => manifest.steps[d]?.digest);
  if (deps.some((d) => d === undefined)) return undefined;
  // The tool's location (argv[0]) is not part of what was built.
  return sha256(JSON.stringify({ step: step.name, args: step.argv?.slice(1) ?? [], checkpoint: ckpt.fingerprint, deps }));
}

async function toolNotes(config: BuildConfig): Promise<string[]> {
  const notes: string[] = [];
  const onPath = async (cmd: string) => {
    if (cmd.includes("/")) return existsSync(cmd);
    for (const dir of (process.env.PATH ?? "").split(":")) if (dir && existsSync(path.join(dir, cmd))) return true;
    return false;
  };
  if (!(await onPath(config.python))) notes.push(`${config.python} not found`);
  if (!(await onPath(config.trtllmBuild))) notes.push(`${config.trtllmBuild} not found (install TensorRT-LLM or pass --trtllm-build)`);
  const convert = path.join(config.trtllmExamples, "models", "core", "qwen", "convert_checkpoint.py");
  if (!existsSync(convert)) notes.push(`${convert} not found (pass --trtllm-examples or set TRTLLM_EXAMPLES)`);
  return notes;
}

async function build_(config: BuildConfig, ctx: CommandContext): Promise<number> {
  const ckpt = await inspectCheckpoint(config);
  const outStat = await fs.stat(config.out).catch(() => undefined);
  if (outStat && !outStat.isDirectory()) throw new BuildError(EXIT_INVALID, `--out ${config.out} exists and is not a directory`);

  const steps = planSteps(config, ckpt);
  const buildConfig = {
    max_batch: config.maxBatch,
    max_input_len: config.maxInputLen,
    max_output_len: config.maxOutputLen,
    max_seq_len: config.maxInputLen + config.maxOutputLen,
    max_prompt_embedding_table_size: IMAGE_SLOTS * config.maxBatch,
    vit_max_batch: config.vitMaxBatch,
    dtype: "float16",
  };
  const previous = config.force ? undefined : await loadManifest(config.out);
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    checkpoint: { path: config.checkpoint, variant: ckpt.variant, config_sha256: ckpt.configSha256, fingerprint: ckpt.fingerprint },
    config: buildConfig,
    steps: { ...(previous?.steps ?? {}) },
    complete: false,
  };
  const progress = (n: number, step: Step, text: string) => ctx.stderr(`gpu-node build: [${n}/${steps.length}] ${step.name}: ${text}\n`);

  if (config.dryRun) {
    ctx.stdout(`Qwen-VL engine build plan (nothing is run)\n`);
    ctx.stdout(`  checkpoint  ${config.checkpoint} (${ckpt.variant}, vocab ${ckpt.vocabSize}, hidden ${ckpt.hiddenSize})\n`);
    ctx.stdout(`  out         ${config.out}\n`);
    ctx.stdout(
      `  config      ${Object.entries(buildConfig)
        .map(([k, v]) => `${k}=${v}`)
        .join(" ")}\n\n`,
    );
    const willRun = new Set<string>();
    for (const [i, step] of steps.entries()) {
      const record = manifest.steps[step.name];
      const upstreamRuns = step.deps.some((d) => willRun.has(d));
      const fp = upstreamRuns ? undefined : fingerprintOf(step, ckpt, manifest);
      const skip = !!record && fp === record.fingerprint && (await outputsVerify(config.out, step, record, true));
      if (!skip) willRun.add(step.name);
      ctx.stdout(`${i + 1}. ${step.name}: ${step.description}\n`);
      if (step.argv) ctx.stdout(`   $ ${step.argv.map(shellQuote).join(" ")}\n`);
      ctx.stdout(`   ${skip ? "skip: outputs recorded in the manifest are present (hashes are checked when run)" : "run"}\n`);
    }
    const notes = await toolNotes(config);
    if (notes.length) ctx.stdout(`\nnotes (this host):\n${notes.map((n) => `  - ${n}`).join("\n")}\n`);
    return 0;
  }

  await fs.mkdir(config.out, { recursive: true });
  for (const [i, step] of steps.entries()) {
    const n = i + 1;
    const record = manifest.steps[step.name];
    const fp = fingerprintOf(step, ckpt, manifest);
    if (record && fp === record.fingerprint && (await outputsVerify(config.out, step, record, false))) {
      progress(n, step, "skipped (outputs verified)");
      continue;
    }
    delete manifest.steps[step.name];
    manifest.complete = false;
    await saveManifest(config.out, manifest);
    for (const rel of step.outputs) await fs.rm(path.join(config.out, rel), { recursive: true, force: true });
    const started = Date.now();
    try {
      if (step.argv) {
        progress(n, step, `running: ${step.argv.map(shellQuote).join(" ")}`);
        const stdout = await runCommand(step.argv, ctx, step.name === "verify");
        if (step.name === "verify") {
          const report = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}") as { ok?: boolean };
          if (!report.ok) throw new Error(`the ViT plan does not have the expected inputs/outputs: ${stdout.trim()}`);
        }
      } else {
        progress(n, step, step.description);
      }
      await step.action?.();
    } catch (err) {
      progress(n, step, `failed: ${(err as Error).message}`);
      return EXIT_FAILED;
    }
    const outputs = await describeOutputs(config.out, step.outputs);
    if (step.outputs.length && outputs.length === 0) {
      progress(n, step, `failed: it produced nothing under ${step.outputs.join(", ")}`);
      return EXIT_FAILED;
    }
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    manifest.steps[step.name] = {
      fingerprint: fingerprintOf(step, ckpt, manifest)!,
      command: step.argv ?? [],
      outputs,
      digest: digestOf(outputs),
      seconds,
      finished_at: new Date().toISOString(),
    };
    await saveManifest(config.out, manifest);
    progress(n, step, `done in ${seconds} s`);
  }
  manifest.complete = true;
  await saveManifest(config.out, manifest);
  ctx.stdout(
    `engines ready in ${config.out} (${ckpt.variant}); serve them with: gpu-node serve --engine trtllm --engine-dir ${config.out}\n`,
  );
  return 0;
}

export const build: Command = {
  name: "build",
  description: "build the Qwen-VL TensorRT engines (ViT plan + LLM engine) from a checkpoint",
  usage: USAGE,
  async run(argv, ctx) {
    let config: BuildConfig;
    try {
      config = parseConfig(argv, ctx.env);
    } catch (err) {
      ctx.stderr(`gpu-node build: ${(err as Error).message}\n\n${USAGE}\n`);
      return err instanceof BuildError ? err.exitCode : EX_USAGE;
    }
    try {
      return await build_(config, ctx);
    } catch (err) {
      if (err instanceof BuildError) {
        ctx.stderr(`gpu-node build: ${err.message}\n`);
        return err.exitCode;
      }
      throw err;
    }
  },
};
