/** Shared helpers for the tests that run inside workerd. */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { app } from "../../src/index";

/** The root key (`EDGE_API_KEY` in vitest.config.ts): every scope, no rate limit. */
export const TOKEN = "test-tensors-token";

export interface ManifestItem {
  file: string;
  format: string;
  mode: string;
  width: number;
  height: number;
  reference_rgb_sha256: string;
  reference_f16_sha256: string;
  exif_orientation?: number;
  oriented_rgb_sha256?: string;
  oriented_f16_sha256?: string;
}

/** Fixture bytes come from the loopback server that test/support/loopback-server.ts starts. */
export async function fixture(path: string): Promise<Uint8Array> {
  const res = await fetch(`${env.LOOPBACK_ORIGIN}/${path}`);
  if (!res.ok) throw new Error(`fixture ${path}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

export async function sha256Hex(data: ArrayBuffer | Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The test env with a simulated GPU node (test/node/support/workers-services.ts) as the pool's one
 * static node. `nodeUrl` picks which of the two simulated nodes.
 */
export function envWithNode(nodeUrl: string | undefined = env.SIM_NODE_URL, vars: Record<string, string> = {}): Cloudflare.Env {
  if (!nodeUrl) throw new Error("no simulated node: is test/node/support/workers-services.ts in vitest.config.ts's globalSetup?");
  return {
    ...env,
    POOL_STATIC_NODES: JSON.stringify([{ id: "sim", url: nodeUrl, variant: "qwen-vl-chat", capacity: 8, engine: "simulated" }]),
    ...vars,
  } as Cloudflare.Env;
}

export type EdgeResponse = Response & {
  /** Waits for the request's `waitUntil` work (cache writes, usage records). Read a stream's body first. */
  settled: () => Promise<void>;
};

/** Calls the Worker's app in this isolate with `e` as its env. */
export async function edge(e: Cloudflare.Env, path: string, init: RequestInit = {}): Promise<EdgeResponse> {
  const ctx = createExecutionContext();
  const res = (await app.fetch(new Request(`http://edge.test${path}`, init), e, ctx)) as Response;
  return Object.assign(res, { settled: () => waitOnExecutionContext(ctx) });
}

/** Creates an API key through the admin route with the root key; returns the route's answer. */
export async function createKey(
  e: Cloudflare.Env,
  body: { name?: string; scopes: string[]; rate?: string; quota?: number; key?: string },
): Promise<{ id: string; key: string; webhook_secret: string; scopes: string[]; rate: string; quota: number | null }> {
  const res = await edge(e, "/v1/keys", {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "test", ...body }),
  });
  if (res.status !== 201) throw new Error(`create key: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

export { nodeRequests } from "../support/metrics";
