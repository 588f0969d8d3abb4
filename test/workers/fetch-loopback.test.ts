// fetchImage inside workerd against the real loopback server of test/support/loopback-server.ts.
// Only 127.0.0.1 is ever connected to: forbidden redirect targets are refused before any request.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Env } from "../../src/env";
import { ApiError } from "../../src/errors";
import { type FetchImageOptions, fetchImage } from "../../src/image/fetch";

// The origin arrives as a binding that vitest.config.ts fills with `inject("loopbackOrigin")`
// (vitest's own `inject()` works inside the pool too; the binding is what the Worker itself sees).
const origin = (env as Env).LOOPBACK_ORIGIN ?? "";

const small: FetchImageOptions = {
  allowHttpLoopback: true,
  maxBytes: 1_000_000,
  headersTimeoutMs: 2000,
  totalTimeoutMs: 5000,
};

/** The real fetch, recording every URL requested, so a test can prove what was never connected to. */
function recordingFetch() {
  const urls: string[] = [];
  const fn = (input: RequestInfo | URL, init?: RequestInit) => {
    urls.push(String(input instanceof Request ? input.url : input));
    return fetch(input, init);
  };
  return { fetch: fn as typeof fetch, urls };
}

async function expectApiError(promise: Promise<unknown>, code: string, message?: RegExp): Promise<ApiError> {
  const err = await promise.then(
    () => expect.fail(`expected ApiError ${code}`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  expect((err as ApiError).code).toBe(code);
  if (message) expect((err as ApiError).message).toMatch(message);
  return err as ApiError;
}

describe("fetchImage against a loopback server", () => {
  it("has the loopback origin", () => {
    expect(origin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it("fetches a streamed body", async () => {
    const result = await fetchImage(`${origin}/bytes/300000`, small);
    expect(result.bytes.byteLength).toBe(300_000);
    expect(result).toMatchObject({ source: "url", redirects: 0, finalUrl: `${origin}/bytes/300000` });
    expect(result.contentType).toBe("application/octet-stream");
  });

  it("fetches a fixture image (skipped until test/fixtures/images holds coffee.png)", async ({ skip }) => {
    const probe = await fetch(`${origin}/fixtures/coffee.png`, { method: "HEAD" });
    await probe.body?.cancel();
    if (probe.status === 404) skip();
    const result = await fetchImage(`${origin}/fixtures/coffee.png`, { ...small, maxBytes: 20_000_000 });
    expect(result.contentType).toBe("image/png");
    expect(Array.from(result.bytes.subarray(0, 8))).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  });

  it("maps a missing fixture (404) to 502", async () => {
    await expectApiError(fetchImage(`${origin}/fixtures/no-such-file.png`, small), "image_fetch_failed", /HTTP 404/);
  });

  it("refuses an oversize streamed body with 413", async () => {
    await expectApiError(fetchImage(`${origin}/bytes/2000000`, small), "image_too_large", /exceeds 1000000 bytes/);
  });

  it("refuses a body larger than its Content-Length claims with 413", async () => {
    await expectApiError(fetchImage(`${origin}/lying-length`, small), "image_too_large");
  });

  it("times out slow headers with 504", async () => {
    const started = Date.now();
    await expectApiError(
      fetchImage(`${origin}/slow-headers`, { ...small, headersTimeoutMs: 500 }),
      "image_fetch_timeout",
      /no response headers within 500 ms/,
    );
    expect(Date.now() - started).toBeLessThan(2500);
  });

  it("times out a slow body with 504", async () => {
    const started = Date.now();
    await expectApiError(
      fetchImage(`${origin}/slow-body`, { ...small, totalTimeoutMs: 1500 }),
      "image_fetch_timeout",
      /not complete within 1500 ms/,
    );
    expect(Date.now() - started).toBeLessThan(4000);
  });

  it("follows 3 redirects", async () => {
    const result = await fetchImage(`${origin}/redirect-n/3`, small);
    expect(result.redirects).toBe(3);
    expect(result.finalUrl).toBe(`${origin}/bytes/100`);
    expect(result.bytes.byteLength).toBe(100);
  });

  it("refuses a 4th redirect with 502", async () => {
    const rec = recordingFetch();
    await expectApiError(fetchImage(`${origin}/redirect-n/4`, { ...small, fetch: rec.fetch }), "image_fetch_failed", /too many redirects/);
    expect(rec.urls).toHaveLength(4);
  });

  it.each([
    ["http://10.0.0.1/", /private/],
    ["http://[::ffff:169.254.169.254]/", /IPv4-mapped link-local \(cloud metadata\)/],
    ["http://169.254.169.254/latest/meta-data/", /cloud metadata/],
    ["http://0x7f000001.example/", /must use https/],
  ])("refuses a redirect to %s with 403 and never connects to it", async (target, message) => {
    const rec = recordingFetch();
    await expectApiError(
      fetchImage(`${origin}/redirect?to=${encodeURIComponent(target)}`, { ...small, fetch: rec.fetch }),
      "image_url_forbidden",
      message,
    );
    expect(rec.urls).toHaveLength(1);
    expect(rec.urls[0].startsWith(`${origin}/redirect?`)).toBe(true);
  });

  it("maps an origin 500 to 502", async () => {
    await expectApiError(fetchImage(`${origin}/status/500`, small), "image_fetch_failed", /the origin answered HTTP 500/);
  });

  it("maps an origin 404 to 502", async () => {
    await expectApiError(fetchImage(`${origin}/status/404`, small), "image_fetch_failed", /HTTP 404/);
  });

  it("refuses http:// loopback with 403 when allowHttpLoopback is off (the production default)", async () => {
    const rec = recordingFetch();
    await expectApiError(
      fetchImage(`${origin}/bytes/100`, { ...small, allowHttpLoopback: false, fetch: rec.fetch }),
      "image_url_forbidden",
      /loopback/,
    );
    expect(rec.urls).toEqual([]);
  });
});
