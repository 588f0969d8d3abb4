/**
 * `gpu-node build`: input checks and the dry-run plan (exact commands), and the resumable run itself with
 * fake tools (gpu-node/test/fixtures/fake-build-tool.mjs stands in for python3 and trtllm-build) — what
 * runs, what is skipped, what a changed flag or a damaged output reruns.
 */
import { existsSync } from "node:fs";
import * as fs from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { build } from "../src/commands/build";

const FAKE_TOOL = fileURLToPath(new URL("./fixtures/fake-build-tool.mjs", import.meta.url));
let dir: string;
let ckpt: string;
let out: string;
let examples: string;
let log: string;

async function makeCheckpoint(root: string, edit: (files: Record<string, string>) => void = () => {}): Promise<void> {
  const files: Record<string, string> = {
    "config.json": JSON.stringify({
      model_type: "qwen",
      architectures: ["QWenLMHeadModel"],
      vocab_size: 151936,
      hidden_size: 4096,
      visual: {
        heads: 16,
        image_size: 448,
        image_start_id: 151857,
        layers: 48,
        mlp_ratio: 4.9231,
        output_dim: 4096,
        patch_size: 14,
        width: 1664,
      },
    }),
    "generation_config.json": JSON.stringify({ chat_format: "chatml", eos_token_id: 151643 }),
    "qwen.tiktoken": "IQ== 0\n",
    "tokenization_qwen.py": "# QWenTokenizer\n",
    "tokenizer_config.json": JSON.stringify({ tokenizer_class: "QWenTokenizer" }),
    "configuration_qwen.py": "#\n",
    "modeling_qwen.py": "#\n",
    "visual.py": "#\n",
    "pytorch_model.bin.index.json": JSON.stringify({
      weight_map: { "a.weight": "pytorch_model-00001-of-00002.bin", "b.weight": "pytorch_model-00002-of-00002.bin" },
    }),
    "pytorch_model-00001-of-00002.bin": "weights-1",
    "pytorch_model-00002-of-00002.bin": "weights-2",
  };
  edit(files);
  await fs.mkdir(root, { recursive: true });
  for (const [name, text] of Object.entries(files)) await fs.writeFile(path.join(root, name), text);
}

async function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  let stdout = "";
  let stderr = "";
  const code = await build.run(args, {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
    env: { ...process.env, FAKE_TOOL_LOG: log, ...env },
  });
  return { code, stdout, stderr };
}

const base = () => ["--checkpoint", ckpt, "--out", out, "--python", FAKE_TOOL, "--trtllm-build", FAKE_TOOL, "--trtllm-examples", examples];

async function ran(): Promise<string[]> {
  const text = existsSync(log) ? await fs.readFile(log, "utf8") : "";
  await fs.rm(log, { force: true });
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(" ")[0]);
}

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(tmpdir(), "gpu-node-build-"));
  ckpt = path.join(dir, "Qwen-VL-Chat");
  out = path.join(dir, "engines");
  examples = path.join(dir, "examples");
  log = path.join(dir, "tool.log");
  await makeCheckpoint(ckpt);
  await fs.mkdir(path.join(examples, "models/core/qwen"), { recursive: true });
  await fs.writeFile(path.join(examples, "models/core/qwen/convert_checkpoint.py"), "# NVIDIA's script\n");
});

afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe("gpu-node build --dry-run", () => {
  it("checks the checkpoint and prints the exact commands, running nothing", async () => {
    const r = await run([
      "--checkpoint",
      ckpt,
      "--out",
      out,
      "--max-batch",
      "4",
      "--max-input-len",
      "1024",
      "--max-output-len",
      "512",
      "--dry-run",
      "--trtllm-examples",
      examples,
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`checkpoint  ${ckpt} (qwen-vl-chat, vocab 151936, hidden 4096)`);
    const commands = r.stdout
      .split("\n")
      .filter((l) => l.startsWith("   $ "))
      .map((l) => l.slice(5));
    expect(commands).toEqual([
      `python3 -m qvl_worker.build_vit onnx --checkpoint ${ckpt} --out ${out}/vision/onnx/visual_encoder.onnx`,
      `python3 -m qvl_worker.build_vit plan --onnx ${out}/vision/onnx/visual_encoder.onnx --plan ${out}/vision/visual_encoder_fp16.plan --min-batch 1 --opt-batch 1 --max-batch 8`,
      `python3 ${examples}/models/core/qwen/convert_checkpoint.py --model_dir ${ckpt} --output_dir ${out}/checkpoint --dtype float16`,
      `trtllm-build --checkpoint_dir ${out}/checkpoint --output_dir ${out}/llm --gemm_plugin float16 --gpt_attention_plugin float16 ` +
        "--remove_input_padding enable --kv_cache_type paged --max_batch_size 4 --max_input_len 1024 --max_seq_len 1536 --max_prompt_embedding_table_size 1024",
      `python3 -m qvl_worker.build_vit inspect --plan ${out}/vision/visual_encoder_fp16.plan --hidden 4096`,
    ]);
    expect(r.stdout).toMatch(/5\. tokenizer: copy the tokenizer/);
    expect(r.stdout.match(/^ {3}run$/gm)).toHaveLength(6);
    expect(existsSync(out)).toBe(false);
    expect(await ran()).toEqual([]);
  });

  it("defaults to a batch of 8 and a 2048-row prompt table", async () => {
    const r = await run(["--checkpoint", ckpt, "--out", out, "--dry-run"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--max_batch_size 8 --max_input_len 2048 --max_seq_len 3072 --max_prompt_embedding_table_size 2048");
    expect(r.stdout).toContain("max_prompt_embedding_table_size=2048");
  });

  it("takes the variant from generation_config.json, or --variant", async () => {
    await makeCheckpoint(ckpt, (f) => {
      f["generation_config.json"] = JSON.stringify({ chat_format: "raw" });
    });
    expect((await run([...base(), "--dry-run"])).stdout).toContain("(qwen-vl, vocab");
    await fs.rm(path.join(ckpt, "generation_config.json"));
    const r = await run([...base(), "--dry-run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("pass --variant");
    expect((await run([...base(), "--dry-run", "--variant", "qwen-vl-chat"])).code).toBe(0);
  });

  it("refuses a missing checkpoint with exit code 2", async () => {
    const r = await run(["--checkpoint", path.join(dir, "nope"), "--out", out, "--dry-run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--checkpoint ${path.join(dir, "nope")}: no such directory`);
  });

  it("refuses a checkpoint that is not Qwen-VL's, listing every problem", async () => {
    const bad = path.join(dir, "Qwen-7B");
    await makeCheckpoint(bad, (f) => {
      f["config.json"] = JSON.stringify({ model_type: "qwen", vocab_size: 151936, hidden_size: 4096 });
      delete f["qwen.tiktoken"];
      delete f["pytorch_model-00002-of-00002.bin"];
    });
    const r = await run(["--checkpoint", bad, "--out", out, "--dry-run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("config.json has no 'visual' section: this is not a Qwen-VL checkpoint");
    expect(r.stderr).toContain("qwen.tiktoken: missing");
    expect(r.stderr).toContain("pytorch_model-00002-of-00002.bin: missing (listed in pytorch_model.bin.index.json)");
  });

  it("refuses bad config.json and missing weights", async () => {
    const bad = path.join(dir, "broken");
    await makeCheckpoint(bad, (f) => {
      f["config.json"] = "{ not json";
      delete f["pytorch_model.bin.index.json"];
      delete f["pytorch_model-00001-of-00002.bin"];
      delete f["pytorch_model-00002-of-00002.bin"];
    });
    const r = await run(["--checkpoint", bad, "--out", out, "--dry-run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/config\.json: not valid JSON/);
    expect(r.stderr).toContain("no weights");
  });

  it("refuses an --out that is a file", async () => {
    await fs.writeFile(out, "");
    const r = await run(["--checkpoint", ckpt, "--out", out, "--dry-run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("is not a directory");
  });

  it("gives usage errors exit code 64", async () => {
    expect((await run(["--checkpoint", ckpt])).code).toBe(64);
    expect((await run(["--checkpoint", ckpt, "--out", out, "--max-batch", "0"])).code).toBe(64);
    expect((await run(["--checkpoint", ckpt, "--out", out, "--max-batch", "2.5"])).code).toBe(64);
    expect((await run(["--checkpoint", ckpt, "--out", out, "--bogus"])).code).toBe(64);
    expect((await run(["--checkpoint", ckpt, "--out", out, "--variant", "qwen2-vl"])).code).toBe(64);
  });

  it("has help text naming every flag", () => {
    for (const flag of [
      "--checkpoint",
      "--out",
      "--max-batch",
      "--max-input-len",
      "--max-output-len",
      "--dry-run",
      "--force",
      "--trtllm-examples",
    ]) {
      expect(build.usage).toContain(flag);
    }
  });
});

describe("gpu-node build (fake tools)", () => {
  it("builds, records a manifest, and skips verified steps on the next run", async () => {
    const first = await run(base());
    expect(first.code, first.stderr).toBe(0);
    expect(await ran()).toEqual(["vit-onnx", "vit-plan", "llm-convert", "llm-build", "vit-inspect"]);
    expect(first.stderr).toMatch(/\[4\/6\] llm-build: running: .*--max_prompt_embedding_table_size 2048/);
    expect(first.stderr).toMatch(/\[6\/6\] verify: done in/);
    const manifest = JSON.parse(await fs.readFile(path.join(out, "manifest.json"), "utf8"));
    expect(manifest.complete).toBe(true);
    expect(manifest.checkpoint.variant).toBe("qwen-vl-chat");
    expect(manifest.config).toMatchObject({ max_batch: 8, max_prompt_embedding_table_size: 2048, dtype: "float16" });
    expect(manifest.steps["vit-onnx"].outputs.map((f: { path: string }) => f.path)).toEqual([
      "vision/onnx/visual_encoder.onnx",
      "vision/onnx/visual_encoder.onnx.data",
    ]);
    expect(manifest.steps["llm-build"].outputs.every((f: { sha256: string }) => /^[0-9a-f]{64}$/.test(f.sha256))).toBe(true);
    expect(await fs.readFile(path.join(out, "tokenizer/qwen.tiktoken"), "utf8")).toBe("IQ== 0\n");

    const second = await run(base());
    expect(second.code).toBe(0);
    expect(await ran()).toEqual([]);
    expect(second.stderr.match(/skipped \(outputs verified\)/g)).toHaveLength(6);

    const plan = await run([...base(), "--dry-run"]);
    expect(plan.stdout.match(/^ {3}skip: /gm)).toHaveLength(6);
  });

  it("reruns only what a changed flag affects", async () => {
    expect((await run(base())).code).toBe(0);
    await ran();
    const r = await run([...base(), "--max-batch", "4"]);
    expect(r.code).toBe(0);
    expect(await ran()).toEqual(["llm-build", "vit-inspect"]);
    const manifest = JSON.parse(await fs.readFile(path.join(out, "manifest.json"), "utf8"));
    expect(manifest.config.max_prompt_embedding_table_size).toBe(1024);
  });

  it("reruns a step whose output was damaged; dependents rerun only if the output changed", async () => {
    expect((await run(base())).code).toBe(0);
    await ran();
    await fs.appendFile(path.join(out, "vision/visual_encoder_fp16.plan"), "x");
    let r = await run(base());
    expect(r.code).toBe(0);
    // The fake rebuilds the same bytes, so what verify checked is unchanged: fingerprints are content-based.
    expect(await ran()).toEqual(["vit-plan"]);
    expect(r.stderr).toMatch(/\[6\/6\] verify: skipped/);
    await fs.rm(path.join(out, "tokenizer/tokenizer_config.json"));
    r = await run(base());
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/\[5\/6\] tokenizer: copy the tokenizer/);
    expect(existsSync(path.join(out, "tokenizer/tokenizer_config.json"))).toBe(true);
    // A plan with other bytes invalidates the verification.
    r = await run([...base(), "--vit-max-batch", "4"]);
    expect(r.code).toBe(0);
    expect(await ran()).toEqual(["vit-plan", "vit-inspect"]);
  });

  it("resumes after a failed step", async () => {
    const failed = await run(base(), { FAKE_TOOL_FAIL: "llm-build" });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/\[4\/6\] llm-build: failed: .*exit code 1/);
    expect(await ran()).toEqual(["vit-onnx", "vit-plan", "llm-convert", "llm-build"]);
    const manifest = JSON.parse(await fs.readFile(path.join(out, "manifest.json"), "utf8"));
    expect(manifest.complete).toBe(false);
    expect(Object.keys(manifest.steps)).toEqual(["vit-onnx", "vit-plan", "llm-convert"]);
    const resumed = await run(base());
    expect(resumed.code).toBe(0);
    expect(await ran()).toEqual(["llm-build", "vit-inspect"]);
  });

  it("fails the build when a tool is missing", async () => {
    const r = await run([...base(), "--trtllm-build", path.join(dir, "no-such-trtllm-build")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/llm-build: failed: cannot run .*no-such-trtllm-build/);
  });
});
