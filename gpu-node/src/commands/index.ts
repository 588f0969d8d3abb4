/** Every `gpu-node` command, in the order `--help` lists them. */
import { build } from "./build";
import type { Command } from "./command";
import { drain } from "./drain";
import { serve } from "./serve";
import { status } from "./status";

export const COMMANDS: readonly Command[] = [build, serve, status, drain];
