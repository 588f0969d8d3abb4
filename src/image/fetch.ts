/**
 * Bounded, SSRF-safe image fetch: an https URL (each redirect hop re-checked before it is requested)
 * or a `data:` URI, read into memory under a byte cap that is counted while streaming.
 *
 * Runs unchanged in workerd and Node: only web-platform APIs (fetch, streams, AbortController, timers).
 *
 * DNS: Workers cannot resolve a name themselves before `fetch()`, and in production Cloudflare's fetch
 * refuses to connect to private, loopback and link-local addresses on its own. The host check here
 * stops literals and well-known internal names early with a clear 403; `resolve` lets a runtime that
 * *can* resolve (Node, or DNS-over-HTTPS) also refuse names that point inside. Resolving before
 * connecting is still open to DNS rebinding, so it is a second layer, never the only one.
 */
import { ApiError } from "../errors";
import { checkImageUrl, classifyAddress, isLoopbackHost, looksLikeIpLiteral, type UrlPolicy } from "./address";

export interface FetchImageOptions {
  /** Byte cap on the image, counted while reading (and on a data URI before and after decoding). */
  maxBytes?: number;
  /** Time allowed per request until its response headers arrive (Workers cannot time connect alone). */
  headersTimeoutMs?: number;
  /** Time allowed for the whole fetch, every redirect and the body included. */
  totalTimeoutMs?: number;
  /** Redirects followed at most; one more is refused. */
  maxRedirects?: number;
  /** Development only: allow http:// and any port for loopback hosts (127.0.0.0/8, ::1, localhost). */
  allowHttpLoopback?: boolean;
  /** Resolves a hostname to addresses; each must be allowed. None by default (see the module comment). */
  resolve?: (hostname: string) => Promise<string[]>;
  /** The fetch to use; `globalThis.fetch` by default. */
  fetch?: typeof fetch;
  /** Aborts the fetch (for example when the client goes away). */
  signal?: AbortSignal;
}

export interface FetchedImage {
  bytes: Uint8Array;
  /** The origin's Content-Type, or a data URI's media type; null when absent (sniff the bytes). */
  contentType: string | null;
  /** The URL the bytes came from, after redirects; null for a data URI. */
  finalUrl: string | null;
  redirects: number;
  source: "url" | "data";
}

type Limits = Required<Pick<FetchImageOptions, "maxBytes" | "headersTimeoutMs" | "totalTimeoutMs" | "maxRedirects" | "allowHttpLoopback">>;

export const DEFAULT_FETCH_OPTIONS: Readonly<Limits> = Object.freeze({
  maxBytes: 20_000_000,
  headersTimeoutMs: 5_000,
  totalTimeoutMs: 10_000,
  maxRedirects: 3,
  allowHttpLoopback: false,
});

type ResolvedOptions = Limits & Pick<FetchImageOptions, "resolve" | "signal"> & { fetch: typeof fetch };

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** Fetches an image from an http(s) URL or decodes a `data:` URI. Every failure is an `ApiError`. */
export async function fetchImage(input: string, options: FetchImageOptions = {}): Promise<FetchedImage> {
  const opts = resolveOptions(options);
  if (/^\s*data:/i.test(input)) return decodeDataUri(input.trimStart(), opts.maxBytes);
  return fetchUrl(input, opts);
}

function resolveOptions(options: FetchImageOptions): ResolvedOptions {
  const d = DEFAULT_FETCH_OPTIONS;
  // `??` rather than a spread, so an explicit `undefined` still gets the default.
  return {
    maxBytes: options.maxBytes ?? d.maxBytes,
    headersTimeoutMs: options.headersTimeoutMs ?? d.headersTimeoutMs,
    totalTimeoutMs: options.totalTimeoutMs ?? d.totalTimeoutMs,
    maxRedirects: options.maxRedirects ?? d.maxRedirects,
    allowHttpLoopback: options.allowHttpLoopback ?? d.allowHttpLoopback,
    resolve: options.resolve,
    signal: options.signal,
    // Called unbound: workerd throws "Illegal invocation" when fetch is called on another `this`.
    fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
  };
}

// ---------------------------------------------------------------------------------------------------
// URLs

async function fetchUrl(input: string, opts: ResolvedOptions): Promise<FetchedImage> {
  const policy: UrlPolicy = { allowHttpLoopback: opts.allowHttpLoopback };
  let url = checkImageUrl(input, policy);
  const deadline = new Deadline(opts.totalTimeoutMs, opts.signal);
  try {
    for (let redirects = 0; ; redirects++) {
      const response = await requestHop(url, policy, opts, deadline);
      if (!REDIRECT_STATUSES.has(response.status)) {
        return await readImage(response, url, redirects, opts.maxBytes, deadline.signal);
      }
      discard(response);
      if (redirects >= opts.maxRedirects) {
        throw fetchFailed(`too many redirects (more than ${opts.maxRedirects})`);
      }
      url = nextHop(response, url, policy);
    }
  } catch (err) {
    throw deadline.explain(err);
  } finally {
    deadline.dispose();
  }
}

/** One request, with the resolver check first; the headers timer covers both. */
async function requestHop(url: URL, policy: UrlPolicy, opts: ResolvedOptions, deadline: Deadline): Promise<Response> {
  deadline.startHeadersTimer(opts.headersTimeoutMs);
  try {
    if (opts.resolve && needsResolving(url.hostname, policy)) {
      await untilAborted(checkResolvedHost(url.hostname, opts.resolve), deadline.signal);
    }
    const pending = opts.fetch(url.href, {
      method: "GET",
      redirect: "manual",
      signal: deadline.signal,
      headers: { accept: "image/*" },
    });
    // An injected fetch may ignore the signal; a response that arrives after the abort is discarded.
    return await untilAborted(pending, deadline.signal, discard);
  } finally {
    deadline.stopHeadersTimer();
  }
}

function needsResolving(hostname: string, policy: UrlPolicy): boolean {
  if (looksLikeIpLiteral(hostname)) return false; // already classified by checkImageUrl
  return !(policy.allowHttpLoopback && isLoopbackHost(hostname));
}

async function checkResolvedHost(hostname: string, resolve: (hostname: string) => Promise<string[]>): Promise<void> {
  let addresses: string[];
  try {
    addresses = await resolve(hostname);
  } catch (err) {
    throw fetchFailed("could not resolve the image host", err);
  }
  if (addresses.length === 0) throw fetchFailed("could not resolve the image host");
  for (const address of addresses) {
    const verdict = classifyAddress(address);
    if (!verdict.allowed) {
      throw new ApiError("image_url_forbidden", `Image URL host resolves to a forbidden address (${verdict.reason}).`, {
        param: "image_url",
      });
    }
  }
}

/** The next URL of a redirect, resolved against the current one and checked before anything connects. */
function nextHop(response: Response, current: URL, policy: UrlPolicy): URL {
  const location = response.headers.get("location");
  if (!location) throw fetchFailed(`the origin answered HTTP ${response.status} without a Location`);
  let target: URL;
  try {
    target = new URL(location, current);
  } catch {
    throw fetchFailed("the origin redirected to a malformed URL");
  }
  try {
    return checkImageUrl(target, policy);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    // A forbidden target stays 403 (that is what the client must learn); anything else is the
    // origin's fault, not the client's, so it is a 502 rather than a 400.
    if (err.code === "image_url_forbidden") {
      throw new ApiError(err.code, `Redirect refused: ${err.message}`, { param: "image_url" });
    }
    throw fetchFailed(`the origin redirected to an unusable URL (${err.message.replace(/\.$/, "")})`);
  }
}

async function readImage(response: Response, url: URL, redirects: number, maxBytes: number, signal: AbortSignal): Promise<FetchedImage> {
  if (!response.ok) {
    discard(response);
    throw fetchFailed(`the origin answered HTTP ${response.status}`);
  }
  if (declaredLength(response) > maxBytes) {
    discard(response);
    throw tooLarge(maxBytes);
  }
  if (!response.body) throw fetchFailed("empty body");
  const bytes = await readCapped(response.body, maxBytes, signal);
  if (bytes.byteLength === 0) throw fetchFailed("empty body");
  return { bytes, contentType: response.headers.get("content-type"), finalUrl: url.href, redirects, source: "url" };
}

/** Content-Length as a refusal hint only (the body is counted anyway); 0 when absent or encoded. */
function declaredLength(response: Response): number {
  // With Content-Encoding the header counts compressed bytes, while the cap applies to what we read.
  const encoding = response.headers.get("content-encoding");
  if (encoding && encoding.toLowerCase() !== "identity") return 0;
  const length = Number(response.headers.get("content-length") ?? "0");
  return Number.isFinite(length) ? length : 0;
}

/** Reads a stream to the end, refusing (and cancelling the stream) as soon as it passes `maxBytes`. */
/** Reads a stream into memory, refusing as soon as it exceeds `maxBytes` (the stream is cancelled). */
export async function readCapped(
  body: ReadableStream<Uint8Array>,
  maxBytes: number,
  signal?: AbortSignal,
  onTooLarge: (maxBytes: number) => ApiError = tooLarge,
): Promise<Uint8Array> {
  const reader = body.getReader();
  // A body that fails is reported through read(); its `closed` promise must not also surface as unhandled.
  reader.closed.catch(() => {});
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await (signal ? untilAborted(reader.read(), signal) : reader.read());
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) throw onTooLarge(maxBytes);
      chunks.push(value);
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err;
  }
  return concat(chunks, total);
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** Drops a response body we will not read, so the connection is released. */
function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}

/** Settles with `promise`, or rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal, onLate?: (value: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        if (signal.aborted) onLate?.(value);
        else resolve(value);
      },
      (err) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

/**
 * The two timers and the caller's signal, merged into one AbortSignal. The abort reason is the
 * `ApiError` the client will see, so whoever notices the abort first can rethrow it as is.
 */
class Deadline {
  private readonly controller = new AbortController();
  private readonly totalTimer: ReturnType<typeof setTimeout>;
  private headersTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly outer: AbortSignal | undefined;
  private readonly onOuterAbort = () => this.abort(fetchFailed("the fetch was cancelled"));

  constructor(totalMs: number, outer?: AbortSignal) {
    this.outer = outer;
    this.totalTimer = setTimeout(
      () => this.abort(new ApiError("image_fetch_timeout", `Image fetch timed out: not complete within ${totalMs} ms.`)),
      totalMs,
    );
    if (outer?.aborted) this.onOuterAbort();
    else outer?.addEventListener("abort", this.onOuterAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  startHeadersTimer(ms: number): void {
    this.stopHeadersTimer();
    this.headersTimer = setTimeout(
      () => this.abort(new ApiError("image_fetch_timeout", `Image fetch timed out: no response headers within ${ms} ms.`)),
      ms,
    );
  }

  stopHeadersTimer(): void {
    if (this.headersTimer !== undefined) clearTimeout(this.headersTimer);
    this.headersTimer = undefined;
  }

  /** The error to show for whatever ended the fetch: ours as is, an abort as its reason, the rest as 502. */
  explain(err: unknown): ApiError {
    if (err instanceof ApiError) return err;
    const reason: unknown = this.controller.signal.reason;
    if (this.controller.signal.aborted && reason instanceof ApiError) return reason;
    return fetchFailed("the origin could not be reached", err);
  }

  dispose(): void {
    clearTimeout(this.totalTimer);
    this.stopHeadersTimer();
    this.outer?.removeEventListener("abort", this.onOuterAbort);
  }

  private abort(reason: ApiError): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }
}

// ---------------------------------------------------------------------------------------------------
// data: URIs

/**
 * Decodes `data:[<mediatype>][;base64],<data>` (RFC 2397; base64 as the Fetch standard reads it, after
 * percent-decoding). The byte cap is applied to a lower bound of the decoded size before anything is
 * allocated, then to the exact size.
 */
export function decodeDataUri(uri: string, maxBytes: number = DEFAULT_FETCH_OPTIONS.maxBytes): FetchedImage {
  if (!/^data:/i.test(uri)) throw malformedData("it must start with data:");
  const comma = uri.indexOf(",");
  if (comma < 0) throw malformedData("missing ','");
  const meta = uri.slice(5, comma);
  // Bounded before any regex looks at it (a media type is short; a long one only costs CPU).
  if (meta.length > MAX_MEDIA_TYPE_LENGTH) throw malformedData("media type too long");
  const payload = uri.slice(comma + 1);
  const isBase64 = /;\s*base64\s*$/i.test(meta);
  const contentType = parseMediaType(isBase64 ? meta.replace(/;\s*base64\s*$/i, "") : meta);

  if (minimumDecodedLength(payload, isBase64, maxBytes) > maxBytes) throw tooLarge(maxBytes);
  const bytes = isBase64 ? decodeBase64Payload(payload, maxBytes) : percentDecode(payload);
  if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes);
  if (bytes.byteLength === 0) throw new ApiError("invalid_image_url", "The data URI contains no data.", { param: "image_url" });
  return { bytes, contentType, finalUrl: null, redirects: 0, source: "data" };
}

const MAX_MEDIA_TYPE_LENGTH = 256;
const MEDIA_TYPE = /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+(\s*;\s*[a-z0-9!#$&^_.+-]+=("[^"]*"|[^;"]*))*$/i;

function parseMediaType(text: string): string | null {
  const mediaType = text.trim();
  if (mediaType === "") return null;
  if (!MEDIA_TYPE.test(mediaType)) throw malformedData("invalid media type");
  return mediaType;
}

/**
 * A size the decoded data cannot be smaller than, computed without allocating. Counting is skipped
 * when even the raw length cannot exceed the cap (the usual case: one pass less over a large string).
 */
function minimumDecodedLength(payload: string, isBase64: boolean, maxBytes: number): number {
  if ((isBase64 ? Math.ceil((payload.length * 3) / 4) : payload.length) <= maxBytes) return 0;
  let significant = 0;
  for (let i = 0; i < payload.length; i++) {
    const code = payload.charCodeAt(i);
    if (isBase64 && isAsciiWhitespace(code)) continue;
    significant++;
    if (code === 0x25) i += 2; // %XX is one byte
  }
  if (!isBase64) return significant;
  let padding = 0; // trailing '=' (at most 2), whitespace between them ignored as the decoder does
  for (let i = payload.length - 1; i >= 0 && padding < 2; i--) {
    const code = payload.charCodeAt(i);
    if (code === 0x3d) padding++;
    else if (!isAsciiWhitespace(code)) break;
  }
  return Math.floor((Math.max(0, significant - padding) * 3) / 4);
}

/**
 * Base64 after percent-decoding, as the Fetch standard reads a data URI. `atob` is the standard's
 * forgiving-base64 decode (whitespace ignored, padding optional) and native: several times faster
 * than a JavaScript loop on a 20 MB image.
 */
function decodeBase64Payload(payload: string, maxBytes: number): Uint8Array {
  const text = payload.includes("%") ? latin1(percentDecode(payload)) : payload;
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    throw malformedData("invalid base64");
  }
  if (binary.length > maxBytes) throw tooLarge(maxBytes);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** UTF-8 bytes of `text` with each %XX replaced by its byte; a '%' without two hex digits is refused. */
function percentDecode(text: string): Uint8Array {
  if (/%(?![0-9a-f]{2})/i.test(text)) throw malformedData("invalid percent-encoding");
  const raw = new TextEncoder().encode(text);
  if (!text.includes("%")) return raw;
  const out = new Uint8Array(raw.length);
  let o = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x25) {
      out[o++] = (hexValue(raw[i + 1]) << 4) | hexValue(raw[i + 2]);
      i += 2;
    } else {
      out[o++] = raw[i];
    }
  }
  return out.subarray(0, o);
}

function hexValue(code: number): number {
  if (code <= 0x39) return code - 0x30;
  return (code | 0x20) - 0x61 + 10;
}

/** Bytes as a string of the same char codes (only for the rare percent-encoded base64 payload). */
function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return text;
}

function isAsciiWhitespace(code: number): boolean {
  return code === 0x20 || code === 0x09 || code === 0x0a || code === 0x0c || code === 0x0d;
}

// ---------------------------------------------------------------------------------------------------
// Errors

function fetchFailed(detail: string, cause?: unknown): ApiError {
  return new ApiError("image_fetch_failed", `Image fetch failed: ${detail}.`, { param: "image_url", cause });
}

function tooLarge(maxBytes: number): ApiError {
  return new ApiError("image_too_large", `Image exceeds ${maxBytes} bytes.`, { param: "image_url" });
}

function malformedData(detail: string): ApiError {
  return new ApiError("invalid_image_url", `Malformed data URI: ${detail}.`, { param: "image_url" });
}
