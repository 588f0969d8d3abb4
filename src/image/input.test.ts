/**
 * Reading a request's own body (input.ts `readBodyCapped`): within the cap it is returned whole; over the
 * cap it is refused as too large; a body whose connection fails mid-upload is the client's failed request
 * (400 invalid_request), not an internal error.
 */
import { describe, expect, it } from "vitest";
import { ApiError } from "../errors";
import { readBodyCapped } from "./input";

const enc = new TextEncoder();

function requestWith(body: ReadableStream<Uint8Array>): Request {
  return new Request("http://edge/v1/captions", { method: "POST", body, duplex: "half" } as RequestInit);
}

describe("readBodyCapped", () => {
  it("returns a body within the cap whole", async () => {
    const bytes = await readBodyCapped(new Request("http://edge/", { method: "POST", body: "hello" }), 10);
    expect(new TextDecoder().decode(bytes)).toBe("hello");
  });

  it("refuses a body over the cap (413 image_too_large)", async () => {
    const err = await readBodyCapped(new Request("http://edge/", { method: "POST", body: "x".repeat(20) }), 10).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).code).toBe("image_too_large");
  });

  it("a body whose connection fails mid-upload: 400 invalid_request, not an internal error", async () => {
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode("part of an image"));
        setTimeout(() => c.error(new Error("Network connection lost.")), 5);
      },
    });
    const err = await readBodyCapped(requestWith(body), 1_000_000).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).code).toBe("invalid_request");
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).message).toMatch(/connection was lost/);
  });
});
