/**
 * Vitest globalSetup (runs in Node) for the workerd tests of keys, limits and caches: real processes
 * on loopback, handed to the tests through `inject` (vitest.config.ts binds them):
 *
 *   simNodeUrl    a GPU node, `gpu-node serve --engine simulated` (no model: a test instrument), shared
 *   countedNodeUrl another one, used by one test file only (test/workers/cache.test.ts), whose /metrics
 *                 count of generate requests therefore means "GPU calls made by that file"
 *   cacheOrigin   an image origin that says how long its answers may be cached and counts its requests:
 *                   GET /img/<fixture>?cc=<Cache-Control>&v=<anything>   the fixture, with that Cache-Control
 *                   GET /count?path=<path and query>                   {"count": n} requests so far for it
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    simNodeUrl: string;
    countedNodeUrl: string;
    cacheOrigin: string;
  }
}

/** The node secret the workerd tests bind (vitest.config.ts). */
export const TEST_NODE_SECRET = "test-node-secret";

const root = fileURLToPath(new URL("../../..", import.meta.url));
const images = new URL("../../fixtures/images/", import.meta.url);

function startNode(): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    [
      `${root}gpu-node/bin/gpu-node.mjs`,
      "serve",
      "--engine",
      "simulated",
      "--port",
      "0",
      "--node-secret",
      TEST_NODE_SECRET,
      "--capacity",
      "8",
      // Slow enough that identical requests sent together overlap: ≈ 40 ms before the first token, 200 tokens/s.
      "--simulate",
      "vision_ms=10,prefill_ms=30,tokens_per_s=200",
    ],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stderr?.resume();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the simulated node did not start")), 30_000);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        const msg = JSON.parse(line) as { event?: string; url?: string };
        if (msg.event === "listening" && msg.url) {
          clearTimeout(timer);
          resolve({ url: msg.url, child });
        }
      } catch {
        // not JSON
      }
    });
    child.once("exit", () => reject(new Error("the simulated node exited")));
  });
}

function startOrigin(): Promise<Server> {
  const counts = new Map<string, number>();
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (url.pathname === "/count") {
      const path = url.searchParams.get("path") ?? "";
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ count: counts.get(path) ?? 0 }));
      return;
    }
    const match = /^\/img\/([A-Za-z0-9._-]+)$/.exec(url.pathname);
    if (!match || match[1].startsWith(".")) {
      res.writeHead(404).end();
      return;
    }
    const key = `${url.pathname}${url.search}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    readFile(new URL(match[1], images)).then(
      (body) => {
        const headers: Record<string, string> = { "content-type": "image/jpeg", "content-length": String(body.length) };
        const cc = url.searchParams.get("cc");
        if (cc) headers["cache-control"] = cc;
        res.writeHead(200, headers).end(body);
      },
      () => res.writeHead(404).end(),
    );
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

export default async function setup({ provide }: Pick<TestProject, "provide">): Promise<() => Promise<void>> {
  const [node, counted, origin] = await Promise.all([startNode(), startNode(), startOrigin()]);
  provide("simNodeUrl", node.url);
  provide("countedNodeUrl", counted.url);
  provide("cacheOrigin", `http://127.0.0.1:${(origin.address() as AddressInfo).port}`);
  return async function teardown() {
    origin.closeAllConnections();
    await new Promise<void>((r) => origin.close(() => r()));
    await Promise.all(
      [node, counted].map(
        ({ child }) =>
          new Promise<void>((r) => {
            if (child.exitCode !== null) return r();
            child.once("exit", () => r());
            child.kill("SIGTERM");
            setTimeout(() => {
              child.kill("SIGKILL");
              r();
            }, 5_000).unref();
          }),
      ),
    );
  };
}
