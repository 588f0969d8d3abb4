/**
 * Serves a Hono app (or anything with its `fetch`) with @hono/node-server on host:port (port 0: any
 * free port) and says where.
 */

import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import type { Hono } from "hono";

export interface Listening {
  server: Server;
  /** `http://host:port`, the port resolved. */
  url: string;
  port: number;
  /** Stops accepting, closes idle keep-alive connections, and after `graceMs` every connection. */
  close(graceMs?: number): Promise<void>;
}

export async function listen(app: { fetch: Hono["fetch"] }, options: { host?: string; port?: number } = {}): Promise<Listening> {
  const host = options.host ?? "127.0.0.1";
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  // Long generations stream for minutes: no request timeout. Idle keep-alive LONGER than the edge's
  // client side: a server that closes an idle connection just as the edge reuses it fails that request
  // (seen in bench:gateway as 503s after ~4 s idle); the client should be the one to close.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 75_000;
  server.headersTimeout = 80_000; // must exceed keepAliveTimeout
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;

  // Requests in flight per connection: on close, a connection with none is ended at once (an idle
  // keep-alive connection, or one a client opened ahead of time and never used), one with a request
  // as soon as its response is done.
  const open = new Map<Socket, number>();
  let closing: Promise<void> | undefined;
  server.on("connection", (socket: Socket) => {
    open.set(socket, 0);
    socket.once("close", () => open.delete(socket));
  });
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    open.set(socket, (open.get(socket) ?? 0) + 1);
    res.once("close", () => {
      const left = (open.get(socket) ?? 1) - 1;
      open.set(socket, left);
      if (closing && left === 0) socket.destroySoon();
    });
  });

  return {
    server,
    url,
    port,
    close(graceMs = 1_000) {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        for (const [socket, requests] of open) if (requests === 0) socket.destroySoon();
      });
      return closing;
    },
  };
}
