/**
 * The one small interface every engine implements (TGI's `Backend`): the agent validates and admits
 * requests, the engine turns one into a stream of events.
 */
import type { GenerateHeader, NodeEvent } from "../../../src/protocol/index";

export interface GenerateRequest {
  header: GenerateHeader;
  /** One tensor per `header.images` entry (f16 CHW normalized, or u8 HWC), already checksum-verified. */
  images: Uint8Array[];
  /** `performance.now()` when the agent accepted the request (for queue time and deadlines). */
  acceptedAt: number;
}

export interface EngineHealth {
  ok: boolean;
  /** Why not, for /healthz and logs (never sent to the edge's clients). */
  detail?: string;
}

export interface Engine {
  /** "simulated" (a declared test instrument: no model runs) or "trtllm". */
  readonly name: string;
  readonly version: string;
  /** Requests the engine runs at once (in-flight batch size); the agent queues beyond it. */
  readonly capacity: number;
  start(): Promise<void>;
  /**
   * Runs one request. Yields `token` events, then one `done` per prompt, or an `error` event.
   * Aborting `signal` (client gone, deadline, drain timeout) must stop the work in the engine.
   */
  generate(request: GenerateRequest, signal: AbortSignal): AsyncIterable<NodeEvent>;
  health(): EngineHealth;
  close(): Promise<void>;
}
