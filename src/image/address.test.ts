// The SSRF guard, checked on the classifier and the URL checker directly: nothing here connects.
import { describe, expect, it } from "vitest";
import { ApiError } from "../errors";
import {
  checkImageUrl,
  classifyAddress,
  classifyHost,
  isLoopbackHost,
  looksLikeIpLiteral,
  MAX_IMAGE_URL_LENGTH,
  parseIpv4,
  parseIpv6,
} from "./address";

function expectApiError(fn: () => unknown, code: string, message?: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).code).toBe(code);
    if (message) expect((err as ApiError).message).toMatch(message);
    return;
  }
  expect.fail(`expected ApiError ${code}`);
}

describe("parseIpv4: every notation the URL parser accepts", () => {
  it.each([
    ["127.0.0.1", [127, 0, 0, 1]],
    ["2130706433", [127, 0, 0, 1]],
    ["0177.0.0.1", [127, 0, 0, 1]],
    ["0x7f.0.0.1", [127, 0, 0, 1]],
    ["0X7F.0.0.1", [127, 0, 0, 1]],
    ["0x7f000001", [127, 0, 0, 1]],
    ["017700000001", [127, 0, 0, 1]],
    ["127.1", [127, 0, 0, 1]],
    ["127.0.1", [127, 0, 0, 1]],
    ["10.1", [10, 0, 0, 1]],
    ["127.0.0.1.", [127, 0, 0, 1]],
    ["0xa9.0xfe.0xa9.0xfe", [169, 254, 169, 254]],
    ["0251.0376.0251.0376", [169, 254, 169, 254]],
    ["2852039166", [169, 254, 169, 254]],
    ["169.254.43518", [169, 254, 169, 254]],
    ["0", [0, 0, 0, 0]],
    ["0x", [0, 0, 0, 0]],
    ["00", [0, 0, 0, 0]],
    ["4294967295", [255, 255, 255, 255]],
  ])("%s → %j", (text, bytes) => {
    expect(parseIpv4(text)).toEqual(bytes);
  });

  it.each([
    "1.2.3.4.5",
    "256.0.0.1",
    "1.2.3.256",
    "08.0.0.1",
    "1.2.3.09",
    "0x100.0.0.1",
    "4294967296",
    "1.16777216",
    "",
    ".",
    "1..2",
    "0x1g",
    "example.com",
    "::1",
    "99999999999999999999",
  ])("%j is not an IPv4 literal", (text) => {
    expect(parseIpv4(text)).toBeNull();
  });

  it("agrees with the WHATWG URL parser on every form (accepted ones give the same address, refused ones null)", () => {
    const forms = [
      "127.0.0.1",
      "2130706433",
      "0177.0.0.1",
      "0x7f.0.0.1",
      "0x7f000001",
      "127.1",
      "10.1",
      "127.0.1",
      "0xa9.0xfe.0xa9.0xfe",
      "0251.0376.0251.0376",
      "2852039166",
      "169.254.43518",
      "0",
      "0x",
      "00",
      "017700000001",
      "127.0.0.1.",
      "256.0.0.1",
      "08.0.0.1",
      "1.2.3.09",
      "0x100.0.0.1",
      "4294967296",
      "1.2.3.4.5",
      "3232235777",
      "0300.0250.1.1",
      "0xc0a80101",
    ];
    for (const form of forms) {
      let viaUrl: string | null;
      try {
        viaUrl = new URL(`http://${form}/`).hostname;
      } catch {
        viaUrl = null;
      }
      expect(parseIpv4(form)?.join(".") ?? null, form).toBe(viaUrl);
    }
  });
});

describe("classifyAddress: IPv4 classes", () => {
  it.each([
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["127.0.0.1", "loopback"],
    ["127.255.255.254", "loopback"],
    ["10.0.0.1", "private"],
    ["10.255.255.255", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.1.1", "private"],
    ["169.254.169.254", "link-local (cloud metadata)"],
    ["169.254.1.1", "link-local"],
    ["100.64.0.1", "carrier-grade NAT"],
    ["100.100.100.200", "carrier-grade NAT"], // Alibaba Cloud's metadata service
    ["100.127.255.255", "carrier-grade NAT"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["240.0.0.1", "reserved"],
    ["254.1.1.1", "reserved"],
    ["198.18.0.1", "benchmarking"],
    ["198.19.255.255", "benchmarking"],
    ["192.0.2.1", "documentation"],
    ["198.51.100.7", "documentation"],
    ["203.0.113.9", "documentation"],
    ["192.0.0.8", "IETF protocol assignments"],
    ["192.0.0.170", "IETF protocol assignments"],
    ["192.88.99.1", "reserved (6to4 relay anycast)"],
  ])("%s is refused (%s)", (ip, reason) => {
    expect(classifyAddress(ip)).toEqual({ allowed: false, reason });
  });

  it.each([
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.15.255.255",
    "172.32.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "169.253.255.255",
    "11.0.0.1",
    "223.1.1.1",
    "192.0.1.1",
    "192.169.0.1",
  ])("%s is public", (ip) => {
    expect(classifyAddress(ip)).toEqual({ allowed: true, reason: "public" });
  });

  it.each([
    ["2130706433", "loopback"],
    ["0177.0.0.1", "loopback"],
    ["0x7f.0.0.1", "loopback"],
    ["0x7f000001", "loopback"],
    ["127.1", "loopback"],
    ["10.1", "private"],
    ["0xa9fea9fe", "link-local (cloud metadata)"],
    ["0251.0376.0251.0376", "link-local (cloud metadata)"],
    ["169.254.43518", "link-local (cloud metadata)"],
    ["3232235777", "private"],
    ["0", "unspecified"],
    ["0x", "unspecified"],
  ])("odd notation %s is seen as %s", (ip, reason) => {
    expect(classifyAddress(ip)).toEqual({ allowed: false, reason });
  });

  it.each(["1.2.3.4.5", "256.1.1.1", "08.0.0.1", "example.com", "", "not an ip", "::ffff:0x7f.0.0.1"])(
    "%j is refused as unparseable (fail closed)",
    (ip) => {
      expect(classifyAddress(ip)).toEqual({ allowed: false, reason: "not a valid IP address" });
    },
  );
});

describe("classifyAddress: IPv6 classes and embedded IPv4", () => {
  it.each([
    ["::", "unspecified"],
    ["::1", "loopback"],
    ["[::1]", "loopback"],
    ["0:0:0:0:0:0:0:1", "loopback"],
    ["fe80::1", "link-local"],
    ["fe80::1%eth0", "link-local"],
    ["[fe80::1%25eth0]", "link-local"],
    ["febf:ffff::1", "link-local"],
    ["fc00::1", "unique local (private)"],
    ["fd12:3456::1", "unique local (private)"],
    ["fd00:ec2::254", "unique local (private)"], // AWS's IPv6 metadata address
    ["fec0::1", "site-local"],
    ["ff02::1", "multicast"],
    ["FF05::1:3", "multicast"],
    ["::ffff:127.0.0.1", "IPv4-mapped loopback"],
    ["::ffff:7f00:1", "IPv4-mapped loopback"],
    ["[::ffff:7f00:1]", "IPv4-mapped loopback"],
    ["0:0:0:0:0:ffff:c0a8:101", "IPv4-mapped private"],
    ["::ffff:10.0.0.1", "IPv4-mapped private"],
    ["::ffff:169.254.169.254", "IPv4-mapped link-local (cloud metadata)"],
    ["::ffff:a9fe:a9fe", "IPv4-mapped link-local (cloud metadata)"],
    ["::ffff:0.0.0.0", "IPv4-mapped unspecified"],
    ["::127.0.0.1", "IPv4-compatible loopback"],
    ["::7f00:1", "IPv4-compatible loopback"],
    ["::a00:1", "IPv4-compatible private"],
    ["::8.8.8.8", "IPv4-compatible (deprecated)"],
    ["64:ff9b::10.0.0.1", "NAT64 private"],
    ["64:ff9b::a9fe:a9fe", "NAT64 link-local (cloud metadata)"],
    ["64:ff9b::7f00:1", "NAT64 loopback"],
    ["64:ff9b:1::1", "NAT64 (local use)"],
    ["2002:7f00:1::", "6to4 loopback"],
    ["2002:c0a8:101::1", "6to4 private"],
    ["2002:a9fe:a9fe::1", "6to4 link-local (cloud metadata)"],
    ["2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"],
    ["2001:db8::1", "documentation"],
    ["3fff::1", "documentation"],
    ["2001:2::1", "IETF protocol assignments"],
    ["100::1", "discard-only"],
    ["::2", "reserved"],
    ["4000::1", "reserved"],
    ["5f00::1", "reserved"],
  ])("%s is refused (%s)", (ip, reason) => {
    expect(classifyAddress(ip)).toEqual({ allowed: false, reason });
  });

  it.each([
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "[2606:4700::1]",
    "2a00:1450:4001::1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
  ])("%s is public", (ip) => {
    expect(classifyAddress(ip)).toEqual({ allowed: true, reason: "public" });
  });
});

describe("classifyHost: names and literals as URL.hostname gives them", () => {
  it.each([
    ["localhost", "reserved hostname localhost"],
    ["LOCALHOST", "reserved hostname localhost"],
    ["localhost.", "reserved hostname localhost"],
    ["api.localhost", "internal domain *.localhost"],
    ["metadata", "reserved hostname metadata"],
    ["metadata.google.internal", "reserved hostname metadata.google.internal"],
    ["metadata.google.internal.", "reserved hostname metadata.google.internal"],
    ["instance-data", "reserved hostname instance-data"],
    ["instance-data.ec2.internal", "internal domain *.internal"],
    ["db.corp.internal", "internal domain *.internal"],
    ["printer.local", "internal domain *.local"],
    ["nas.home.arpa", "internal domain *.home.arpa"],
    ["intranet", "hostname without a dot"],
    ["kubernetes", "hostname without a dot"],
    ["", "empty host"],
    ["127.0.0.1..", "empty label in hostname"],
    ["example..com", "empty label in hostname"],
    [".example.com", "empty label in hostname"],
  ])("%j is refused (%s)", (host, reason) => {
    expect(classifyHost(host)).toEqual({ allowed: false, reason });
  });

  it.each(["example.com", "images.example.co.uk", "example.com.", "cdn.internal-images.com", "local.example.com"])(
    "%s is allowed",
    (host) => {
      expect(classifyHost(host)).toEqual({ allowed: true, reason: "public" });
    },
  );

  it("reads names that end in a number as IPv4 literals, the way the URL parser does", () => {
    expect(looksLikeIpLiteral("1.2.3.4.5")).toBe(true);
    expect(looksLikeIpLiteral("foo.0x10")).toBe(true);
    expect(looksLikeIpLiteral("[::1]")).toBe(true);
    expect(looksLikeIpLiteral("example.com")).toBe(false);
    expect(looksLikeIpLiteral("a.b.0x1g")).toBe(false);
    expect(classifyHost("1.2.3.4.5")).toEqual({ allowed: false, reason: "not a valid IP address" });
  });

  it("parseIpv6 agrees with the WHATWG URL parser (::127.0.0.1 is ::7f00:1, not IPv4-mapped)", () => {
    const forms = [
      "::1",
      "::",
      "1::",
      "1::2",
      "::ffff:127.0.0.1",
      "::127.0.0.1",
      "64:ff9b::10.0.0.1",
      "0:0:0:0:0:0:0:1",
      "1:2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7::",
      "::2:3:4:5:6:7:8",
      "FE80::A",
      "::ffff:1.2.3.4",
      "1:2:3:4:5:6:1.2.3.4",
      "1:2:3:4:5:6:7:8:9",
      "::1:2:3:4:5:6:7:8",
      ":::",
      "1:",
      ":1",
      "12345::",
      "::ffff:127.1",
      "::ffff:01.2.3.4",
      "::ffff:256.1.1.1",
      "1::2::3",
      "::ffff:0x7f.0.0.1",
      "g::1",
    ];
    for (const form of forms) {
      let viaUrl: string | null;
      try {
        viaUrl = new URL(`http://[${form}]/`).hostname;
      } catch {
        viaUrl = null;
      }
      const mine = parseIpv6(form);
      expect(mine ? `[${mine.toRFC5952String()}]` : null, form).toBe(viaUrl);
    }
  });

  it("classifies what new URL() makes of each odd notation the same as the raw text", () => {
    for (const form of [
      "2130706433",
      "0177.0.0.1",
      "0x7f.0.0.1",
      "0x7f000001",
      "127.1",
      "10.1",
      "0xa9fea9fe",
      "[::ffff:127.0.0.1]",
      "[::ffff:7f00:1]",
      "[64:ff9b::10.0.0.1]",
      "[2002:c0a8:101::1]",
      "[::127.0.0.1]",
      "%31%32%37.0.0.1",
      "１２７.0.0.1",
    ]) {
      const hostname = new URL(`https://${form}/`).hostname;
      const verdict = classifyHost(hostname);
      expect(verdict.allowed, `${form} → ${hostname}`).toBe(false);
      if (!form.includes("%") && !form.includes("１")) expect(verdict).toEqual(classifyHost(form));
    }
  });

  it("isLoopbackHost covers 127/8, ::1 and localhost, nothing else", () => {
    for (const host of ["127.0.0.1", "127.9.9.9", "[::1]", "::1", "localhost", "LOCALHOST.", "2130706433"]) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
    for (const host of ["10.0.0.1", "[::ffff:127.0.0.1]", "foo.localhost", "example.com", "0.0.0.0", "[::]"]) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });
});

describe("checkImageUrl", () => {
  it.each([
    "https://example.com/a.jpg",
    "https://example.com:443/a.jpg",
    "https://example.com:80/a.jpg",
    "https://8.8.8.8/x.png",
    "https://[2606:4700::1]/x.png",
    "HTTPS://EXAMPLE.COM/a.jpg",
  ])("accepts %s", (url) => {
    expect(checkImageUrl(url)).toBeInstanceOf(URL);
  });

  it("accepts a URL object and returns the parsed URL", () => {
    const url = checkImageUrl(new URL("https://example.com/cat.png?x=1"));
    expect(url.href).toBe("https://example.com/cat.png?x=1");
  });

  it.each([
    ["not a url", /malformed/],
    ["", /malformed/],
    ["https://", /malformed/],
    ["https://exa mple.com/", /malformed/],
    ["https://1.2.3.4.5/", /malformed/],
    ["ftp://example.com/a.jpg", /https URL or a data URI/],
    ["file:///etc/passwd", /https URL or a data URI/],
    ["javascript:alert(1)", /https URL or a data URI/],
    ["data:image/png;base64,AAAA", /https URL or a data URI/],
    ["gopher://127.0.0.1:6379/_INFO", /https URL or a data URI/],
    ["https://user:pass@example.com/a.jpg", /credentials/],
    ["https://user@example.com/a.jpg", /credentials/],
    [`https://example.com/${"a".repeat(MAX_IMAGE_URL_LENGTH)}`, /exceeds 2048 characters/],
  ])("refuses %j with 400 invalid_image_url", (url, message) => {
    expectApiError(() => checkImageUrl(url), "invalid_image_url", message);
  });

  it("accepts a URL of exactly 2048 characters", () => {
    const base = "https://example.com/";
    expect(checkImageUrl(base + "a".repeat(MAX_IMAGE_URL_LENGTH - base.length)).href).toHaveLength(MAX_IMAGE_URL_LENGTH);
  });

  it.each([
    ["http://example.com/a.jpg", /must use https/],
    ["https://example.com:8080/a.jpg", /port 8080/],
    ["https://example.com:22/", /port 22/],
    ["https://127.0.0.1/", /loopback/],
    ["https://127.0.0.1./", /loopback/],
    ["https://2130706433/", /loopback/],
    ["https://0x7f.1/", /loopback/],
    ["https://0177.0.0.1/", /loopback/],
    ["https://%31%32%37.0.0.1/", /loopback/],
    ["https://１２７.0.0.1/", /loopback/],
    ["https://[::1]/", /loopback/],
    ["https://[::ffff:127.0.0.1]/", /IPv4-mapped loopback/],
    ["https://[::ffff:7f00:1]/", /IPv4-mapped loopback/],
    ["https://[::ffff:169.254.169.254]/", /IPv4-mapped link-local/],
    ["https://169.254.169.254/latest/meta-data/", /cloud metadata/],
    ["https://[fd00:ec2::254]/latest/meta-data/", /unique local/],
    ["https://[64:ff9b::a00:1]/", /NAT64 private/],
    ["https://[2002:c0a8:101::]/", /6to4 private/],
    ["https://10.0.0.1/", /private/],
    ["https://192.168.0.1/", /private/],
    ["https://100.64.0.1/", /carrier-grade NAT/],
    ["https://0.0.0.0/", /unspecified/],
    ["https://[::]/", /unspecified/],
    ["https://224.0.0.1/", /multicast/],
    ["https://metadata.google.internal/computeMetadata/v1/", /metadata.google.internal/],
    ["https://metadata/", /metadata/],
    ["https://localhost/", /localhost/],
    ["https://app.localhost/", /localhost/],
    ["https://intranet/", /without a dot/],
    ["http://10.0.0.1/", /private/], // the host's class is named before the scheme
  ])("refuses %s with 403 image_url_forbidden", (url, message) => {
    expectApiError(() => checkImageUrl(url), "image_url_forbidden", message);
  });

  describe("development loopback exception", () => {
    const policy = { allowHttpLoopback: true };

    it.each([
      "http://127.0.0.1:8787/cat.png",
      "http://localhost:3000/x",
      "http://[::1]:9000/x",
      "http://127.1:5/x",
      "https://127.0.0.1:8443/x",
      "http://127.0.0.1/x",
    ])("accepts %s (any port)", (url) => {
      expect(checkImageUrl(url, policy)).toBeInstanceOf(URL);
    });

    it.each([
      "http://10.0.0.1/",
      "http://example.com/",
      "http://[::ffff:169.254.169.254]/",
      "http://169.254.169.254/",
      "http://foo.localhost/",
      "http://0.0.0.0:8787/",
    ])("still refuses %s", (url) => {
      expectApiError(() => checkImageUrl(url, policy), "image_url_forbidden");
    });

    it("is off by default: http://127.0.0.1 is refused with 403", () => {
      expectApiError(() => checkImageUrl("http://127.0.0.1:8787/cat.png"), "image_url_forbidden", /loopback/);
      expectApiError(() => checkImageUrl("http://127.0.0.1:8787/cat.png", { allowHttpLoopback: false }), "image_url_forbidden");
    });

    it("does not lift the credentials rule", () => {
      expectApiError(() => checkImageUrl("http://u:p@127.0.0.1:8787/", policy), "invalid_image_url");
    });
  });
});
