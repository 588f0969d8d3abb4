/**
 * The pool: one Durable Object (`POOL.getByName("global")`) holding the GPU nodes that heartbeat to
 * the edge. Called over Durable Object RPC: `heartbeat()` from `POST /v1/pool/heartbeat`, `list()` from
 * the router and `GET /v1/pool/nodes`.
 *
 * Storage: SQLite-backed (`new_sqlite_classes`), which local workerd runs as production does. Its API is
 * synchronous, so a heartbeat is one atomic step with no await inside, and a restarted object reloads
 * its nodes in the constructor without `blockConcurrencyWhile`. The in-memory map is what reads use;
 * the table only lets the pool survive an eviction or restart.
 *
 * Writes: a row is written when a node appears or changes (URL, capacity, draining, …), otherwise at
 * most every TTL/4 to move its `last_seen`; load figures change every heartbeat and are only worth the
 * write that happens anyway. After a restart a node may look up to TTL/4 older than it is, which only
 * matters for a node that has stopped heartbeating anyway.
 *
 * Expiry: a node silent for the TTL is filtered out of every read at once, and removed by an alarm set
 * to the earliest expiry (one alarm per TTL or so, not one write per heartbeat).
 *
 * Deregistration: `{…, draining: true, deregister: true}` (or just `{id, deregister: true}`) removes the
 * node at once, and for two
 * heartbeat intervals further heartbeats with that id are ignored (answered `state: "ignored"`), so a
 * periodic heartbeat that was already on its way cannot bring a stopped node back.
 */
import { DurableObject } from "cloudflare:workers";
import { loadConfig } from "../config";
import type { Env } from "../env";
import { POOL_MAX_NODES, type PoolNode, parseNodeMessage } from "./schema";

/** The one instance's name. */
export const POOL_NAME = "global";

export type HeartbeatResult =
  | { ok: true; state: "active" | "draining" | "deregistered" | "ignored"; ttlMs: number; heartbeatMs: number }
  | { ok: false; error: "invalid"; param: string | undefined; message: string }
  | { ok: false; error: "pool_full"; message: string; retryAfter: number };

interface Entry {
  node: PoolNode;
  /** Everything but load and lastSeen, to tell a change (written at once) from a plain heartbeat. */
  shape: string;
  /** `lastSeen` as last written to storage. */
  persistedLastSeen: number;
}

type NodeRow = { id: string; data: string; last_seen: number };

export class PoolObject extends DurableObject<Env> {
  /** Epoch milliseconds; tests replace it inside `runInDurableObject` to move time. */
  clock: () => number = () => Date.now();

  private readonly ttlMs: number;
  private readonly heartbeatMs: number;
  private readonly entries = new Map<string, Entry>();
  /** Deregistered ids → until when their heartbeats are ignored (memory only: a restart forgets them). */
  private readonly tombstones = new Map<string, number>();
  /** When the sweep alarm is set for, as far as this instance knows (null: none set by it). */
  private alarmAt: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const config = loadConfig(env as unknown as Record<string, unknown>);
    this.ttlMs = config.pool.nodeTtlMs;
    this.heartbeatMs = config.pool.heartbeatMs;
    const sql = ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, data TEXT NOT NULL, last_seen INTEGER NOT NULL)");
    for (const row of sql.exec<NodeRow>("SELECT id, data, last_seen FROM nodes")) {
      const node = parseStored(row);
      if (node) this.entries.set(node.id, { node, shape: shapeOf(node), persistedLastSeen: node.lastSeen });
      else sql.exec("DELETE FROM nodes WHERE id = ?", row.id);
    }
    if (this.entries.size > 0) this.sweep(this.clock());
  }

  /** Registers or refreshes a node (upsert), marks it draining, or deregisters it. Validates its input. */
  heartbeat(input: unknown): HeartbeatResult {
    const parsed = parseNodeMessage(input);
    if (!parsed.ok) return { ok: false, error: "invalid", param: parsed.param, message: parsed.message };
    const now = this.clock();
    this.dropExpired(now);
    const ok = { ok: true as const, ttlMs: this.ttlMs, heartbeatMs: this.heartbeatMs };

    if (parsed.value.deregister) {
      const id = parsed.value.id;
      this.remove(id);
      this.tombstones.set(id, now + 2 * this.heartbeatMs);
      this.scheduleSweep();
      return { ...ok, state: "deregistered" };
    }
    const hb = parsed.value;
    const tombstone = this.tombstones.get(hb.id);
    if (tombstone !== undefined) {
      if (now < tombstone) return { ...ok, state: "ignored" };
      this.tombstones.delete(hb.id);
    }

    const existing = this.entries.get(hb.id);
    if (!existing && this.entries.size >= POOL_MAX_NODES) {
      return {
        ok: false,
        error: "pool_full",
        message: `The pool holds its maximum of ${POOL_MAX_NODES} nodes.`,
        retryAfter: Math.ceil(this.ttlMs / 1000),
      };
    }
    const node: PoolNode = {
      id: hb.id,
      url: hb.url,
      variant: hb.variant,
      engine: hb.engine,
      version: hb.version,
      capacity: hb.capacity,
      load: { active: hb.load.active, queued: hb.load.queued },
      draining: hb.draining || !hb.healthy,
      ...(hb.region ? { region: hb.region } : {}),
      source: "registered",
      lastSeen: now,
    };
    const shape = shapeOf(node);
    let persistedLastSeen = existing?.persistedLastSeen ?? 0;
    if (!existing || existing.shape !== shape || now - existing.persistedLastSeen >= this.ttlMs / 4) {
      this.ctx.storage.sql.exec(
        "INSERT INTO nodes (id, data, last_seen) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data, last_seen = excluded.last_seen",
        node.id,
        JSON.stringify(node),
        now,
      );
      persistedLastSeen = now;
    }
    this.entries.set(node.id, { node, shape, persistedLastSeen });
    this.scheduleSweep();
    return { ...ok, state: node.draining ? "draining" : "active" };
  }

  /** Removes a node now (an operator's hand, or a node's last message). True when it was listed. */
  deregister(id: string): boolean {
    const had = this.entries.has(id);
    this.remove(id);
    this.scheduleSweep();
    return had;
  }

  /** The live nodes (heard from within the TTL), draining ones included, sorted by id. */
  list(): PoolNode[] {
    const now = this.clock();
    const live: PoolNode[] = [];
    for (const { node } of this.entries.values()) if (now < node.lastSeen + this.ttlMs) live.push(node);
    return live.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** How long a silent node stays listed, and the heartbeat interval nodes are told to use. */
  settings(): { ttlMs: number; heartbeatMs: number; maxNodes: number } {
    return { ttlMs: this.ttlMs, heartbeatMs: this.heartbeatMs, maxNodes: POOL_MAX_NODES };
  }

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    this.sweep(this.clock());
  }

  private sweep(now: number): void {
    this.dropExpired(now);
    this.scheduleSweep();
  }

  private dropExpired(now: number): void {
    for (const [id, { node }] of this.entries) if (now >= node.lastSeen + this.ttlMs) this.remove(id);
    for (const [id, until] of this.tombstones) if (now >= until) this.tombstones.delete(id);
  }

  private remove(id: string): void {
    if (!this.entries.delete(id)) return;
    this.ctx.storage.sql.exec("DELETE FROM nodes WHERE id = ?", id);
  }

  /** Keeps one alarm at the earliest expiry. Heartbeats only push expiries later, so most need no write. */
  private scheduleSweep(): void {
    let earliest = Number.POSITIVE_INFINITY;
    for (const { node } of this.entries.values()) earliest = Math.min(earliest, node.lastSeen + this.ttlMs);
    if (earliest === Number.POSITIVE_INFINITY) {
      if (this.alarmAt !== null) {
        this.alarmAt = null;
        void this.ctx.storage.deleteAlarm();
      }
      return;
    }
    if (this.alarmAt === null || earliest < this.alarmAt) {
      this.alarmAt = earliest;
      void this.ctx.storage.setAlarm(earliest);
    }
  }
}

function shapeOf(node: PoolNode): string {
  const { load: _load, lastSeen: _lastSeen, ...rest } = node;
  return JSON.stringify(rest);
}

function parseStored(row: NodeRow): PoolNode | null {
  try {
    const node = JSON.parse(row.data) as PoolNode;
    if (typeof node?.id !== "string" || node.id !== row.id) return null;
    return { ...node, lastSeen: Number(row.last_seen) };
  } catch {
    return null;
  }
}
