/**
 * A test engine that plays a script: each step waits `after` ms, then yields its event; `aborted` counts
 * the runs a cancellation ended. Steps are timers (tests use 30 ms apart), so which events share a write
 * follows from the agent's pacing rules, not from machine speed: a write is made in the same event-loop
 * turn as the event that causes it, before the next step's timer.
 */
import type { NodeEvent } from "../../../src/protocol/index";
import type { Engine, GenerateRequest } from "../../src/engines/engine";

export type Step = [after: number, event: NodeEvent];

export function scriptedEngine(script: Step[]): Engine & { aborted: number } {
  return {
    name: "scripted",
    version: "0",
    capacity: 4,
    aborted: 0,
    async start() {},
    health: () => ({ ok: true }),
    async close() {},
    async *generate(_request: GenerateRequest, signal: AbortSignal) {
      for (const [after, event] of script) {
        await new Promise((r) => setTimeout(r, after));
        if (signal.aborted) {
          this.aborted++;
          return;
        }
        yield event;
      }
    },
  };
}
