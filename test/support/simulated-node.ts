/**
 * Starts `gpu-node serve --engine simulated` as a child process on 127.0.0.1 (a free port) and waits
 * for its `{"event":"listening","url":…}` line. Shared by the end-to-end tests, the workerd tests'
 * global setup and the benchmarks. Both pipes are drained (a full pipe would stall the node); the last
 * lines are kept for error messages.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));

export interface SimulatedNode {
  url: string;
  child: ChildProcess;
  /** The node's last output lines (stderr logs and stdout). */
  logs: string[];
}

export interface SimulatedNodeOptions {
  secret: string;
  /** Further `serve` flags, e.g. `["--simulate", "prefill_ms=50", "--capacity", "8"]`. */
  args?: string[];
  /** Also called with every chunk of the node's stderr (e.g. to prefix and keep logs elsewhere). */
  onLog?: (chunk: Buffer) => void;
  startTimeoutMs?: number;
}

export function startSimulatedNode(options: SimulatedNodeOptions): Promise<SimulatedNode> {
  const logs: string[] = [];
  const keep = (chunk: Buffer) => {
    logs.push(chunk.toString());
    if (logs.length > 200) logs.shift();
  };
  const child = spawn(
    process.execPath,
    [
      `${root}gpu-node/bin/gpu-node.mjs`,
      "serve",
      "--engine",
      "simulated",
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--node-secret",
      options.secret,
      ...(options.args ?? []),
    ],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stderr?.on("data", (chunk: Buffer) => {
    keep(chunk);
    options.onLog?.(chunk);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the simulated node did not start\n${logs.join("")}`)),
      options.startTimeoutMs ?? 30_000,
    );
    createInterface({ input: child.stdout! }).on("line", (line) => {
      keep(Buffer.from(`${line}\n`));
      try {
        const msg = JSON.parse(line) as { event?: string; url?: string };
        if (msg.event === "listening" && msg.url) {
          clearTimeout(timer);
          resolve({ url: msg.url, child, logs });
        }
      } catch {
        // not JSON
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the simulated node exited (${code})\n${logs.join("")}`));
    });
  });
}
