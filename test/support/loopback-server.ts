/**
 * Vitest globalSetup (runs in Node): a loopback HTTP server that the workerd tests fetch images from.
 *
 * Listens on 127.0.0.1 only, on a free port, and hands its origin to the tests with
 * `provide("loopbackOrigin", …)` (read with `inject("loopbackOrigin")`, or the `LOOPBACK_ORIGIN`
 * binding that vitest.config.ts fills from it). Every route is bounded in size and time.
 *
 * Routes:
 *   /fixtures/<name>    a file from test/fixtures/images (404 when missing)
 *   /bad/<name>         a file from test/fixtures/bad
 *   /generated/photo_48mp_baseline.jpg, /generated/photo_48mp_progressive.jpg
 *                       48 MP JPEGs made from a fixture (scripts/lib/big-photo.ts)
 *   /bytes/<n>          n bytes, chunked, no Content-Length
 *   /lying-length       announces Content-Length: 10, then sends 2 MB (chunked framing wins, RFC 9112 §6.3)
 *   /slow-headers       waits 3 s before the headers
 *   /slow-body          headers at once, then 1 byte every 500 ms for 10 s
 *   /redirect?to=<url>  302 to <url>
 *   /redirect-n/<k>     a chain of k redirects ending at /bytes/100
 *   /status/<code>      that status, with a short text body
 */
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type {} from "vitest";
import type { TestProject } from "vitest/node";
import { BIG_PHOTO, makeBigPhoto } from "../../scripts/lib/big-photo";

declare module "vitest" {
  export interface ProvidedContext {
    loopbackOrigin: string;
  }
}

const FIXTURE_DIRS: Record<string, URL> = {
  fixtures: new URL("../fixtures/images/", import.meta.url),
  bad: new URL("../fixtures/bad/", import.meta.url),
};
const MAX_BYTES_ROUTE = 64 * 1024 * 1024;
const MAX_REDIRECT_CHAIN = 50;
const CHUNK = 64 * 1024;

const CONTENT_TYPES: Record<string, string> = {
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  png: "image/png",
  gif: "image/gif",
  webp: "image/webp",
  json: "application/json",
};

type Handler = (req: IncomingMessage, res: ServerResponse, match: RegExpMatchArray, url: URL) => void | Promise<void>;

const ROUTES: Array<[RegExp, Handler]> = [
  [/^\/(fixtures|bad)\/([A-Za-z0-9._-]+)$/, serveFixture],
  [/^\/generated\/([A-Za-z0-9._-]+)$/, serveGenerated],
  [/^\/bytes\/(\d+)$/, serveBytes],
  [/^\/lying-length$/, serveLyingLength],
  [/^\/slow-headers$/, serveSlowHeaders],
  [/^\/slow-body$/, serveSlowBody],
  [/^\/redirect$/, serveRedirect],
  [/^\/redirect-n\/(\d+)$/, serveRedirectChain],
  [/^\/status\/(\d{3})$/, serveStatus],
];

export default async function setup({ provide }: Pick<TestProject, "provide">): Promise<() => Promise<void>> {
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    route(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    });
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await listen(server);
  const { port } = server.address() as AddressInfo;
  provide("loopbackOrigin", `http://127.0.0.1:${port}`);

  return async function teardown() {
    // Slow routes keep sockets open: destroy them, or close() would wait for them.
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}

function listen(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://127.0.0.1");
  for (const [pattern, handler] of ROUTES) {
    const match = url.pathname.match(pattern);
    if (match) return handler(req, res, match, url);
  }
  text(res, 404, "not found");
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { "content-type": "text/plain" }).end(body);
}

async function serveFixture(_req: IncomingMessage, res: ServerResponse, match: RegExpMatchArray): Promise<void> {
  const dir = FIXTURE_DIRS[match[1]];
  const name = match[2];
  if (name.startsWith(".")) {
    text(res, 404, "not found");
    return;
  }
  let body: Buffer;
  try {
    body = await readFile(new URL(name, dir));
  } catch {
    text(res, 404, "not found");
    return;
  }
  const ext = name.slice(name.lastIndexOf(".") + 1).toLowerCase();
  res.writeHead(200, {
    "content-type": CONTENT_TYPES[ext] ?? "application/octet-stream",
    "content-length": String(body.length),
  });
  res.end(body);
}

async function serveGenerated(_req: IncomingMessage, res: ServerResponse, match: RegExpMatchArray): Promise<void> {
  if (match[1] !== BIG_PHOTO.name && match[1] !== BIG_PHOTO.progressiveName) {
    text(res, 404, "not found");
    return;
  }
  const body = await makeBigPhoto(match[1] === BIG_PHOTO.progressiveName);
  res.writeHead(200, { "content-type": "image/jpeg", "content-length": String(body.length) });
  res.end(body);
}

function serveBytes(_req: IncomingMessage, res: ServerResponse, match: RegExpMatchArray): void {
  const n = Number(match[1]);
  if (n > MAX_BYTES_ROUTE) {
    text(res, 400, "too many bytes");
    return;
  }
  res.writeHead(200, { "content-type": "application/octet-stream" }); // no length: chunked
  writeChunks(res, n);
}

/** Writes n bytes of a repeating pattern in chunks, respecting back-pressure, then ends. */
function writeChunks(res: ServerResponse, n: number): void {
  let sent = 0;
  const pump = (): void => {
    while (sent < n) {
      const size = Math.min(CHUNK, n - sent);
      const chunk = Buffer.alloc(size, (sent / CHUNK) & 0xff);
      sent += size;
      if (!res.write(chunk)) {
        res.once("drain", pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

function serveLyingLength(_req: IncomingMessage, res: ServerResponse): void {
  // Both headers: the body is framed by chunked encoding, so Content-Length is a lie the client sees.
  res.writeHead(200, {
    "content-type": "application/octet-stream",
    "content-length": "10",
    "transfer-encoding": "chunked",
  });
  writeChunks(res, 2 * 1024 * 1024);
}

function serveSlowHeaders(_req: IncomingMessage, res: ServerResponse): void {
  const timer = setTimeout(() => {
    res.writeHead(200, { "content-type": "application/octet-stream" }).end(Buffer.alloc(100, 1));
  }, 3000);
  res.on("close", () => clearTimeout(timer));
}

function serveSlowBody(_req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { "content-type": "application/octet-stream" });
  res.flushHeaders();
  let ticks = 0;
  const timer = setInterval(() => {
    res.write(Buffer.of(ticks & 0xff));
    if (++ticks >= 20) {
      clearInterval(timer);
      res.end();
    }
  }, 500);
  res.on("close", () => clearInterval(timer));
}

function serveRedirect(_req: IncomingMessage, res: ServerResponse, _match: RegExpMatchArray, url: URL): void {
  const to = url.searchParams.get("to");
  if (!to) {
    text(res, 400, "missing ?to=");
    return;
  }
  res.writeHead(302, { location: to }).end();
}

function serveRedirectChain(_req: IncomingMessage, res: ServerResponse, match: RegExpMatchArray): void {
  const k = Number(match[1]);
  if (k > MAX_REDIRECT_CHAIN) {
    text(res, 400, "chain too long");
    return;
  }
  if (k === 0) {
    res.writeHead(200, { "content-type": "application/octet-stream" });
    writeChunks(res, 100);
    return;
  }
  res.writeHead(302, { location: k === 1 ? "/bytes/100" : `/redirect-n/${k - 1}` }).end();
}

function serveStatus(_req: IncomingMessage, res: ServerResponse, match: RegExpMatchArray): void {
  const code = Number(match[1]);
  if (code < 200 || code > 599) {
    text(res, 400, "bad status");
    return;
  }
  text(res, code, `status ${code}`);
}
