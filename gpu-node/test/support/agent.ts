/**
 * A real agent on loopback with the simulated engine, its logs captured.
 */
import type { LogRecord } from "../../src/agent/log";
import { type NodeOptions, type RunningNode, startNode } from "../../src/agent/node";
import { SimulatedEngine, type SimulatedOptions } from "../../src/engines/simulated";
import { SECRET } from "./node-client";

export interface TestNode extends RunningNode {
  engine: SimulatedEngine;
  logs: LogRecord[];
  metricsText(): Promise<string>;
}

export async function startTestNode(
  simulate: Partial<SimulatedOptions> = {},
  options: Partial<Omit<NodeOptions, "engine">> = {},
): Promise<TestNode> {
  const engine = new SimulatedEngine({ visionMs: 0, prefillMs: 0, tokensPerS: 0, ...simulate });
  const logs: LogRecord[] = [];
  const node = await startNode({ engine, nodeSecret: SECRET, port: 0, log: (r) => logs.push(r), drainTimeoutMs: 5_000, ...options });
  return Object.assign(node, {
    engine,
    logs,
    metricsText: async () => (await fetch(`${node.url}/metrics`)).text(),
  });
}

/** The value of one sample in Prometheus text (0 when absent). */
export function sample(metrics: string, name: string, labels = ""): number {
  const line = metrics.split("\n").find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ""} `));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

/** Holds every generation of `engine` at its start until `open()` is called (deterministic queues). */
export function gate(engine: SimulatedEngine): { open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  const inner = engine.generate.bind(engine);
  engine.generate = async function* gated(request, signal) {
    await opened;
    yield* inner(request, signal);
  };
  return { open };
}
