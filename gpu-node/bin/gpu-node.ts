/**
 * `gpu-node`: parses argv, runs one command, owns the exit code — nothing else.
 */
import { COMMANDS } from "../src/commands/index";

const HELP = [
  "usage: gpu-node <command> [options]",
  "",
  "Build, serve and operate a Qwen-VL GPU node (TensorRT-LLM, or the simulated test engine).",
  "",
  "commands:",
  ...COMMANDS.map((c) => `  ${c.name.padEnd(8)} ${c.description}`),
  "",
  "Run `gpu-node <command> --help` for a command's options.",
].join("\n");

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(`${HELP}\n`);
    return name ? 0 : 64;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`gpu-node: unknown command '${name}'\n\n${HELP}\n`);
    return 64;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(`${command.usage}\n`);
    return 0;
  }
  return command.run(rest, {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`gpu-node: ${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
