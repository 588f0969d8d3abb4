/**
 * SSRF guard for image URLs: which hosts and addresses the edge may fetch from.
 *
 * The guard fails closed: anything it cannot parse or place is refused. IP literals are parsed in every
 * notation a URL parser or `inet_aton` accepts (decimal, octal, hex, 1–4 parts), so `0x7f.1`,
 * `2130706433` and `::ffff:7f00:1` are all seen as loopback, whatever reaches us (raw text or the
 * already-normalized `URL.hostname`). IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64,
 * 6to4) are judged by the embedded address.
 */
import ipaddr from "ipaddr.js";
import { ApiError } from "../errors";

export interface AddressVerdict {
  allowed: boolean;
  /** Why: "public", or the class that got it refused ("loopback", "private", "link-local (cloud metadata)"…). */
  reason: string;
}

export interface UrlPolicy {
  /** Development only: allow http:// (and any port) when the host is a loopback literal or `localhost`. */
  allowHttpLoopback?: boolean;
}

export const MAX_IMAGE_URL_LENGTH = 2048;

/** Ports an image URL may name in production (an empty `URL.port` means the scheme's default). */
const ALLOWED_PORTS = new Set(["", "80", "443"]);

type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** First match wins, so more specific ranges come first. */
const FORBIDDEN_IPV4: ReadonlyArray<[string, string]> = [
  ["169.254.169.254/32", "link-local (cloud metadata)"],
  ["255.255.255.255/32", "broadcast"],
  ["0.0.0.0/8", "unspecified"],
  ["10.0.0.0/8", "private"],
  ["100.64.0.0/10", "carrier-grade NAT"],
  ["127.0.0.0/8", "loopback"],
  ["169.254.0.0/16", "link-local"],
  ["172.16.0.0/12", "private"],
  ["192.0.0.0/24", "IETF protocol assignments"],
  ["192.0.2.0/24", "documentation"],
  ["192.88.99.0/24", "reserved (6to4 relay anycast)"],
  ["192.168.0.0/16", "private"],
  ["198.18.0.0/15", "benchmarking"],
  ["198.51.100.0/24", "documentation"],
  ["203.0.113.0/24", "documentation"],
  ["224.0.0.0/4", "multicast"],
  ["240.0.0.0/4", "reserved"],
];

/** IPv6 ranges refused outright. Everything outside 2000::/3 (global unicast) is refused as well. */
const FORBIDDEN_IPV6: ReadonlyArray<[string, string]> = [
  ["::/128", "unspecified"],
  ["::1/128", "loopback"],
  ["64:ff9b:1::/48", "NAT64 (local use)"],
  ["100::/64", "discard-only"],
  ["2001::/32", "Teredo"],
  ["2001:db8::/32", "documentation"],
  ["2001::/23", "IETF protocol assignments"],
  ["3fff::/20", "documentation"],
  ["fc00::/7", "unique local (private)"],
  ["fe80::/10", "link-local"],
  ["fec0::/10", "site-local"],
  ["ff00::/8", "multicast"],
];

/** IPv6 prefixes whose meaning is "this IPv4 address": the verdict is the embedded address's. */
const EMBEDDING_IPV6: ReadonlyArray<[string, string, (bytes: number[]) => number[]]> = [
  ["::ffff:0:0/96", "IPv4-mapped", (b) => b.slice(12, 16)],
  ["::/96", "IPv4-compatible", (b) => b.slice(12, 16)],
  ["64:ff9b::/96", "NAT64", (b) => b.slice(12, 16)],
  ["2002::/16", "6to4", (b) => b.slice(2, 6)],
];

const parseTable = (table: ReadonlyArray<[string, string]>): Array<[Cidr, string]> =>
  table.map(([cidr, reason]) => [ipaddr.parseCIDR(cidr), reason]);

const IPV4_RANGES = parseTable(FORBIDDEN_IPV4);
const IPV6_RANGES = parseTable(FORBIDDEN_IPV6);
const IPV6_EMBEDDING = EMBEDDING_IPV6.map(([cidr, name, extract]) => [ipaddr.parseCIDR(cidr), name, extract] as const);
const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR("2000::/3");

/** Exact hostnames that name cloud metadata services or this machine. */
const FORBIDDEN_HOSTNAMES = new Set(["localhost", "metadata", "metadata.google.internal", "instance-data"]);
/** Suffixes that only resolve inside a private network (or to this machine). */
const FORBIDDEN_SUFFIXES = [".localhost", ".internal", ".local", ".localdomain", ".home.arpa"];

/**
 * Parses an IPv4 literal the way the WHATWG URL parser and `inet_aton` do: 1–4 dot-separated parts,
 * each decimal, octal (leading 0) or hex (0x); the last part fills the remaining bytes; one trailing dot
 * is allowed. Returns the address as 4 bytes, or null when `text` is not an IPv4 literal.
 */
export function parseIpv4(text: string): number[] | null {
  const parts = text.split(".");
  if (parts.length > 1 && parts[parts.length - 1] === "") parts.pop();
  if (parts.length === 0 || parts.length > 4) return null;
  const values = parts.map(parseIpv4Part);
  if (values.some((v) => v === null)) return null;
  const nums = values as number[];
  const last = nums[nums.length - 1];
  if (nums.slice(0, -1).some((v) => v > 255)) return null;
  if (last >= 256 ** (5 - nums.length)) return null;
  let value = last;
  nums.slice(0, -1).forEach((v, i) => {
    value += v * 256 ** (3 - i);
  });
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255];
}

function parseIpv4Part(part: string): number | null {
  if (part === "") return null;
  let digits = part;
  let radix = 10;
  if (/^0x/i.test(part)) {
    digits = part.slice(2);
    radix = 16;
  } else if (part.length > 1 && part.startsWith("0")) {
    digits = part.slice(1);
    radix = 8;
  }
  if (digits === "") return 0; // "0x" and "0" alone both mean zero
  const pattern = radix === 16 ? /^[0-9a-f]+$/i : radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!pattern.test(digits)) return null;
  const value = Number.parseInt(digits, radix);
  // Beyond 2^32 the part can never be valid; the cap also keeps parseInt exact.
  return Number.isSafeInteger(value) ? value : null;
}

/**
 * Parses an IPv6 literal: optional brackets, zone id ignored (it cannot change the address class).
 * Our own parser (the WHATWG URL algorithm, which matches `inet_pton`): ipaddr.js reads `::127.0.0.1`
 * as `::ffff:127.0.0.1`, which is not the address a URL parser or the OS would use.
 */
export function parseIpv6(text: string): ipaddr.IPv6 | null {
  let body = text;
  if (body.startsWith("[") && body.endsWith("]")) body = body.slice(1, -1);
  const zone = body.indexOf("%");
  if (zone >= 0) body = body.slice(0, zone);
  const parts = parseIpv6Pieces(body);
  return parts ? new ipaddr.IPv6(parts) : null;
}

function parseIpv6Pieces(input: string): number[] | null {
  const pieces = [0, 0, 0, 0, 0, 0, 0, 0];
  let index = 0;
  let compress: number | null = null;
  let p = 0;
  if (input[0] === ":") {
    if (input[1] !== ":") return null;
    p = 2;
    compress = ++index;
  }
  while (p < input.length) {
    if (index === 8) return null;
    if (input[p] === ":") {
      if (compress !== null) return null;
      p++;
      compress = ++index;
      continue;
    }
    const start = p;
    while (p - start < 4 && p < input.length && /[0-9a-f]/i.test(input[p])) p++;
    if (input[p] === ".") {
      // A dotted IPv4 tail: exactly four decimal parts without leading zeros, in the last two pieces.
      if (p === start || index > 6) return null;
      const v4 = parseStrictDottedQuad(input.slice(start));
      if (!v4) return null;
      pieces[index++] = (v4[0] << 8) | v4[1];
      pieces[index++] = (v4[2] << 8) | v4[3];
      p = input.length;
      break;
    }
    if (p === start) return null;
    pieces[index++] = Number.parseInt(input.slice(start, p), 16);
    if (p < input.length) {
      if (input[p] !== ":" || p + 1 === input.length) return null;
      p++;
    }
  }
  if (compress === null) return index === 8 ? pieces : null;
  const tail = pieces.slice(compress, index);
  pieces.fill(0, compress);
  pieces.splice(8 - tail.length, tail.length, ...tail);
  return pieces;
}

function parseStrictDottedQuad(text: string): number[] | null {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((x) => !/^(0|[1-9][0-9]{0,2})$/.test(x))) return null;
  const bytes = parts.map(Number);
  return bytes.every((b) => b <= 255) ? bytes : null;
}

/**
 * Whether `text` must be read as an IP literal rather than a hostname: any IPv6 shape, or a last label
 * that is a number (the WHATWG "ends in a number" rule, which makes the URL parser treat it as IPv4).
 */
export function looksLikeIpLiteral(text: string): boolean {
  if (text.includes(":") || text.startsWith("[")) return true;
  const labels = text.split(".");
  if (labels.length > 1 && labels[labels.length - 1] === "") labels.pop();
  const last = labels[labels.length - 1] ?? "";
  return /^[0-9]+$/.test(last) || /^0x[0-9a-f]*$/i.test(last);
}

/** Classifies an IP address given in any notation. Anything that is not an IP address is refused. */
export function classifyAddress(ip: string): AddressVerdict {
  const v4 = parseIpv4(ip);
  if (v4) return classifyIpv4(v4);
  const v6 = parseIpv6(ip);
  if (v6) return classifyIpv6(v6);
  return { allowed: false, reason: "not a valid IP address" };
}

function classifyIpv4(bytes: number[]): AddressVerdict {
  const addr = ipaddr.IPv4.parse(bytes.join("."));
  for (const [cidr, reason] of IPV4_RANGES) if (addr.match(cidr)) return { allowed: false, reason };
  // Defence in depth: ipaddr.js knows a few more special ranges (AMT, AS112…).
  const range = addr.range();
  if (range !== "unicast" && range !== "as112" && range !== "amt") return { allowed: false, reason: range };
  return { allowed: true, reason: "public" };
}

function classifyIpv6(addr: ipaddr.IPv6): AddressVerdict {
  const bytes = addr.toByteArray();
  for (const [cidr, name, extract] of IPV6_EMBEDDING) {
    // ::/96 also holds :: and ::1, which the table below names precisely.
    if (!addr.match(cidr) || (name === "IPv4-compatible" && bytes.slice(0, 15).every((b) => b === 0))) continue;
    const inner = classifyIpv4(extract(bytes));
    if (!inner.allowed) return { allowed: false, reason: `${name} ${inner.reason}` };
    // IPv4-compatible addresses are deprecated (RFC 4291) and never routed: nothing legitimate uses them.
    return name === "IPv4-compatible" ? { allowed: false, reason: "IPv4-compatible (deprecated)" } : inner;
  }
  for (const [cidr, reason] of IPV6_RANGES) if (addr.match(cidr)) return { allowed: false, reason };
  if (!addr.match(GLOBAL_UNICAST_V6)) return { allowed: false, reason: "reserved" };
  return { allowed: true, reason: "public" };
}

/** Classifies a URL host (as `URL.hostname` gives it, or raw): IP literals by address, names by rule. */
export function classifyHost(host: string): AddressVerdict {
  const name = host.toLowerCase();
  if (looksLikeIpLiteral(name)) return classifyAddress(name);
  return classifyHostname(name);
}

function classifyHostname(host: string): AddressVerdict {
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  if (name === "") return { allowed: false, reason: "empty host" };
  // "a..b" or ".a" cannot be resolved as written; refuse rather than guess what a resolver makes of it.
  if (name.split(".").includes("")) return { allowed: false, reason: "empty label in hostname" };
  if (FORBIDDEN_HOSTNAMES.has(name)) return { allowed: false, reason: `reserved hostname ${name}` };
  const suffix = FORBIDDEN_SUFFIXES.find((s) => name.endsWith(s));
  if (suffix) return { allowed: false, reason: `internal domain *${suffix}` };
  // A single label is resolved against local search domains: never a public host.
  if (!name.includes(".")) return { allowed: false, reason: "hostname without a dot" };
  return { allowed: true, reason: "public" };
}

/** True for the hosts the development loopback exception covers: 127.0.0.0/8, ::1 and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, "");
  if (name === "localhost") return true;
  const v4 = parseIpv4(name);
  if (v4) return v4[0] === 127;
  const v6 = parseIpv6(name);
  return v6 !== null && v6.range() === "loopback";
}

/**
 * Validates an image URL before anything connects to it. Returns the parsed URL.
 *
 * - 400 invalid_image_url: malformed, longer than 2048 characters, not http(s), or carrying credentials;
 * - 403 image_url_forbidden: plain http (unless the loopback exception applies), a port other than
 *   80/443, or a host that is (or names) a non-public address.
 */
export function checkImageUrl(input: string | URL, policy: UrlPolicy = {}): URL {
  const url = parseImageUrl(input);
  const loopbackException = policy.allowHttpLoopback === true && isLoopbackHost(url.hostname);
  if (loopbackException) return url;
  // The host first: "private" tells a client more than "use https" when both apply.
  const verdict = classifyHost(url.hostname);
  if (!verdict.allowed) throw forbidden(`Image URL host is not allowed (${verdict.reason}).`);
  if (url.protocol !== "https:") throw forbidden("Image URLs must use https.");
  if (!ALLOWED_PORTS.has(url.port)) throw forbidden(`Image URL port ${url.port} is not allowed (only 443 and 80).`);
  return url;
}

function parseImageUrl(input: string | URL): URL {
  const text = typeof input === "string" ? input : input.href;
  if (text.length > MAX_IMAGE_URL_LENGTH) {
    throw invalidUrl(`Image URL exceeds ${MAX_IMAGE_URL_LENGTH} characters.`);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalidUrl("Image URL is malformed.");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw invalidUrl("Image URL must be an https URL or a data URI.");
  }
  if (url.username !== "" || url.password !== "") {
    throw invalidUrl("Image URL must not contain credentials.");
  }
  return url;
}

const invalidUrl = (message: string) => new ApiError("invalid_image_url", message, { param: "image_url" });
const forbidden = (message: string) => new ApiError("image_url_forbidden", message, { param: "image_url" });
