/**
 * A stand-in for the edge's pool endpoint on loopback: records every heartbeat, can refuse the first N.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { HeartbeatBody } from "../../src/agent/heartbeat";

export interface FakeEdge {
  url: string;
  heartbeats: Array<{ at: number; authorization: string | undefined; body: HeartbeatBody }>;
  /** Attempts answered 503 so far. */
  refused: number;
  close(): Promise<void>;
}

export async function startFakeEdge(options: { refuseFirst?: number } = {}): Promise<FakeEdge> {
  const edge: FakeEdge = { url: "", heartbeats: [], refused: 0, close: async () => {} };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/pool/heartbeat") {
        res.writeHead(404).end();
        return;
      }
      if (edge.refused < (options.refuseFirst ?? 0)) {
        edge.refused++;
        res.writeHead(503, { "content-type": "application/json" }).end('{"error":"not yet"}');
        return;
      }
      edge.heartbeats.push({
        at: performance.now(),
        authorization: req.headers.authorization,
        body: JSON.parse(Buffer.concat(chunks).toString()),
      });
      res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  edge.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  edge.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return edge;
}
