/**
 * The error handler (error-handler.ts) via `app.request()`: an unknown error is a generic 500 in the
 * documented shape and logged as an error; the same failure after the client went away is one info line.
 */
import { Hono } from "hono";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { notFound, onError } from "./error-handler";

function app(fail: () => never): Hono<AppEnv> {
  const a = new Hono<AppEnv>();
  a.post("/x", () => fail());
  a.onError(onError);
  a.notFound(notFound);
  return a;
}

describe("onError", () => {
  afterEach(() => vi.restoreAllMocks());

  it("an unknown error: 500 internal_error, nothing internal in the body, logged as an error with its stack", async () => {
    const error = vi.spyOn(console, "error").mockImplementation(() => {});
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    const res = await app(() => {
      throw new Error("secret detail at 10.0.0.7");
    }).request("/x", { method: "POST" });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("internal_error");
    expect(JSON.stringify(body)).not.toContain("10.0.0.7");
    expect(error).toHaveBeenCalledTimes(1);
    expect(JSON.parse(String(error.mock.calls[0][0]))).toMatchObject({ level: "error", path: "/x" });
    expect(log).not.toHaveBeenCalled();
  });

  it("the same failure after the client went away (its signal aborted): one info line, no error log", async () => {
    const error = vi.spyOn(console, "error").mockImplementation(() => {});
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    const client = new AbortController();
    client.abort();
    const res = await app(() => {
      throw new Error("Network connection lost.");
    }).request("/x", { method: "POST", signal: client.signal });
    expect(res.status).toBe(500);
    expect(error).not.toHaveBeenCalled();
    expect(log).toHaveBeenCalledTimes(1);
    expect(JSON.parse(String(log.mock.calls[0][0]))).toMatchObject({ level: "info", msg: "client went away", path: "/x" });
  });

  it("an expected error is answered as itself and not logged", async () => {
    const error = vi.spyOn(console, "error").mockImplementation(() => {});
    const res = await app(() => {
      throw new ApiError("invalid_request", "Bad.");
    }).request("/x", { method: "POST" });
    expect(res.status).toBe(400);
    expect(error).not.toHaveBeenCalled();
  });
});
