/**
 * The agent's HTTP errors, before a stream has started: one class → one status → one envelope
 *
 *   {"error":{"type":<NodeErrorCode>,"code":<most specific code>,"message":"…","retryable":bool}}
 *
 * `type` is the protocol's NodeErrorCode (what the edge branches on), `code` the precise reason (a
 * FrameErrorCode for a 400, else the same as `type`). 429 and 503 carry `Retry-After`. Once streaming,
 * failures are `error` events instead (src/protocol/events.ts).
 */
import type { FrameErrorCode, NodeErrorCode } from "../../../src/protocol/index";

export type AgentErrorType = NodeErrorCode | "not_found";
export type AgentErrorCode = AgentErrorType | FrameErrorCode | "unsupported_variant" | "method_not_allowed";

const STATUS: Record<AgentErrorType, number> = {
  invalid_frame: 400,
  unauthorized: 401,
  not_found: 404,
  overloaded: 429,
  internal_error: 500,
  engine_failed: 502,
  draining: 503,
  engine_unavailable: 503,
  deadline_exceeded: 504,
  // The client is gone; nobody reads this status (logs and metrics only).
  cancelled: 499,
};

/** Whether another node (or a later try) may succeed, for each type. */
const RETRYABLE: Record<AgentErrorType, boolean> = {
  invalid_frame: false,
  unauthorized: false,
  not_found: false,
  overloaded: true,
  internal_error: true,
  engine_failed: true,
  draining: true,
  engine_unavailable: true,
  deadline_exceeded: false,
  cancelled: false,
};

export interface AgentErrorBody {
  error: { type: AgentErrorType; code: AgentErrorCode; message: string; retryable: boolean };
}

export class AgentError extends Error {
  readonly status: number;
  readonly retryable: boolean;

  constructor(
    readonly type: AgentErrorType,
    message: string,
    readonly options: { code?: AgentErrorCode; retryAfterS?: number; retryable?: boolean; status?: number } = {},
  ) {
    super(message);
    this.name = "AgentError";
    this.status = options.status ?? STATUS[type];
    this.retryable = options.retryable ?? RETRYABLE[type];
  }

  get code(): AgentErrorCode {
    return this.options.code ?? this.type;
  }

  toJSON(): AgentErrorBody {
    return { error: { type: this.type, code: this.code, message: this.message, retryable: this.retryable } };
  }

  toResponse(): Response {
    const headers = new Headers({ "content-type": "application/json; charset=utf-8" });
    if (this.options.retryAfterS !== undefined) headers.set("retry-after", String(Math.max(0, Math.ceil(this.options.retryAfterS))));
    if (this.type === "unauthorized") headers.set("www-authenticate", 'Bearer realm="gpu-node"');
    return new Response(JSON.stringify(this.toJSON()), { status: this.status, headers });
  }
}
