/**
 * `gpu-node` as an operator runs it: real child processes through the `npx gpu-node` entry
 * (bin/gpu-node.mjs). serve prints where it listens, registers with a (fake) edge, drains on SIGTERM
 * letting a running request finish, deregisters and exits 0; a second signal exits at once; status and
 * drain (run in-process: they only speak HTTP) talk to a running serve process.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { Command } from "../src/commands/command";
import { drain } from "../src/commands/drain";
import { serve } from "../src/commands/serve";
import { status } from "../src/commands/status";
import { type FakeEdge, startFakeEdge } from "./support/fake-edge";
import { ROOT, textFrame } from "./support/frames";
import { postFrame, readEvents, SECRET, waitFor } from "./support/node-client";

const BIN = `${ROOT}gpu-node/bin/gpu-node.mjs`;
const children = new Set<ChildProcess>();

interface Served {
  child: ChildProcess;
  url: string;
  listening: Record<string, unknown>;
  logs: Array<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `gpu-node serve` and resolves once it printed its listening line. */
function serveChild(args: string[], env: Record<string, string> = {}): Promise<Served> {
  const child = spawn(process.execPath, [BIN, "serve", "--engine", "simulated", "--port", "0", ...args], {
    cwd: ROOT,
    env: { ...process.env, QVL_NODE_SECRET: SECRET, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const logs: Array<Record<string, unknown>> = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  createInterface({ input: child.stderr! }).on("line", (line) => {
    try {
      logs.push(JSON.parse(line));
    } catch {
      logs.push({ raw: line });
    }
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${JSON.stringify(logs)}`)), 20_000);
    createInterface({ input: child.stdout! }).once("line", (line) => {
      clearTimeout(timer);
      const listening = JSON.parse(line) as Record<string, unknown>;
      resolve({ child, url: listening.url as string, listening, logs, exited });
    });
    void exited.then(({ code }) => reject(new Error(`serve exited ${code}: ${JSON.stringify(logs)}`)));
  });
}

/** Runs a command in-process, as the bin would, capturing its output. */
async function command(cmd: Command, args: string[], env: Record<string, string> = {}) {
  let stdout = "";
  let stderr = "";
  const code = await cmd.run(args, {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
    env: { ...process.env, ...env },
  });
  return { code, stdout, stderr };
}

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

let edge: FakeEdge | undefined;
afterEach(async () => {
  await edge?.close();
  edge = undefined;
});
afterAll(() => {
  for (const child of children) child.kill("SIGKILL");
});

describe("gpu-node serve", () => {
  it("drains on SIGTERM: a running request finishes, the edge hears draining then goodbye, exit 0", async () => {
    edge = await startFakeEdge();
    const node = await serveChild([
      "--simulate",
      "prefill_ms=600,tokens_per_s=400",
      "--edge",
      edge.url,
      "--node-id",
      "cli-node",
      "--region",
      "test",
      "--heartbeat-ms",
      "100",
      "--drain-timeout-ms",
      "10000",
    ]);
    expect(node.listening).toMatchObject({ event: "listening", engine: "simulated", node_id: "cli-node", edge: edge.url });
    expect(node.listening.simulate).toContain("prefill_ms=600");
    await waitFor(() => edge!.heartbeats.length >= 2, 10_000, "heartbeats");
    expect(edge.heartbeats[0].body).toMatchObject({ id: "cli-node", url: node.url, region: "test", draining: false });

    const inFlight = postFrame(node.url, (await textFrame("finish me")).frame);
    let active = 0;
    for (let i = 0; i < 200 && active === 0; i++) {
      active = ((await (await fetch(`${node.url}/v1/node`)).json()) as { load: { active: number } }).load.active;
    }
    expect(active).toBe(1); // the request is running (600 ms of prefill) when the signal comes
    node.child.kill("SIGTERM");
    const { events } = await readEvents(await inFlight);
    expect(events.at(-1)).toMatchObject({ type: "done", finish_reason: "stop", engine: "simulated" });
    expect(await node.exited).toEqual({ code: 0, signal: null });

    const beats = edge.heartbeats.map((h) => h.body);
    expect(beats.some((b) => b.draining && !b.final)).toBe(true);
    expect(beats.at(-1)).toMatchObject({ draining: true, final: true, deregister: true, load: { active: 0, queued: 0 } });
    expect(node.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(["draining", "generate", "drained"]));
    expect(node.logs.find((l) => l.msg === "draining")).toMatchObject({ reason: "SIGTERM" });
  });

  it("exits at once on a second signal", async () => {
    const node = await serveChild(["--simulate", "fault=stall"]);
    const stuck = postFrame(node.url, (await textFrame()).frame).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 200));
    node.child.kill("SIGTERM");
    await waitFor(() => node.logs.some((l) => l.msg === "draining"), 10_000, "the drain to start");
    node.child.kill("SIGTERM");
    expect(await node.exited).toEqual({ code: 143, signal: null });
    await stuck;
  });

  it("stops cleanly (exit 0) on SIGTERM while the engine is still starting", async () => {
    const child = spawn(process.execPath, [BIN, "serve", "--engine", "simulated", "--port", "0", "--simulate", "start_ms=30000"], {
      cwd: ROOT,
      env: { ...process.env, QVL_NODE_SECRET: SECRET },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.add(child);
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    let stdout = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    await new Promise<void>((resolve) =>
      createInterface({ input: child.stderr! }).on("line", (line) => {
        if (line.includes('"msg":"starting"')) resolve();
      }),
    );
    const t0 = performance.now();
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(stdout).toBe(""); // never ready, never said listening
  });

  it("keeps serving when the edge is unreachable; status shows it; drain stops it", async () => {
    const node = await serveChild(["--edge", "http://127.0.0.1:9", "--heartbeat-ms", "100", "--capacity", "3", "--max-queue", "5"]);
    await waitFor(() => node.logs.filter((l) => l.msg === "heartbeat failed").length >= 2, 10_000, "failed heartbeats");
    const { events } = await readEvents(await postFrame(node.url, (await textFrame()).frame));
    expect(events.at(-1)).toMatchObject({ type: "done" });

    const text = await command(status, ["--url", node.url]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("state   ok");
    expect(text.stdout).toContain("simulated sim-1");
    expect(text.stdout).toContain("capacity 3, queue limit 5");
    const json = await command(status, ["--json"], { QVL_NODE_URL: node.url });
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      reachable: true,
      healthy: true,
      node: { engine: "simulated", capacity: 3, max_queue: 5, draining: false, load: { active: 0, queued: 0 } },
    });

    expect((await command(drain, ["--url", node.url])).code).toBe(64); // no secret
    const refused = await command(drain, ["--url", node.url, "--node-secret", "wrong"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("401");
    const drained = await command(drain, ["--url", node.url, "--wait", "--timeout-ms", "15000"], { QVL_NODE_SECRET: SECRET });
    expect(drained).toMatchObject({ code: 0, stdout: expect.stringContaining("stopped") });
    expect(await node.exited).toEqual({ code: 0, signal: null });
    expect(node.logs.find((l) => l.msg === "draining")).toMatchObject({ reason: "POST /v1/drain" });

    const gone = await command(status, ["--url", node.url]);
    expect(gone.code).toBe(1);
    expect(gone.stdout).toContain("unreachable");
  });
});

describe("gpu-node usage", () => {
  it("prints help through the real entry", async () => {
    const [help, serveHelp] = await Promise.all([cli(["--help"]), cli(["serve", "--help"])]);
    expect(help.code).toBe(0);
    for (const name of ["build", "serve", "status", "drain"]) expect(help.stdout).toContain(name);
    expect(serveHelp.code).toBe(0);
    for (const flag of [
      "--engine",
      "--port",
      "--node-secret",
      "--max-queue",
      "--simulate",
      "--edge",
      "--drain-timeout-ms",
      "--engine-dir",
      "--python",
      "--stream-interval-ms",
    ]) {
      expect(serveHelp.stdout).toContain(flag);
    }
  });

  it("refuses bad usage with 64 and says why", async () => {
    const cases: Array<[Command, string[], RegExp]> = [
      [serve, ["--port", "0", "--node-secret", "s"], /--engine must be/],
      [serve, ["--engine", "simulated", "--port", "0"], /node secret is required/],
      [serve, ["--engine", "simulated", "--node-secret", "s", "--simulate", "warp=9"], /unknown key 'warp'/],
      [serve, ["--engine", "trtllm", "--node-secret", "s"], /--engine-dir/],
      [serve, ["--engine", "simulated", "--node-secret", "s", "--node-id", "x"], /--node-id needs --edge/],
      [serve, ["--engine", "simulated", "--node-secret", "s", "--port", "70000"], /--port/],
      [serve, ["--engine", "simulated", "--node-secret", "s", "--bogus"], /bogus/],
      [status, ["--url", "ftp://x"], /http\(s\) URL/],
      [drain, ["--node-secret", "s", "--timeout-ms", "soon"], /--timeout-ms/],
    ];
    for (const [cmd, args, message] of cases) {
      const r = await command(cmd, args, { QVL_NODE_SECRET: "", QVL_SIMULATE: "" });
      expect(r.code, args.join(" ")).toBe(64);
      expect(r.stderr, args.join(" ")).toMatch(message);
    }
  });
});
