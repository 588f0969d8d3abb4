/**
 * What the pool holds: the heartbeat a GPU node sends, the static nodes from configuration, and the
 * node record the pool Durable Object lists and the router picks from.
 */
import { z } from "zod";
import { ModelVariant } from "../protocol/schema";

/** Most nodes the pool holds; a new node beyond it is refused (503) until one expires. */
export const POOL_MAX_NODES = 256;
/** Largest heartbeat body the edge reads (a heartbeat is ~300 bytes). */
export const HEARTBEAT_MAX_BYTES = 16 * 1024;

export const NodeId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, "must be 1-128 characters of letters, digits, '.', '_', ':' or '-'");

/**
 * Where the edge sends `POST /v1/generate`: an http(s) origin (the node client resolves
 * `/v1/generate` against it, so a path would be ignored). Stored as the origin, without a trailing slash.
 */
export const NodeUrl = z
  .string()
  .max(2048)
  .transform((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      ctx.addIssue({ code: "custom", message: "must be an absolute http(s) URL" });
      return z.NEVER;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      ctx.addIssue({ code: "custom", message: "must use http or https" });
      return z.NEVER;
    }
    if (url.username || url.password || url.search || url.hash || (url.pathname !== "/" && url.pathname !== "")) {
      ctx.addIssue({ code: "custom", message: "must be an origin (scheme, host, port) without credentials, path, query or fragment" });
      return z.NEVER;
    }
    return url.origin;
  });

/**
 * A node's region: a Cloudflare colo (`FRA`), a country (`DE`) or a continent (`EU`) code, matched
 * against the caller's `request.cf` (see region.ts). Case-insensitive; stored upper-case.
 */
export const Region = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,32}$/, "must be 1-32 letters, digits, '_' or '-'")
  .transform((s) => s.toUpperCase());

const Count = z.number().int().min(0).max(1_000_000);

/**
 * `POST /v1/pool/heartbeat`, every few seconds from each node. Unknown keys are ignored (a newer node
 * may send more). `deregister: true` removes the node at once (its last message when it stops).
 */
export const Heartbeat = z.object({
  id: NodeId,
  url: NodeUrl,
  variant: ModelVariant,
  engine: z.string().min(1).max(64),
  version: z.string().min(1).max(64),
  /** Requests the node runs at once (its in-flight batch size); it queues beyond it. */
  capacity: z.number().int().min(1).max(4096),
  load: z.object({ active: Count, queued: Count }),
  /** True once the node takes no new work (it finishes what it has): never routed to. */
  draining: z.boolean().default(false),
  region: Region.nullish().transform((r) => r ?? undefined),
  /** False when the node's engine is unhealthy: kept listed, never routed to (like draining). */
  healthy: z.boolean().default(true),
  /** True on the node's last message: drop it from the pool now instead of waiting for the TTL. */
  deregister: z.boolean().default(false),
});
export type Heartbeat = z.infer<typeof Heartbeat>;
/** What a node sends (defaults may be left out). */
export type HeartbeatInput = z.input<typeof Heartbeat>;

/** The least a node's last message needs: its id and `deregister: true` (the rest may be sent, and is ignored). */
export const Deregistration = z.object({ id: NodeId, deregister: z.literal(true) });
export type Deregistration = z.infer<typeof Deregistration>;

export type NodeMessage = { ok: true; value: Heartbeat | Deregistration } | { ok: false; param: string | undefined; message: string };

/** A heartbeat body: a deregistration (id + `deregister: true`, nothing else required), or a full heartbeat. */
export function parseNodeMessage(input: unknown): NodeMessage {
  const deregistration = Deregistration.safeParse(input);
  if (deregistration.success) return { ok: true, value: deregistration.data };
  const heartbeat = Heartbeat.safeParse(input);
  if (heartbeat.success) return { ok: true, value: heartbeat.data };
  return { ok: false, ...describeIssue(heartbeat.error) };
}

/** One entry of `POOL_STATIC_NODES`: a node the edge routes to without it registering (single-node setups). */
export const StaticNode = z.object({
  id: NodeId,
  url: NodeUrl,
  variant: ModelVariant,
  capacity: z.number().int().min(1).max(4096),
  region: Region.optional(),
  engine: z.string().min(1).max(64).optional(),
});
export type StaticNode = z.infer<typeof StaticNode>;

export const StaticNodes = z.array(StaticNode).max(POOL_MAX_NODES);

/** A node as the pool lists it and the router sees it. */
export interface PoolNode {
  id: string;
  url: string;
  variant: ModelVariant;
  engine: string;
  version: string;
  capacity: number;
  /** As the node last reported it (static nodes: always zero; the router adds its own in-flight count). */
  load: { active: number; queued: number };
  draining: boolean;
  region?: string;
  source: "registered" | "static";
  /** Epoch ms of the last heartbeat (static nodes: when the list was read). */
  lastSeen: number;
}

/** A static node as the router sees it. */
export function staticPoolNode(node: StaticNode, now: number): PoolNode {
  return {
    id: node.id,
    url: node.url,
    variant: node.variant,
    engine: node.engine ?? "unknown",
    version: "static",
    capacity: node.capacity,
    load: { active: 0, queued: 0 },
    draining: false,
    ...(node.region ? { region: node.region } : {}),
    source: "static",
    lastSeen: now,
  };
}

/** The first issue of a failed parse as one line for an error message: `load.active: Too small…`. */
export function describeIssue(error: z.ZodError): { param: string | undefined; message: string } {
  const issue = error.issues[0];
  const param = issue?.path.length ? issue.path.map(String).join(".") : undefined;
  return { param, message: param ? `${param}: ${issue.message}` : (issue?.message ?? "invalid") };
}
