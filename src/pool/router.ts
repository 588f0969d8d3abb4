/**
 * Picks the GPU node for a request: among live, non-draining nodes of the requested variant, never one
 * already tried for this request, by least outstanding work with the power of two choices, preferring
 * nodes in the caller's region.
 *
 * Outstanding work = the node's reported `active + queued` plus this isolate's own dispatches to it that
 * the node may not have reported yet (`acquire()`/`release()`). Two nodes are compared by outstanding
 * work relative to capacity (a node with twice the capacity takes twice the work), then by the raw count.
 *
 * Tiers, first non-empty wins:
 *   1. nodes with room (outstanding < capacity) in the best-matching region (colo, then country, then
 *      continent), then with room anywhere;
 *   2. overflow: any node under `overflowFactor × capacity` (the node queues; its own bounded queue
 *      answers 429 when full, which the dispatcher retries elsewhere), region ignored, least loaded;
 *   3. nothing: a typed no-capacity result with a Retry-After.
 * A node that just failed a dispatch in this isolate is avoided for `quarantineMs` while others exist.
 *
 * Staleness: the node list is read from the pool Durable Object at most once per `cacheMs` (1 s) per
 * isolate, shared by concurrent requests, so a request does not pay a round trip. The price: a new node
 * gets traffic up to 1 s late; a node that died is still picked until its TTL passes (up to TTL + 1 s),
 * which retry-before-first-token and the quarantine absorb; reported load is up to one heartbeat + 1 s
 * old, which counting our own in-flight dispatches corrects for this isolate (not for others). When the
 * Durable Object cannot be reached, the last list is used for up to `maxStaleMs`, then static nodes only.
 */
import { loadConfig } from "../config";
import type { Env } from "../env";
import { ApiError } from "../errors";
import type { ModelVariant } from "../protocol/schema";
import { type AttemptOutcome, type DispatchOptions, type DispatchResult, dispatchWithRetry } from "./dispatch";
import { POOL_NAME } from "./pool-object";
import { type CallerLocation, callerRegion, regionRank } from "./region";
import { type PoolNode, type StaticNode, staticPoolNode } from "./schema";

export type NoCapacityReason =
  /** No live, non-draining node serves the variant. */
  | "no_nodes"
  /** Every such node was already tried for this request. */
  | "exhausted"
  /** Every such node is over its overflow limit. */
  | "saturated";

export type PickResult = { ok: true; node: PoolNode } | { ok: false; reason: NoCapacityReason; retryAfter: number; message: string };

export interface PickRequest {
  variant: ModelVariant;
  /** The caller's region keys (`callerRegion(request.cf)`), or `request.cf` itself. */
  region?: readonly string[] | CallerLocation | null;
  /** Ids of nodes already tried for this request. */
  exclude?: Iterable<string>;
}

export interface PickPolicy {
  /** This isolate's in-flight dispatches to a node. */
  inflight: (id: string) => number;
  /** Nodes to avoid while others exist. */
  quarantined: (id: string) => boolean;
  /** In [0, 1); injected for deterministic tests. */
  random: () => number;
  /** A node with no room still takes work up to this multiple of its capacity (its queue). */
  overflowFactor: number;
  /** Seconds for Retry-After, by reason. */
  retryAfter: Record<NoCapacityReason, number>;
}

export const DEFAULT_RETRY_AFTER: Record<NoCapacityReason, number> = { no_nodes: 5, exhausted: 2, saturated: 1 };

interface Scored {
  node: PoolNode;
  outstanding: number;
  rank: number;
}

/** The pure choice: no I/O, no clock; everything it depends on is an argument. */
export function pickNode(nodes: readonly PoolNode[], request: PickRequest, policy: PickPolicy): PickResult {
  const keys = regionKeys(request.region);
  const exclude = new Set(request.exclude ?? []);
  const serving = nodes.filter((n) => n.variant === request.variant && !n.draining);
  if (serving.length === 0) {
    return noCapacity("no_nodes", `No GPU node serving ${request.variant} is available; retry later.`, policy);
  }
  const untried = serving.filter((n) => !exclude.has(n.id));
  if (untried.length === 0) {
    return noCapacity("exhausted", `Every GPU node serving ${request.variant} was tried; retry later.`, policy);
  }
  const healthy = untried.filter((n) => !policy.quarantined(n.id));
  const candidates: Scored[] = (healthy.length > 0 ? healthy : untried).map((node) => ({
    node,
    outstanding: node.load.active + node.load.queued + policy.inflight(node.id),
    rank: regionRank(node.region, keys),
  }));

  const withRoom = candidates.filter((c) => c.outstanding < c.node.capacity);
  if (withRoom.length > 0) {
    const best = Math.min(...withRoom.map((c) => c.rank));
    return {
      ok: true,
      node: twoChoices(
        withRoom.filter((c) => c.rank === best),
        policy.random,
      ).node,
    };
  }
  const overflow = candidates.filter((c) => c.outstanding < c.node.capacity * policy.overflowFactor);
  if (overflow.length > 0) return { ok: true, node: twoChoices(overflow, policy.random).node };
  return noCapacity("saturated", `Every GPU node serving ${request.variant} is busy; retry later.`, policy);
}

/** Power of two choices: two distinct random candidates, the less loaded wins (the first on a tie). */
function twoChoices(group: Scored[], random: () => number): Scored {
  if (group.length === 1) return group[0];
  const i = Math.min(group.length - 1, Math.floor(random() * group.length));
  let j = Math.min(group.length - 2, Math.floor(random() * (group.length - 1)));
  if (j >= i) j++;
  const a = group[i];
  const b = group[j];
  const ua = a.outstanding / a.node.capacity;
  const ub = b.outstanding / b.node.capacity;
  if (ub < ua || (ub === ua && b.outstanding < a.outstanding)) return b;
  return a;
}

function noCapacity(reason: NoCapacityReason, message: string, policy: PickPolicy): PickResult {
  return { ok: false, reason, retryAfter: policy.retryAfter[reason], message };
}

function regionKeys(region: PickRequest["region"]): readonly string[] {
  if (!region) return [];
  if (Array.isArray(region)) return region.map((r: string) => r.toUpperCase());
  return callerRegion(region as CallerLocation);
}

/** The error a route throws for a no-capacity result: 503 `no_capacity` with `Retry-After`. */
export function noCapacityError(result: { retryAfter: number; message: string }): ApiError {
  return new ApiError("no_capacity", result.message, { retryAfter: result.retryAfter });
}

/** Static nodes first, then registered ones; a registered node replaces a static one with its id. */
export function mergeNodes(staticNodes: readonly PoolNode[], registered: readonly PoolNode[]): PoolNode[] {
  const byId = new Map<string, PoolNode>();
  for (const node of staticNodes) byId.set(node.id, node);
  for (const node of registered) byId.set(node.id, node);
  return [...byId.values()];
}

export interface PoolRouterOptions {
  /** The registered nodes (the pool Durable Object's `list()`). */
  registered: () => Promise<PoolNode[]>;
  staticNodes?: readonly StaticNode[];
  /** How long the node list is reused (ms). */
  cacheMs?: number;
  /** How long the last list is still used when `registered()` fails (ms). */
  maxStaleMs?: number;
  /** How long a node that failed a dispatch is avoided (ms). */
  quarantineMs?: number;
  overflowFactor?: number;
  retryAfter?: Partial<Record<NoCapacityReason, number>>;
  clock?: () => number;
  random?: () => number;
  /** Where a failed refresh is reported (default: a structured console.warn). */
  onRefreshError?: (error: unknown) => void;
}

export interface RoutedDispatchOptions<T>
  extends Pick<DispatchOptions<PoolNode, T>, "attempt" | "hedgeAfterMs" | "signal" | "isRetryable" | "discard"> {
  variant: ModelVariant;
  /** `request.cf` or region keys. */
  region?: PickRequest["region"];
  /** Default 3. */
  maxAttempts?: number;
}

export interface RoutedDispatchResult<T> extends DispatchResult<PoolNode, T> {
  /** Call when the winning node's stream has ended (success, error or cancel); idempotent. */
  release: () => void;
}

export class PoolRouter {
  private readonly options: PoolRouterOptions;
  private readonly clock: () => number;
  private readonly policy: PickPolicy;
  private readonly cacheMs: number;
  private readonly maxStaleMs: number;
  private readonly quarantineMs: number;
  private readonly inflightCounts = new Map<string, number>();
  private readonly quarantine = new Map<string, number>();
  /** The list reads use, and when it was taken (a fallback list after a failed refresh, too). */
  private cached: { nodes: PoolNode[]; at: number } | null = null;
  /** The last list the pool actually answered. */
  private lastGood: { nodes: PoolNode[]; at: number } | null = null;
  private refreshing: Promise<PoolNode[]> | null = null;

  constructor(options: PoolRouterOptions) {
    if (typeof options.registered !== "function") throw new TypeError("PoolRouter: options.registered must be a function");
    this.options = options;
    this.clock = options.clock ?? (() => Date.now());
    this.cacheMs = options.cacheMs ?? 1_000;
    this.maxStaleMs = options.maxStaleMs ?? 10_000;
    this.quarantineMs = options.quarantineMs ?? 2_000;
    const overflowFactor = options.overflowFactor ?? 2;
    if (!(overflowFactor >= 1)) throw new TypeError("PoolRouter: overflowFactor must be ≥ 1");
    this.policy = {
      inflight: (id) => this.inflightCounts.get(id) ?? 0,
      quarantined: (id) => {
        const until = this.quarantine.get(id);
        if (until === undefined) return false;
        if (this.clock() < until) return true;
        this.quarantine.delete(id);
        return false;
      },
      random: options.random ?? Math.random,
      overflowFactor,
      retryAfter: { ...DEFAULT_RETRY_AFTER, ...options.retryAfter },
    };
  }

  /** Static and registered nodes (draining ones included), at most `cacheMs` old. */
  async nodes(): Promise<PoolNode[]> {
    const now = this.clock();
    if (this.cached && now - this.cached.at < this.cacheMs) return this.cached.nodes;
    this.refreshing ??= this.refresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /** Forget the cached list (the next read goes to the pool). */
  invalidate(): void {
    this.cached = null;
  }

  async pick(request: PickRequest): Promise<PickResult> {
    return pickNode(await this.nodes(), request, this.policy);
  }

  /** Counts a dispatch to `id` until the returned function is called (idempotent). */
  acquire(id: string): () => void {
    this.inflightCounts.set(id, (this.inflightCounts.get(id) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.inflightCounts.get(id) ?? 1) - 1;
      if (n <= 0) this.inflightCounts.delete(id);
      else this.inflightCounts.set(id, n);
    };
  }

  /** This isolate's in-flight dispatches to `id`. */
  inflight(id: string): number {
    return this.inflightCounts.get(id) ?? 0;
  }

  /** Avoid `id` for a while (it failed before its first token). */
  reportFailure(id: string): void {
    this.quarantine.set(id, this.clock() + this.quarantineMs);
  }

  /**
   * Picks, attempts, retries and hedges (dispatchWithRetry), counting in-flight work per node and
   * quarantining nodes that fail. Resolves with the first attempt that reached its first token; the
   * caller must call `release()` when that stream ends. Rejects with `ApiError("no_capacity")` (503 +
   * Retry-After) when no node could take it, or with a non-retryable attempt error as is.
   */
  async dispatch<T>(options: RoutedDispatchOptions<T>): Promise<RoutedDispatchResult<T>> {
    const releases = new Map<string, () => void>();
    const isRetryable = options.isRetryable;
    const result = await dispatchWithRetry<PoolNode, T>({
      pick: (tried) => this.pick({ variant: options.variant, region: options.region, exclude: tried }),
      attempt: options.attempt,
      maxAttempts: options.maxAttempts ?? 3,
      hedgeAfterMs: options.hedgeAfterMs,
      signal: options.signal,
      isRetryable,
      discard: options.discard,
      onAttemptStart: (node) => releases.set(node.id, this.acquire(node.id)),
      onAttemptEnd: (node: PoolNode, outcome: AttemptOutcome) => {
        if (outcome === "won") return;
        releases.get(node.id)?.();
        if (outcome === "failed") this.reportFailure(node.id);
      },
    });
    return { ...result, release: releases.get(result.node.id) ?? (() => {}) };
  }

  private async refresh(): Promise<PoolNode[]> {
    const now = this.clock();
    const staticNodes = (this.options.staticNodes ?? []).map((n) => staticPoolNode(n, now));
    let nodes: PoolNode[];
    try {
      nodes = mergeNodes(staticNodes, await this.options.registered());
      this.lastGood = { nodes, at: this.clock() };
    } catch (error) {
      (this.options.onRefreshError ?? logRefreshError)(error);
      // Keep serving what we knew for a while; cache the fallback too, so an outage is not asked every request.
      nodes = this.lastGood && now - this.lastGood.at < this.maxStaleMs ? this.lastGood.nodes : staticNodes;
    }
    this.cached = { nodes, at: this.clock() };
    return nodes;
  }
}

function logRefreshError(error: unknown): void {
  console.warn(JSON.stringify({ level: "warn", msg: "pool: node list unavailable", error: String(error) }));
}

const routers = new WeakMap<object, PoolRouter>();

/** The isolate's router for this environment: static nodes from config, registered ones from POOL. */
export function getPoolRouter(env: Env): PoolRouter {
  let router = routers.get(env);
  if (!router) {
    const config = loadConfig(env as unknown as Record<string, unknown>);
    router = new PoolRouter({
      registered: () => env.POOL.getByName(POOL_NAME).list(),
      staticNodes: config.pool.staticNodes,
    });
    routers.set(env, router);
  }
  return router;
}
