/**
 * Turns anything thrown into the documented error envelope. Unknown errors are logged with the
 * request id and answered as a generic 500: no stack trace or internal message reaches a client.
 * When the client has already gone (its request's signal aborted: a dropped connection mid-upload makes
 * the body read fail with "Network connection lost"), the failure is its leaving, not a fault of ours:
 * one info line, no error and no stack.
 */
import type { ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { AppEnv } from "../env";
import { ApiError, toApiError } from "../errors";

export const onError: ErrorHandler<AppEnv> = (err, c) => {
  let apiError: ApiError;
  if (err instanceof HTTPException && !(err instanceof ApiError)) {
    apiError = new ApiError(
      err.status === 413 ? "request_too_large" : err.status === 404 ? "not_found" : "invalid_request",
      err.message || "Bad request.",
    );
  } else {
    apiError = toApiError(err);
  }
  if (apiError.status >= 500 && apiError.code === "internal_error") {
    if (c.req.raw.signal?.aborted) {
      console.log(
        JSON.stringify({ level: "info", msg: "client went away", requestId: c.get("requestId"), path: c.req.path, error: String(err) }),
      );
    } else {
      console.error(
        JSON.stringify({
          level: "error",
          requestId: c.get("requestId"),
          path: c.req.path,
          error: String(err),
          stack: (err as Error)?.stack,
        }),
      );
    }
  }
  return apiError.toResponse({ "x-request-id": c.get("requestId") ?? "" });
};

export const notFound: NotFoundHandler<AppEnv> = (c) =>
  new ApiError("not_found", `No route for ${c.req.method} ${c.req.path}.`).toResponse({ "x-request-id": c.get("requestId") ?? "" });
