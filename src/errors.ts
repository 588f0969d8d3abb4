/**
 * One error type, one status mapping, one JSON envelope.
 *
 * Every failure a client can see is an `ApiError` with a stable `code`; the envelope is OpenAI's
 * `{"error":{"message","type","param","code"}}`. Anything else that escapes is logged and answered as a
 * generic 500 so no stack trace or internal message ever reaches a client.
 */

export type ErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "rate_limit_error"
  | "upstream_error"
  | "server_error";

/** Every error code the edge emits, with its HTTP status and error type. */
export const ERROR_CODES = {
  invalid_request: { status: 400, type: "invalid_request_error" },
  invalid_image_url: { status: 400, type: "invalid_request_error" },
  missing_image: { status: 400, type: "invalid_request_error" },
  invalid_api_key: { status: 401, type: "authentication_error" },
  image_url_forbidden: { status: 403, type: "permission_error" },
  insufficient_scope: { status: 403, type: "permission_error" },
  not_found: { status: 404, type: "not_found_error" },
  model_not_found: { status: 404, type: "not_found_error" },
  method_not_allowed: { status: 405, type: "invalid_request_error" },
  key_exists: { status: 409, type: "invalid_request_error" },
  image_too_large: { status: 413, type: "invalid_request_error" },
  request_too_large: { status: 413, type: "invalid_request_error" },
  unsupported_image_format: { status: 415, type: "invalid_request_error" },
  unsupported_media_type: { status: 415, type: "invalid_request_error" },
  image_decode_failed: { status: 422, type: "invalid_request_error" },
  rate_limited: { status: 429, type: "rate_limit_error" },
  quota_exceeded: { status: 429, type: "rate_limit_error" },
  internal_error: { status: 500, type: "server_error" },
  image_fetch_failed: { status: 502, type: "upstream_error" },
  node_error: { status: 502, type: "upstream_error" },
  no_capacity: { status: 503, type: "server_error" },
  image_fetch_timeout: { status: 504, type: "upstream_error" },
} as const satisfies Record<string, { status: number; type: ErrorType }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: ErrorCode };
}

export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly type: ErrorType;
  readonly param: string | null;
  /** Seconds, sent as `Retry-After` (429, 503). */
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, message: string, options: { param?: string; retryAfter?: number; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = "ApiError";
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.type = ERROR_CODES[code].type;
    this.param = options.param ?? null;
    this.retryAfter = options.retryAfter;
  }

  toJSON(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  toResponse(headers?: HeadersInit): Response {
    const h = new Headers(headers);
    h.set("content-type", "application/json; charset=utf-8");
    if (this.retryAfter !== undefined) h.set("retry-after", String(Math.max(0, Math.ceil(this.retryAfter))));
    if (this.code === "invalid_api_key") h.set("www-authenticate", 'Bearer realm="qwen-vl"');
    return new Response(JSON.stringify(this.toJSON()), { status: this.status, headers: h });
  }
}

/** Maps anything thrown to an ApiError; unknown errors become a generic 500 (the original is for logs only). */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError("internal_error", "The server failed to process the request.", { cause: err });
}

/** The SSE error frame sent once a stream has started, followed by `data: [DONE]`. */
export function sseErrorFrame(err: ApiError): string {
  return `data: ${JSON.stringify(err.toJSON())}\n\ndata: [DONE]\n\n`;
}
