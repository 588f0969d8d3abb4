/**
 * A CLI command: parsed and run by bin/gpu-node.ts, which owns exit codes and nothing else.
 */
export interface CommandContext {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
}

export interface Command {
  name: string;
  description: string;
  /** Full help text shown by `gpu-node <name> --help`. */
  usage: string;
  /** Returns the process exit code. Usage errors: 64 (EX_USAGE). */
  run(argv: string[], ctx: CommandContext): Promise<number>;
}
