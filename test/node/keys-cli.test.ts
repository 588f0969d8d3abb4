/**
 * `npm run keys` against a real local edge (`wrangler dev`, local KV and Durable Objects): create (the
 * key alone on stdout, or JSON), list, show, update (e.g. the default image quality), revoke, and the
 * keys it makes working (and then not) on the edge. Also: the result cache through `wrangler dev`, with
 * keys made this way.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./support/stack";

const root = fileURLToPath(new URL("../..", import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** One row of `list`'s table, by column name (cells are cut at the header's column starts). */
function tableRow(table: string, id: string): Record<string, string> {
  const [head, ...rows] = table.trimEnd().split("\n");
  const row = rows.find((r) => r.startsWith(`${id} `));
  if (!row) throw new Error(`no row for ${id} in:\n${table}`);
  const columns = [...head.matchAll(/\S+(?: \S+)*/g)].map((m) => ({ name: m[0], start: m.index ?? 0 }));
  return Object.fromEntries(columns.map((c, i) => [c.name, row.slice(c.start, columns[i + 1]?.start).trim()]));
}

function keys(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile("npm", ["run", "--silent", "keys", "--", ...args], { cwd: root, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe("npm run keys", () => {
  let stack: Stack;
  let admin: string[];

  beforeAll(async () => {
    stack = await startStack([{ id: "sim", simulate: "tokens_per_s=0,prefill_ms=5,vision_ms=5" }], {
      vars: { RESULT_CACHE_TTL_S: "3600", TENSOR_CACHE_MAX_AGE_S: "3600" },
    });
    admin = ["--url", stack.edge, "--admin-key", stack.rootKey];
  }, 180_000);
  afterAll(async () => stack?.stop(), 30_000);

  const get = (path: string, key: string) => fetch(`${stack.edge}${path}`, { headers: { authorization: `Bearer ${key}` } });

  it("create prints the key alone on stdout, messages on stderr; the key works with its scopes only", async () => {
    const run = await keys(...admin, "create", "--name", "mobile app", "--scopes", "caption,vqa", "--rate", "120/min");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^qvl_[A-Za-z0-9_-]{32}\n$/);
    expect(run.stderr).toMatch(/Created key_[0-9a-f]+ "mobile app" \(scopes caption,vqa, rate 120\/min, quota none\)/);
    const key = run.stdout.trim();
    const models = await get("/v1/models", key);
    expect(models.status).toBe(200);
    expect(models.headers.get("x-ratelimit-limit")).toBe("120");
    expect((await get("/v1/keys", key)).status).toBe(403);
  });

  it("create --json gives {id, key, webhook_secret, …}; list, show and revoke; a revoked key is refused", async () => {
    const run = await keys(...admin, "create", "--name", "batch", "--scopes", "caption", "--quota", "1000", "--json");
    expect(run.code).toBe(0);
    const created = JSON.parse(run.stdout) as { id: string; key: string; webhook_secret: string; quota: number; scopes: string[] };
    expect(created).toMatchObject({ quota: 1000, scopes: ["caption"] });
    expect(created.key).toMatch(/^qvl_/);
    expect(created.webhook_secret).toMatch(/^whsec_/);

    const list = await keys(...admin, "list");
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ID\s+NAME\s+PREFIX\s+SCOPES\s+RATE\s+QUOTA/);
    expect(list.stdout).toContain(created.id);
    expect(list.stdout).not.toContain(created.key);
    const listJson = JSON.parse((await keys(...admin, "list", "--json")).stdout) as Array<{ id: string }>;
    expect(listJson.map((k) => k.id)).toContain(created.id);

    expect((await get("/v1/usage", created.key)).status).toBe(200);
    const show = JSON.parse((await keys(...admin, "show", created.id)).stdout) as { usage: { quota: { limit: number } } };
    expect(show.usage.quota.limit).toBe(1000);

    const revoked = await keys(...admin, "revoke", created.id);
    expect(revoked.code).toBe(0);
    expect(revoked.stderr).toContain(`Revoked ${created.id}`);
    const refused = await get("/v1/usage", created.key);
    expect(refused.status).toBe(401);
    expect(refused.headers.get("www-authenticate")).toMatch(/^Bearer/);
  });

  it("create --quality fast, update --quality exact; a bad quality or an unknown id fails and changes nothing", async () => {
    const run = await keys(...admin, "create", "--name", "fast app", "--scopes", "caption", "--quality", "fast", "--json");
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/^Created key_[0-9a-f]+ "fast app" \(.*\), image quality fast\./);
    const created = JSON.parse(run.stdout) as { id: string; quality: string };
    expect(created.quality).toBe("fast");
    const id = created.id;

    // Refused before anything is sent: neither the name nor the quality changes.
    const bad = await keys(...admin, "update", id, "--name", "renamed", "--quality", "best");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("keys: --quality must be exact or fast, not best");
    expect(bad.stdout).toBe("");

    const list = await keys(...admin, "list");
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ID\s+NAME\s+PREFIX\s+SCOPES\s+RATE\s+QUOTA\s+QUALITY\s+CREATED \(UTC\)\s+STATE\n/);
    expect(tableRow(list.stdout, id)).toMatchObject({ ID: id, NAME: "fast app", QUALITY: "fast", STATE: "active" });

    const updated = await keys(...admin, "update", id, "--quality", "exact");
    expect(updated.code).toBe(0);
    expect(updated.stderr).toMatch(new RegExp(`^Updated ${id} "fast app" \\(.*image quality exact\\)\\.`));
    const show = await keys(...admin, "show", id);
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout)).toMatchObject({ id, name: "fast app", quality: "exact", revoked_at: null });

    const unknown = await keys(...admin, "update", "key_0000000000000000", "--quality", "fast");
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("HTTP 404 not_found: No API key with id key_0000000000000000");
    expect(unknown.stdout).toBe("");
  });

  it("a key with the admin scope can manage keys too", async () => {
    const adminKey = (await keys(...admin, "create", "--name", "ops", "--scopes", "admin")).stdout.trim();
    const run = await keys("--url", stack.edge, "--admin-key", adminKey, "create", "--name", "made by ops", "--scopes", "chat");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^qvl_/);
  });

  it("exit 1 on a usage error, 2 when the edge refuses", async () => {
    expect((await keys("list")).code).toBe(1);
    expect((await keys(...admin, "create", "--name", "x")).code).toBe(1);
    expect((await keys(...admin, "frobnicate")).code).toBe(1);
    const wrong = await keys("--url", stack.edge, "--admin-key", "qvl_not_a_real_key_at_all_000", "list");
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain("HTTP 401 invalid_api_key");
    const bad = await keys(...admin, "create", "--name", "x", "--scopes", "everything");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("HTTP 400 invalid_request");
    expect((await keys(...admin, "revoke", "key_0000000000000000")).code).toBe(2);
  });

  it("through wrangler dev: the second identical caption comes from the result cache (x-cache: HIT)", async () => {
    const key = (await keys(...admin, "create", "--name", "cache", "--scopes", "caption")).stdout.trim();
    const image = new Uint8Array(await (await import("node:fs/promises")).readFile(`${root}test/fixtures/images/upscale_120x80.jpg`));
    const verdicts: Array<string | null> = [];
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${stack.edge}/v1/captions?seed=42`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "image/jpeg" },
        body: image,
      });
      expect(res.status).toBe(200);
      verdicts.push(res.headers.get("x-cache"));
      await res.json();
      await new Promise((r) => setTimeout(r, 300)); // the answer is stored after the response (waitUntil)
    }
    expect(verdicts).toEqual(["MISS", "HIT"]);
  });
});
