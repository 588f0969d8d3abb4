/**
 * The supervisor with a fake spawn and a fake clock: restart with capped backoff, reset after a healthy
 * run, SIGTERM → timeout → SIGKILL, spawn failures, maxRestarts, state changes.
 */
import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { type Clock, type SupervisedChild, Supervisor, type SupervisorState } from "./supervisor";

class FakeChild extends EventEmitter implements SupervisedChild {
  readonly signals: NodeJS.Signals[] = [];
  constructor(
    readonly pid: number | undefined,
    /** Exits on these signals (SIGKILL always). */
    private readonly obeys: NodeJS.Signals[] = ["SIGTERM"],
  ) {
    super();
  }
  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    this.signals.push(signal);
    if (signal === "SIGKILL" || this.obeys.includes(signal)) queueMicrotask(() => this.emit("exit", null, signal));
    return true;
  }
  exit(code: number) {
    this.emit("exit", code, null);
  }
}

function fakeClock() {
  let now = 0;
  let next = 1;
  const timers = new Map<number, { at: number; fn: () => void }>();
  const clock: Clock & { advance(ms: number): void; pending(): number[] } = {
    now: () => now,
    setTimeout(fn, ms) {
      const id = next++;
      timers.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id as number);
    },
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...timers].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = until;
    },
    pending: () => [...timers.values()].map((t) => t.at - now),
  };
  return clock;
}

function setup(options: { obeys?: NodeJS.Signals[]; failSpawn?: boolean; maxRestarts?: number } = {}) {
  const clock = fakeClock();
  const children: FakeChild[] = [];
  const states: SupervisorState[] = [];
  const exits: Array<number | null> = [];
  const spawned: Array<{ command: string; args: readonly string[] }> = [];
  const sup = new Supervisor<FakeChild>({
    command: "worker",
    args: ["--x"],
    clock,
    backoff: { initialMs: 100, maxMs: 1_000, resetAfterMs: 10_000 },
    stopTimeoutMs: 500,
    maxRestarts: options.maxRestarts,
    spawn: (command, args) => {
      spawned.push({ command, args });
      if (options.failSpawn) {
        const child = new FakeChild(undefined);
        queueMicrotask(() => child.emit("error", new Error("spawn worker ENOENT")));
        children.push(child);
        return child;
      }
      const child = new FakeChild(1000 + children.length, options.obeys);
      children.push(child);
      return child;
    },
    onStateChange: (s) => states.push(s),
    onExit: (info) => exits.push(info.restartInMs),
  });
  return { sup, clock, children, states, exits, spawned };
}

describe("Supervisor", () => {
  it("starts the child and restarts it with exponential backoff, capped", () => {
    const { sup, clock, children, exits, spawned } = setup();
    sup.start();
    expect(sup.state).toBe("running");
    expect(spawned[0]).toEqual({ command: "worker", args: ["--x"] });
    for (let i = 0; i < 6; i++) {
      children.at(-1)!.exit(1);
      expect(sup.state).toBe("backoff");
      clock.advance(exits.at(-1)!);
      expect(sup.state).toBe("running");
    }
    expect(exits).toEqual([100, 200, 400, 800, 1_000, 1_000]);
    expect(sup.starts).toBe(7);
  });

  it("resets the backoff after a child ran long enough", () => {
    const { sup, clock, children, exits } = setup();
    sup.start();
    children[0].exit(1);
    clock.advance(100);
    children[1].exit(1);
    clock.advance(200);
    clock.advance(10_000); // child 2 runs long
    children[2].exit(1);
    expect(exits).toEqual([100, 200, 100]);
  });

  it("stops with SIGTERM and does not restart", async () => {
    const { sup, children, states, clock } = setup();
    sup.start();
    await sup.stop();
    expect(children[0].signals).toEqual(["SIGTERM"]);
    expect(sup.state).toBe("stopped");
    expect(states).toEqual(["running", "stopping", "stopped"]);
    clock.advance(60_000);
    expect(children).toHaveLength(1);
  });

  it("escalates to SIGKILL when the child ignores SIGTERM for stopTimeoutMs", async () => {
    const { sup, children, clock } = setup({ obeys: [] });
    sup.start();
    const stopped = sup.stop();
    expect(sup.stop()).toBe(stopped); // idempotent
    await Promise.resolve();
    expect(children[0].signals).toEqual(["SIGTERM"]);
    clock.advance(499);
    expect(children[0].signals).toEqual(["SIGTERM"]);
    clock.advance(1);
    await stopped;
    expect(children[0].signals).toEqual(["SIGTERM", "SIGKILL"]);
    expect(sup.state).toBe("stopped");
  });

  it("stopping while waiting to restart cancels the restart", async () => {
    const { sup, children, clock } = setup();
    sup.start();
    children[0].exit(3);
    expect(sup.state).toBe("backoff");
    await sup.stop();
    clock.advance(10_000);
    expect(children).toHaveLength(1);
    expect(sup.state).toBe("stopped");
  });

  it("treats a failed spawn as an exit and retries it; gives up after maxRestarts", async () => {
    const { sup, clock, children, states } = setup({ failSpawn: true, maxRestarts: 2 });
    sup.start();
    await Promise.resolve();
    expect(sup.state).toBe("backoff");
    clock.advance(100);
    await Promise.resolve();
    clock.advance(200);
    await Promise.resolve();
    expect(children).toHaveLength(3);
    expect(sup.state).toBe("failed");
    expect(states.at(-1)).toBe("failed");
    expect(clock.pending()).toEqual([]);
  });

  it("refuses nonsense backoff", () => {
    expect(() => new Supervisor({ command: "x", backoff: { initialMs: 10, maxMs: 5 } })).toThrow(TypeError);
    expect(() => new Supervisor({ command: "" })).toThrow(TypeError);
  });
});
