// fetchImage with an injected fetch that answers crafted Responses: no test here opens a connection.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ApiError } from "../errors";
import { DEFAULT_FETCH_OPTIONS, decodeDataUri, type FetchImageOptions, fetchImage } from "./fetch";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

type Answer = Response | (() => Response | Promise<Response>);

/**
 * A fake fetch: answers from a URL → Response table, records every URL it was called with, and throws
 * for any URL not in the table (a request the code under test should never have made).
 */
function fakeFetch(routes: Record<string, Answer>) {
  const calls: string[] = [];
  const inits: RequestInit[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    calls.push(url);
    inits.push(init ?? {});
    const answer = routes[url];
    if (!answer) throw new Error(`unexpected fetch of ${url}`);
    return typeof answer === "function" ? answer() : answer;
  });
  return { fetch: fn as unknown as typeof fetch, calls, inits };
}

const redirect =
  (location: string, status = 302) =>
  () =>
    new Response(null, { status, headers: { location } });
const image =
  (bytes: number[] = PNG_SIGNATURE, headers: HeadersInit = { "content-type": "image/png" }) =>
  () =>
    new Response(new Uint8Array(bytes), { headers });

/** A body stream that records how far it was read and whether it was cancelled. */
function trackedStream(chunks: number, chunkSize: number, options: { endless?: boolean } = {}) {
  const state = { pulled: 0, cancelled: false };
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (options.endless) return new Promise<void>(() => {}); // never delivers, never ends
      if (state.pulled >= chunks) return controller.close();
      state.pulled++;
      controller.enqueue(new Uint8Array(chunkSize).fill(7));
    },
    cancel() {
      state.cancelled = true;
    },
  });
  return { stream, state };
}

async function expectApiError(promise: Promise<unknown>, code: string, message?: RegExp): Promise<ApiError> {
  const err = await promise.then(
    () => expect.fail(`expected ApiError ${code}`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  const apiError = err as ApiError;
  expect(apiError.code).toBe(code);
  if (message) expect(apiError.message).toMatch(message);
  expect(apiError.message).not.toMatch(/\n\s+at /); // never a stack trace
  return apiError;
}

const opts = (extra: FetchImageOptions): FetchImageOptions => ({ maxBytes: 1000, ...extra });

// Guard: should any test here fall through to the real fetch, it fails instead of connecting.
beforeAll(() => {
  vi.stubGlobal("fetch", () => Promise.reject(new Error("real fetch is not allowed in fetch.test.ts")));
});
afterAll(() => {
  vi.unstubAllGlobals();
});

it("the real fetch is guarded", async () => {
  await expectApiError(fetchImage("https://img.example.com/a.png"), "image_fetch_failed", /could not be reached/);
});

describe("DEFAULT_FETCH_OPTIONS", () => {
  it("has the documented limits", () => {
    expect(DEFAULT_FETCH_OPTIONS).toEqual({
      maxBytes: 20_000_000,
      headersTimeoutMs: 5000,
      totalTimeoutMs: 10_000,
      maxRedirects: 3,
      allowHttpLoopback: false,
    });
    expect(Object.isFrozen(DEFAULT_FETCH_OPTIONS)).toBe(true);
  });
});

describe("fetchImage: URLs", () => {
  it("returns the bytes, content type and final URL of a 200", async () => {
    const f = fakeFetch({ "https://img.example.com/a.png": image() });
    const result = await fetchImage("https://img.example.com/a.png", opts({ fetch: f.fetch }));
    expect(result).toEqual({
      bytes: new Uint8Array(PNG_SIGNATURE),
      contentType: "image/png",
      finalUrl: "https://img.example.com/a.png",
      redirects: 0,
      source: "url",
    });
    expect(f.inits[0]).toMatchObject({ method: "GET", redirect: "manual" });
    expect(f.inits[0].signal).toBeInstanceOf(AbortSignal);
  });

  it("gives a null content type when the origin sends none", async () => {
    const f = fakeFetch({ "https://img.example.com/a": image(PNG_SIGNATURE, {}) });
    const result = await fetchImage("https://img.example.com/a", opts({ fetch: f.fetch }));
    expect(result.contentType).toBeNull();
  });

  it("checks the URL before fetching: forbidden and invalid URLs never reach fetch", async () => {
    const f = fakeFetch({});
    await expectApiError(fetchImage("https://127.0.0.1/a.png", opts({ fetch: f.fetch })), "image_url_forbidden");
    await expectApiError(fetchImage("https://0x7f.1/a.png", opts({ fetch: f.fetch })), "image_url_forbidden");
    await expectApiError(fetchImage("https://169.254.169.254/", opts({ fetch: f.fetch })), "image_url_forbidden");
    await expectApiError(fetchImage("http://img.example.com/a.png", opts({ fetch: f.fetch })), "image_url_forbidden");
    await expectApiError(fetchImage("ftp://img.example.com/a.png", opts({ fetch: f.fetch })), "invalid_image_url");
    await expectApiError(fetchImage("not a url", opts({ fetch: f.fetch })), "invalid_image_url");
    expect(f.calls).toEqual([]);
  });

  describe("redirects", () => {
    it.each([301, 302, 303, 307, 308])("follows a %i, resolving a relative Location", async (status) => {
      const f = fakeFetch({
        "https://img.example.com/old": redirect("/new.png?v=2", status),
        "https://img.example.com/new.png?v=2": image(),
      });
      const result = await fetchImage("https://img.example.com/old", opts({ fetch: f.fetch }));
      expect(result.finalUrl).toBe("https://img.example.com/new.png?v=2");
      expect(result.redirects).toBe(1);
    });

    it("follows exactly maxRedirects (3) hops", async () => {
      const f = fakeFetch({
        "https://a.example.com/0": redirect("https://b.example.com/1"),
        "https://b.example.com/1": redirect("https://c.example.com/2"),
        "https://c.example.com/2": redirect("https://d.example.com/3"),
        "https://d.example.com/3": image(),
      });
      const result = await fetchImage("https://a.example.com/0", opts({ fetch: f.fetch }));
      expect(result.redirects).toBe(3);
      expect(result.finalUrl).toBe("https://d.example.com/3");
    });

    it("refuses a redirect loop after 3 hops with 502 too many redirects", async () => {
      const f = fakeFetch({ "https://img.example.com/loop": redirect("/loop") });
      await expectApiError(
        fetchImage("https://img.example.com/loop", opts({ fetch: f.fetch })),
        "image_fetch_failed",
        /too many redirects \(more than 3\)/,
      );
      expect(f.calls).toHaveLength(4); // the request and 3 followed redirects, then it stops
    });

    it("honours maxRedirects: 0", async () => {
      const f = fakeFetch({ "https://img.example.com/a": redirect("/b") });
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch, maxRedirects: 0 })),
        "image_fetch_failed",
        /too many redirects/,
      );
      expect(f.calls).toHaveLength(1);
    });

    it.each([
      ["http://10.0.0.1/", /private/],
      ["http://img.example.com/b.png", /must use https/],
      ["https://10.0.0.1/", /private/],
      ["https://169.254.169.254/latest/meta-data/iam/", /cloud metadata/],
      ["https://[::ffff:169.254.169.254]/", /IPv4-mapped link-local/],
      ["https://[::ffff:a9fe:a9fe]/", /IPv4-mapped link-local/],
      ["https://0x7f.1/", /loopback/],
      ["https://2130706433/", /loopback/],
      ["https://[::1]/", /loopback/],
      ["https://[fd00:ec2::254]/", /unique local/],
      ["https://metadata.google.internal/computeMetadata/v1/", /metadata.google.internal/],
      ["https://localhost/", /localhost/],
      ["https://img.example.com:8443/", /port 8443/],
    ])("refuses a redirect to %s with 403, without fetching it", async (location, message) => {
      const f = fakeFetch({ "https://img.example.com/a": redirect(location) });
      const err = await expectApiError(fetchImage("https://img.example.com/a", opts({ fetch: f.fetch })), "image_url_forbidden", message);
      expect(err.message).toMatch(/^Redirect refused: /);
      expect(f.calls).toEqual(["https://img.example.com/a"]);
    });

    it("refuses a forbidden hop in the middle of a chain", async () => {
      const f = fakeFetch({
        "https://a.example.com/": redirect("https://b.example.com/"),
        "https://b.example.com/": redirect("https://192.168.1.1/admin"),
      });
      await expectApiError(fetchImage("https://a.example.com/", opts({ fetch: f.fetch })), "image_url_forbidden");
      expect(f.calls).toEqual(["https://a.example.com/", "https://b.example.com/"]);
    });

    it("answers 502 when the origin redirects to a non-http URL or sends no Location", async () => {
      const f = fakeFetch({
        "https://img.example.com/ftp": redirect("ftp://img.example.com/a.png"),
        "https://img.example.com/creds": redirect("https://user:pw@img.example.com/"),
        "https://img.example.com/none": () => new Response(null, { status: 302 }),
      });
      await expectApiError(
        fetchImage("https://img.example.com/ftp", opts({ fetch: f.fetch })),
        "image_fetch_failed",
        /redirected to an unusable URL/,
      );
      await expectApiError(fetchImage("https://img.example.com/creds", opts({ fetch: f.fetch })), "image_fetch_failed", /credentials/);
      await expectApiError(
        fetchImage("https://img.example.com/none", opts({ fetch: f.fetch })),
        "image_fetch_failed",
        /HTTP 302 without a Location/,
      );
    });
  });

  describe("origin status and body", () => {
    it.each([400, 403, 404, 410, 429, 500, 502, 503])("maps an origin %i to 502 naming the status", async (status) => {
      const { stream, state } = trackedStream(3, 10);
      const f = fakeFetch({ "https://img.example.com/a": () => new Response(stream, { status }) });
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch })),
        "image_fetch_failed",
        new RegExp(`the origin answered HTTP ${status}\\.`),
      );
      expect(state.cancelled).toBe(true);
    });

    it("treats a 304 (not followed) as a failure", async () => {
      const f = fakeFetch({ "https://img.example.com/a": () => new Response(null, { status: 304 }) });
      await expectApiError(fetchImage("https://img.example.com/a", opts({ fetch: f.fetch })), "image_fetch_failed", /HTTP 304/);
    });

    it("refuses early when Content-Length already exceeds the cap, cancelling the body", async () => {
      const { stream, state } = trackedStream(100, 100);
      const f = fakeFetch({
        "https://img.example.com/a": () => new Response(stream, { headers: { "content-length": "5000" } }),
      });
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch })),
        "image_too_large",
        /^Image exceeds 1000 bytes\.$/,
      );
      expect(state.cancelled).toBe(true);
      expect(state.pulled).toBeLessThanOrEqual(1);
    });

    it("counts a streamed body without Content-Length and stops reading at the cap", async () => {
      const { stream, state } = trackedStream(1000, 100); // 100 kB on offer, cap 1000 bytes
      const f = fakeFetch({ "https://img.example.com/a": () => new Response(stream) });
      await expectApiError(fetchImage("https://img.example.com/a", opts({ fetch: f.fetch })), "image_too_large");
      expect(state.cancelled).toBe(true);
      expect(state.pulled).toBeLessThan(20);
    });

    it("does not trust a Content-Length that lies low", async () => {
      const { stream, state } = trackedStream(50, 100);
      const f = fakeFetch({
        "https://img.example.com/a": () => new Response(stream, { headers: { "content-length": "10" } }),
      });
      await expectApiError(fetchImage("https://img.example.com/a", opts({ fetch: f.fetch })), "image_too_large");
      expect(state.cancelled).toBe(true);
    });

    it("accepts a body of exactly maxBytes", async () => {
      const { stream } = trackedStream(10, 100);
      const f = fakeFetch({ "https://img.example.com/a": () => new Response(stream) });
      const result = await fetchImage("https://img.example.com/a", opts({ fetch: f.fetch }));
      expect(result.bytes.byteLength).toBe(1000);
    });

    it("answers 502 empty body for a 200 or 204 without bytes", async () => {
      const f = fakeFetch({
        "https://img.example.com/empty": () => new Response(""),
        "https://img.example.com/no-content": () => new Response(null, { status: 204 }),
      });
      await expectApiError(fetchImage("https://img.example.com/empty", opts({ fetch: f.fetch })), "image_fetch_failed", /empty body/);
      await expectApiError(fetchImage("https://img.example.com/no-content", opts({ fetch: f.fetch })), "image_fetch_failed", /empty body/);
    });

    it("maps a network error to 502 without leaking its message", async () => {
      const f = fakeFetch({
        "https://img.example.com/a": () => {
          throw new TypeError("internal: connect ECONNREFUSED 10.1.2.3:443 via proxy pool-7");
        },
      });
      const err = await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch })),
        "image_fetch_failed",
        /^Image fetch failed: the origin could not be reached\.$/,
      );
      expect(err.toJSON().error.message).not.toMatch(/ECONNREFUSED|10\.1\.2\.3/);
    });

    it("maps a body that errors mid-stream to 502", async () => {
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new Uint8Array(10));
          controller.error(new Error("socket hang up"));
        },
      });
      const f = fakeFetch({ "https://img.example.com/a": () => new Response(stream) });
      await expectApiError(fetchImage("https://img.example.com/a", opts({ fetch: f.fetch })), "image_fetch_failed", /could not be reached/);
    });
  });

  describe("timeouts and cancellation", () => {
    it("answers 504 when headers do not arrive within headersTimeoutMs (fetch honours the signal)", async () => {
      const slow = vi.fn(
        (_input: RequestInfo | URL, init?: RequestInit) =>
          new Promise<Response>((_resolve, reject) => {
            init?.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
          }),
      );
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: slow as unknown as typeof fetch, headersTimeoutMs: 50 })),
        "image_fetch_timeout",
        /no response headers within 50 ms/,
      );
      expect(slow.mock.calls[0][1]?.signal?.aborted).toBe(true);
    });

    it("answers 504 even when an injected fetch ignores the signal", async () => {
      const never = (() => new Promise<Response>(() => {})) as unknown as typeof fetch;
      await expectApiError(fetchImage("https://img.example.com/a", opts({ fetch: never, headersTimeoutMs: 50 })), "image_fetch_timeout");
    });

    it("answers 504 when the body does not finish within totalTimeoutMs, cancelling it", async () => {
      const { stream, state } = trackedStream(0, 0, { endless: true });
      const f = fakeFetch({ "https://img.example.com/a": () => new Response(stream) });
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch, totalTimeoutMs: 100 })),
        "image_fetch_timeout",
        /not complete within 100 ms/,
      );
      expect(state.cancelled).toBe(true);
    });

    it("stops when the caller's signal aborts", async () => {
      const controller = new AbortController();
      const { stream, state } = trackedStream(0, 0, { endless: true });
      const f = fakeFetch({ "https://img.example.com/a": () => new Response(stream) });
      const pending = fetchImage("https://img.example.com/a", opts({ fetch: f.fetch, signal: controller.signal }));
      setTimeout(() => controller.abort(), 20);
      await expectApiError(pending, "image_fetch_failed", /cancelled/);
      expect(state.cancelled).toBe(true);
    });

    it("does not start when the caller's signal is already aborted", async () => {
      const f = fakeFetch({ "https://img.example.com/a": image() });
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch, signal: AbortSignal.abort() })),
        "image_fetch_failed",
        /cancelled/,
      );
    });
  });

  describe("resolver hook", () => {
    it("refuses a host that resolves to a private address, before fetching", async () => {
      const f = fakeFetch({ "https://img.example.com/a": image() });
      const resolve = vi.fn(async () => ["10.0.0.5"]);
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch, resolve })),
        "image_url_forbidden",
        /resolves to a forbidden address \(private\)/,
      );
      expect(resolve).toHaveBeenCalledWith("img.example.com");
      expect(f.calls).toEqual([]);
    });

    it("requires every resolved address to be allowed", async () => {
      const f = fakeFetch({ "https://img.example.com/a": image() });
      const resolve = async () => ["93.184.216.34", "::ffff:127.0.0.1"];
      await expectApiError(fetchImage("https://img.example.com/a", opts({ fetch: f.fetch, resolve })), "image_url_forbidden", /loopback/);
      expect(f.calls).toEqual([]);
    });

    it("fetches when every address is public", async () => {
      const f = fakeFetch({ "https://img.example.com/a": image() });
      const result = await fetchImage(
        "https://img.example.com/a",
        opts({ fetch: f.fetch, resolve: async () => ["93.184.216.34", "2606:2800:220:1::"] }),
      );
      expect(result.bytes).toEqual(new Uint8Array(PNG_SIGNATURE));
    });

    it("checks every redirect hop", async () => {
      const f = fakeFetch({ "https://a.example.com/": redirect("https://rebind.example.net/") });
      const resolve = vi.fn(async (host: string) => (host === "a.example.com" ? ["93.184.216.34"] : ["169.254.169.254"]));
      await expectApiError(
        fetchImage("https://a.example.com/", opts({ fetch: f.fetch, resolve })),
        "image_url_forbidden",
        /cloud metadata/,
      );
      expect(resolve.mock.calls).toEqual([["a.example.com"], ["rebind.example.net"]]);
      expect(f.calls).toEqual(["https://a.example.com/"]);
    });

    it("is not asked about IP literals (already classified)", async () => {
      const f = fakeFetch({ "https://93.184.216.34/a": image() });
      const resolve = vi.fn(async () => ["10.0.0.1"]);
      await fetchImage("https://93.184.216.34/a", opts({ fetch: f.fetch, resolve }));
      expect(resolve).not.toHaveBeenCalled();
    });

    it("answers 502 when the name does not resolve", async () => {
      const f = fakeFetch({});
      await expectApiError(
        fetchImage("https://nx.example.com/a", opts({ fetch: f.fetch, resolve: async () => [] })),
        "image_fetch_failed",
        /could not resolve/,
      );
      await expectApiError(
        fetchImage("https://nx.example.com/a", opts({ fetch: f.fetch, resolve: async () => Promise.reject(new Error("SERVFAIL")) })),
        "image_fetch_failed",
        /could not resolve/,
      );
      expect(f.calls).toEqual([]);
    });

    it("refuses garbage from the resolver (fail closed)", async () => {
      const f = fakeFetch({});
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch, resolve: async () => ["not-an-ip"] })),
        "image_url_forbidden",
      );
    });

    it("counts a slow resolver against headersTimeoutMs", async () => {
      const f = fakeFetch({});
      await expectApiError(
        fetchImage("https://img.example.com/a", opts({ fetch: f.fetch, headersTimeoutMs: 50, resolve: () => new Promise(() => {}) })),
        "image_fetch_timeout",
      );
      expect(f.calls).toEqual([]);
    });
  });
});

describe("fetchImage: data URIs", () => {
  const noFetch = fakeFetch({});

  it("decodes base64 with a media type", async () => {
    const result = await fetchImage("data:image/png;base64,iVBORw0KGgo=", { fetch: noFetch.fetch });
    expect(result).toEqual({
      bytes: new Uint8Array(PNG_SIGNATURE),
      contentType: "image/png",
      finalUrl: null,
      redirects: 0,
      source: "data",
    });
    expect(noFetch.calls).toEqual([]);
  });

  it.each([
    ["data:image/png;base64,iVBORw0KGgo", "without padding"],
    ["data:image/png;base64,iVBO\r\nRw0K Ggo=", "with whitespace and line breaks"],
    ["DATA:image/png;BASE64,iVBORw0KGgo=", "in upper case"],
    ["data:image/png;base64,iVBORw0KGgo%3D", "with percent-encoded padding"],
    ["  data:image/png;base64,iVBORw0KGgo=", "after leading spaces"],
  ])("decodes base64 %s (%s)", async (uri) => {
    const result = await fetchImage(uri);
    expect(result.bytes).toEqual(new Uint8Array(PNG_SIGNATURE));
  });

  it("keeps media type parameters", async () => {
    const result = await fetchImage('data:image/png;name="a b.png";base64,iVBORw0KGgo=');
    expect(result.contentType).toBe('image/png;name="a b.png"');
  });

  it("decodes percent-encoded (non-base64) data", async () => {
    const result = await fetchImage("data:application/octet-stream,%89PNG%0d%0A%1A%0a");
    expect(result.bytes).toEqual(new Uint8Array(PNG_SIGNATURE));
    expect(result.contentType).toBe("application/octet-stream");
  });

  it("reads plain text as UTF-8 bytes and gives a null content type without a media type", async () => {
    const result = await fetchImage("data:,h%C3%A9 é");
    expect(Array.from(result.bytes)).toEqual([0x68, 0xc3, 0xa9, 0x20, 0xc3, 0xa9]);
    expect(result.contentType).toBeNull();
  });

  it.each([
    ["data:image/png;base64", /missing ','/],
    ["data:image/png;base64,@@@@", /invalid base64/],
    ["data:image/png;base64,abcde", /invalid base64/],
    ["data:image/png;base64,ab=c", /invalid base64/],
    ["data:image/png;base64,iVBORw0KGgo===", /invalid base64/],
    ["data:image/png;base64,iVBO-w0_Ggo=", /invalid base64/], // base64url is not base64
    ["data:image/png;base64,%FFAA", /invalid base64/],
    ["data:,%zz", /invalid percent-encoding/],
    ["data:,100%", /invalid percent-encoding/],
    ["data:not a type;base64,AAAA", /invalid media type/],
    [`data:image/png;x=${" ".repeat(300)}";base64,AAAA`, /media type too long/],
    ["data:image/png;base64,", /contains no data/],
    ["data:,", /contains no data/],
  ])("refuses %j with 400 invalid_image_url", async (uri, message) => {
    await expectApiError(fetchImage(uri), "invalid_image_url", message);
  });

  it("accepts exactly maxBytes and refuses one more, after decoding", async () => {
    const ten = btoa("0123456789");
    expect((await fetchImage(`data:;base64,${ten}`, { maxBytes: 10 })).bytes.byteLength).toBe(10);
    await expectApiError(fetchImage(`data:;base64,${btoa("0123456789A")}`, { maxBytes: 10 }), "image_too_large", /exceeds 10 bytes/);
    await expectApiError(fetchImage(`data:,${"A".repeat(11)}`, { maxBytes: 10 }), "image_too_large");
    expect((await fetchImage(`data:,${"%41".repeat(10)}`, { maxBytes: 10 })).bytes.byteLength).toBe(10);
    await expectApiError(fetchImage(`data:,${"%41".repeat(11)}`, { maxBytes: 10 }), "image_too_large");
  });

  it("applies the cap before decoding (an oversize payload is refused for size even if it is not valid base64)", async () => {
    await expectApiError(fetchImage(`data:image/png;base64,${"!".repeat(100)}`, { maxBytes: 10 }), "image_too_large");
    // Whitespace does not count towards the estimate.
    const spaced = `data:;base64,${btoa("0123456789").split("").join("\n")}`;
    expect((await fetchImage(spaced, { maxBytes: 10 })).bytes.byteLength).toBe(10);
  });

  it("round-trips random bytes through base64", () => {
    const bytes = new Uint8Array(1000).map((_, i) => (i * 131 + 7) & 0xff);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    for (const n of [1000, 999, 998]) {
      const sub = bytes.subarray(0, n);
      const encoded = btoa(binary.slice(0, n));
      expect(decodeDataUri(`data:application/octet-stream;base64,${encoded}`, 2000).bytes).toEqual(sub);
    }
  });

  it("uses the 20 MB default cap", async () => {
    await expectApiError(fetchImage(`data:;base64,${"A".repeat(26_666_672)}`), "image_too_large", /exceeds 20000000 bytes/);
  });
});
