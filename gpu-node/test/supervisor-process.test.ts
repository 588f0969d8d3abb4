/**
 * The supervisor with real processes: a short-lived `node -e` child is restarted, and one that ignores
 * SIGTERM is killed after the stop timeout.
 */
import { describe, expect, it } from "vitest";
import { Supervisor, type SupervisorState } from "../src/supervisor/supervisor";
import { waitFor } from "./support/node-client";

describe("Supervisor with real child processes", () => {
  it("restarts a child that exits, then stops one that ignores SIGTERM with SIGKILL", async () => {
    const exits: Array<{ code: number | null; signal: string | null }> = [];
    const states: SupervisorState[] = [];
    let outputs = "";
    // First run exits 7 at once; later runs ignore SIGTERM and wait.
    const script = `
      const fs = require("node:fs");
      const marker = process.env.MARKER;
      if (!fs.existsSync(marker)) { fs.writeFileSync(marker, "1"); process.exit(7); }
      process.on("SIGTERM", () => {});
      process.stdout.write("up\\n");
      setInterval(() => {}, 1000);
    `;
    const marker = `${process.env.TMPDIR ?? "/tmp"}/qvl-sup-${process.pid}-${Date.now()}`;
    const sup = new Supervisor({
      command: process.execPath,
      args: ["-e", script],
      env: { ...process.env, MARKER: marker },
      backoff: { initialMs: 50, maxMs: 200 },
      stopTimeoutMs: 300,
      onStart: (child) => child.stdout?.on("data", (d: Buffer) => (outputs += d.toString())),
      onExit: ({ code, signal }) => exits.push({ code, signal }),
      onStateChange: (s) => states.push(s),
    });
    sup.start();
    await waitFor(() => outputs.includes("up"), 10_000, "the restarted child");
    expect(exits[0]).toEqual({ code: 7, signal: null });
    expect(sup.starts).toBe(2);
    const t0 = performance.now();
    await sup.stop();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    expect(exits[1]).toEqual({ code: null, signal: "SIGKILL" });
    expect(states).toEqual(["running", "backoff", "running", "stopping", "stopped"]);
    const { rmSync } = await import("node:fs");
    rmSync(marker, { force: true });
  });
});
