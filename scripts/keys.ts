/**
 * `npm run keys`: manage API keys on a local or deployed edge, through its admin routes (/v1/keys),
 * with the root key or any key that has the `admin` scope.
 *
 *   npm run --silent keys -- --url URL --admin-key KEY create --name N --scopes a,b [--rate 60/min] [--quota N] [--quality exact|fast] [--key qvl_…] [--json]
 *   npm run --silent keys -- --url URL --admin-key KEY list [--json]
 *   npm run --silent keys -- --url URL --admin-key KEY show ID [--json]
 *   npm run --silent keys -- --url URL --admin-key KEY update ID [--name N] [--rate 60/min] [--quota N|none] [--quality exact|fast] [--json]
 *   npm run --silent keys -- --url URL --admin-key KEY revoke ID [--json]
 *
 * `create` prints the new key alone on stdout (it is shown this once), or with `--json` the whole
 * answer: {"id","key","webhook_secret","name","scopes","rate","quota","quality",…}. Messages go to stderr.
 * `--url` and `--admin-key` fall back to QVL_EDGE_URL and QVL_ADMIN_KEY.
 * Exit status: 0 done, 1 usage error, 2 the edge refused or could not be reached.
 */
import { parseArgs } from "node:util";

const USAGE = `usage: npm run --silent keys -- --url URL --admin-key KEY COMMAND [options]
commands:
  create --name N --scopes a,b [--rate 60/min] [--quota N] [--quality exact|fast] [--key qvl_…] [--json]
                         scopes: caption, vqa, grounding, chat, moderate, admin
                         rate: N/s, N/min, N/hour, N/day (a token bucket: bursts of N); default 60/min
                         quota: generation requests per calendar month (UTC); default none
                         quality: image preprocessing of requests that name none; default exact
                         prints the key alone on stdout (shown once), or the JSON answer with --json
  list [--json]          every key (id, name, prefix, scopes, rate, quota, quality, created, revoked)
  show ID [--json]       one key and its usage this month
  update ID [--name N] [--rate 60/min] [--quota N|none] [--quality exact|fast] [--json]
                         changes those settings (other isolates may use the old ones for up to a minute)
  revoke ID [--json]     refused everywhere from the next request on
options:
  --url URL              the edge (env QVL_EDGE_URL), e.g. http://127.0.0.1:8787
  --admin-key KEY        the root key (EDGE_API_KEY) or a key with the admin scope (env QVL_ADMIN_KEY)`;

class UsageError extends Error {}

function parse() {
  return parseArgs({
    allowPositionals: true,
    options: {
      url: { type: "string" },
      "admin-key": { type: "string" },
      name: { type: "string" },
      scopes: { type: "string" },
      rate: { type: "string" },
      quota: { type: "string" },
      quality: { type: "string" },
      key: { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}

interface ApiKeyView {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  rate: string;
  quota: number | null;
  quality: string;
  created_at: string;
  revoked_at: string | null;
}

async function call(url: string, adminKey: string, method: string, path: string, body?: unknown): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(new URL(path, url), {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    throw new Error(`cannot reach ${url}: ${(err as Error).message}`);
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string } } | null)?.error;
    throw new Error(`HTTP ${res.status}${e?.code ? ` ${e.code}` : ""}: ${e?.message ?? text.slice(0, 200)}`);
  }
  return json;
}

function table(keys: ApiKeyView[]): string {
  const rows = keys.map((k) => [
    k.id,
    k.name,
    `${k.prefix}…`,
    k.scopes.join(","),
    k.rate,
    k.quota === null ? "-" : String(k.quota),
    k.quality ?? "exact",
    k.created_at.slice(0, 19).replace("T", " "),
    k.revoked_at ? `revoked ${k.revoked_at.slice(0, 10)}` : "active",
  ]);
  const head = ["ID", "NAME", "PREFIX", "SCOPES", "RATE", "QUOTA", "QUALITY", "CREATED (UTC)", "STATE"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** `--quota N` (a positive integer), or `none` to remove it (update only). */
function parseQuota(text: string, allowNone: boolean): number | null {
  if (allowNone && text === "none") return null;
  const quota = Number(text);
  if (!Number.isInteger(quota) || quota < 1) {
    throw new UsageError(`--quota must be a positive integer${allowNone ? " or none" : ""}, not ${text}`);
  }
  return quota;
}

function parseQuality(text: string): "exact" | "fast" {
  if (text !== "exact" && text !== "fast") throw new UsageError(`--quality must be exact or fast, not ${text}`);
  return text;
}

async function main(): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const url = values.url ?? process.env.QVL_EDGE_URL;
  const adminKey = values["admin-key"] ?? process.env.QVL_ADMIN_KEY;
  if (!url) throw new UsageError("--url URL is required (or QVL_EDGE_URL)");
  if (!adminKey) throw new UsageError("--admin-key KEY is required (or QVL_ADMIN_KEY)");
  const [command, ...args] = positionals;
  const out = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);

  switch (command) {
    case "create": {
      if (args.length) throw new UsageError(`create takes no positional arguments (got ${args.join(" ")})`);
      if (!values.name) throw new UsageError("create needs --name N");
      if (!values.scopes) throw new UsageError("create needs --scopes a,b");
      const quota = values.quota !== undefined ? parseQuota(values.quota, false) : undefined;
      const quality = values.quality !== undefined ? parseQuality(values.quality) : undefined;
      const created = (await call(url, adminKey, "POST", "/v1/keys", {
        name: values.name,
        scopes: values.scopes
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean),
        ...(values.rate ? { rate: values.rate } : {}),
        ...(quota !== undefined ? { quota } : {}),
        ...(quality !== undefined ? { quality } : {}),
        ...(values.key ? { key: values.key } : {}),
      })) as ApiKeyView & { key: string };
      process.stderr.write(
        `Created ${created.id} "${created.name}" (scopes ${created.scopes.join(",")}, rate ${created.rate}, quota ${created.quota ?? "none"}), image quality ${created.quality}. The key is shown this once: store it now.\n`,
      );
      if (values.json) out(created);
      else process.stdout.write(`${created.key}\n`);
      return 0;
    }
    case "list": {
      const { data } = (await call(url, adminKey, "GET", "/v1/keys")) as { data: ApiKeyView[] };
      if (values.json) out(data);
      else process.stdout.write(`${table(data)}\n`);
      process.stderr.write(`${data.length} key${data.length === 1 ? "" : "s"} (${data.filter((k) => !k.revoked_at).length} active)\n`);
      return 0;
    }
    case "show":
    case "revoke": {
      if (args.length !== 1) throw new UsageError(`${command} needs exactly one key id`);
      const id = args[0];
      const result = (await call(url, adminKey, command === "show" ? "GET" : "DELETE", `/v1/keys/${encodeURIComponent(id)}`)) as ApiKeyView;
      if (command === "revoke") process.stderr.write(`Revoked ${result.id} "${result.name}" at ${result.revoked_at}.\n`);
      if (values.json || command === "show") out(result);
      return 0;
    }
    case "update": {
      if (args.length !== 1) throw new UsageError("update needs exactly one key id");
      const update = {
        ...(values.name !== undefined ? { name: values.name } : {}),
        ...(values.rate !== undefined ? { rate: values.rate } : {}),
        ...(values.quota !== undefined ? { quota: parseQuota(values.quota, true) } : {}),
        ...(values.quality !== undefined ? { quality: parseQuality(values.quality) } : {}),
      };
      if (Object.keys(update).length === 0) throw new UsageError("update needs --name, --rate, --quota or --quality");
      const result = (await call(url, adminKey, "PATCH", `/v1/keys/${encodeURIComponent(args[0])}`, update)) as ApiKeyView;
      process.stderr.write(
        `Updated ${result.id} "${result.name}" (rate ${result.rate}, quota ${result.quota ?? "none"}, image quality ${result.quality}).\n`,
      );
      if (values.json) out(result);
      return 0;
    }
    default:
      throw new UsageError(command ? `unknown command ${command}` : "a command is required");
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`keys: ${err.message}\n${USAGE}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`keys: ${(err as Error).message}\n`);
      process.exitCode = 2;
    }
  },
);
