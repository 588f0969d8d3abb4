import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { TestProject } from "vitest/node";
import { type SimulatedNode, startSimulatedNode } from "../../support/simulated-node";

declare module "vitest" {
  export interface ProvidedContext {
    simNodeUrl: string;
    countedNodeUrl: string;
    slowNodeUrl: string;
    failingNodeUrl: string;
    cacheOrigin: string;
  }
}

/** The node secret the workerd tests bind (vitest.config.ts). */
export const TEST_NODE_SECRET = "test-node-secret";

const images = new URL("../../fixtures/images/", import.meta.url);

/** Default: slow enough that identical requests sent together overlap (≈ 40 ms before the first token, 200 tokens/s). */
function startNode(simulate = "vision_ms=10,prefill_ms=30,tokens_per_s=200"): Promise<SimulatedNode> {
  return startSimulatedNode({ secret: TEST_NODE_SECRET, args: ["--capacity", "8", "--simulate", simulate] });
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
  const [node, counted, slow, failing, origin] = await Promise.all([
    startNode(),
    startNode(),
    startNode("vision_ms=0,prefill_ms=600,tokens_per_s=200"),
    startNode("vision_ms=0,prefill_ms=50,fault=fail_before_first_token"),
    startOrigin(),
  ]);
  provide("simNodeUrl", node.url);
  provide("countedNodeUrl", counted.url);
  provide("slowNodeUrl", slow.url);
  provide("failingNodeUrl", failing.url);
  provide("cacheOrigin", `http://127.0.0.1:${(origin.address() as AddressInfo).port}`);
  return async function teardown() {
    origin.closeAllConnections();
    await new Promise<void>((r) => origin.close(() => r()));
    await Promise.all(
      [node, counted, slow, failing].map(
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
