/**
 * `npm start`: the edge under `wrangler dev` on 127.0.0.1:8787 (local workerd, offline) and one local
 * GPU node with the simulated engine (a test instrument: no model runs) registered to it, then a
 * development key and a ready-to-run curl. Ctrl-C (or SIGTERM) stops both; a second Ctrl-C at once.
 *
 * The development key is an API key like any other: made through the edge's admin route
 * (`POST /v1/keys`) with a root key generated for this run (`EDGE_API_KEY`, printed too, for
 * `npm run keys`), with every scope and a generous rate. It is QVL_DEV_KEY when that is set (imported;
 * a key kept from an earlier run in .wrangler/state is reused), else a fresh random one; it is printed
 * on a line of its own as `QVL_DEV_KEY=<key>`. PORT and NODE_PORT move the edge and the node.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

const HOST = "127.0.0.1";
const PORT = Number(process.env.PORT ?? 8787);
const NODE_PORT = Number(process.env.NODE_PORT ?? 8400);
const EDGE = `http://${HOST}:${PORT}`;
const root = fileURLToPath(new URL("..", import.meta.url));
const requestedKey = process.env.QVL_DEV_KEY || undefined;
const rootKey = `root_${randomBytes(24).toString("base64url")}`;
const nodeSecret = randomBytes(24).toString("base64url");
const ALL_SCOPES = ["caption", "vqa", "grounding", "chat", "moderate", "admin"];

const children: ChildProcess[] = [];

function run(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(command, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  const prefix = (d: Buffer) =>
    d
      .toString()
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => `[${name}] ${l}\n`)
      .join("");
  child.stdout?.on("data", (d: Buffer) => process.stderr.write(prefix(d)));
  child.stderr?.on("data", (d: Buffer) => process.stderr.write(prefix(d)));
  child.on("exit", (code, signal) => {
    if (!stopping) {
      process.stderr.write(`${name} exited (${signal ?? code}); stopping.\n`);
      stop("SIGTERM", 1);
    }
  });
  children.push(child);
  return child;
}

let stopping = false;
function stop(signal: NodeJS.Signals, exitCode = 128 + (signal === "SIGINT" ? 2 : 15)): void {
  if (stopping) {
    for (const c of children) c.kill("SIGKILL"); // a second Ctrl-C: at once
    process.exit(exitCode);
  }
  stopping = true;
  process.exitCode = exitCode;
  // The node first (it drains and deregisters from the edge), then the edge.
  const [edge, ...rest] = children;
  for (const c of rest) c.kill("SIGTERM");
  const edgeDown = () => edge?.kill("SIGTERM");
  Promise.all(rest.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on("exit", r))))).then(edgeDown);
  setTimeout(() => {
    for (const c of children) c.kill("SIGKILL");
    process.exit(exitCode);
  }, 10_000).unref();
  Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on("exit", r))))).then(() =>
    process.exit(exitCode),
  );
}
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));

async function waitFor(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (stopping) throw new Error("stopping");
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${what} did not come up within ${ms / 1000} s`);
}

async function main(): Promise<void> {
  run(
    "edge",
    "npx",
    [
      "wrangler",
      "dev",
      "--ip",
      HOST,
      "--port",
      String(PORT),
      "--var",
      `EDGE_API_KEY:${rootKey}`,
      "--var",
      `NODE_SECRET:${nodeSecret}`,
      "--var",
      "ALLOW_HTTP_LOOPBACK:true",
      "--show-interactive-dev-session=false",
    ],
    { WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  );
  await waitFor("the edge", async () => (await fetch(`${EDGE}/healthz`, { signal: AbortSignal.timeout(1000) })).ok, 90_000);
  const key = await developmentKey();

  run("node", process.execPath, [
    "gpu-node/bin/gpu-node.mjs",
    "serve",
    "--engine",
    "simulated",
    "--host",
    HOST,
    "--port",
    String(NODE_PORT),
    "--node-secret",
    nodeSecret,
    "--edge",
    EDGE,
    "--node-id",
    "local-simulated",
    "--heartbeat-ms",
    "2000",
  ]);
  const auth = { authorization: `Bearer ${key}` };
  await waitFor(
    "the GPU node's registration",
    async () => {
      const res = await fetch(`${EDGE}/v1/models`, { headers: auth, signal: AbortSignal.timeout(1000) });
      return res.ok && ((await res.json()) as { data: unknown[] }).data.length > 0;
    },
    60_000,
  );

  const photo = "test/fixtures/images/exif_rot6_4032x3024.jpg";
  process.stdout.write(
    [
      "",
      `The edge is up on ${EDGE} with one local GPU node (engine: simulated — a test instrument, no model runs).`,
      "Development key (an API key with every scope; the edge stores only its SHA-256):",
      `QVL_DEV_KEY=${key}`,
      "",
      `Root key of this run (operators only; manage keys with it): npm run --silent keys -- --url ${EDGE} --admin-key ${rootKey} list`,
      "",
      "Stream a caption of a bundled phone photo (EXIF-rotated, 12 MP):",
      `curl -N '${EDGE}/v1/captions?stream=true' -H 'Authorization: Bearer ${key}' -H 'Content-Type: image/jpeg' --data-binary @${photo}`,
      "",
      "Find something in it (boxes in the photo's own pixels):",
      `curl '${EDGE}/v1/grounding?expression=the%20sky' -H 'Authorization: Bearer ${key}' -H 'Content-Type: image/jpeg' --data-binary @${photo}`,
      "",
      `Or use the official OpenAI client with baseURL ${EDGE}/v1 and apiKey $QVL_DEV_KEY (model qwen-vl-chat).`,
      "",
    ].join("\n"),
  );
}

/** Makes the development key through the key system (`POST /v1/keys` with the root key), or reuses QVL_DEV_KEY. */
async function developmentKey(): Promise<string> {
  const res = await fetch(`${EDGE}/v1/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${rootKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      name: "npm start development key",
      scopes: ALL_SCOPES,
      rate: "6000/min",
      ...(requestedKey ? { key: requestedKey } : {}),
    }),
  });
  const body = (await res.json().catch(() => null)) as { key?: string; error?: { code?: string; message?: string } } | null;
  if (res.status === 201 && body?.key) return body.key;
  if (res.status === 409 && requestedKey) {
    // Kept from an earlier run (local KV persists in .wrangler/state): reuse it if it still works with every scope.
    const usage = await fetch(`${EDGE}/v1/usage`, { headers: { authorization: `Bearer ${requestedKey}` } });
    const info = (await usage.json().catch(() => null)) as { key?: { scopes?: string[] } } | null;
    if (usage.ok && ALL_SCOPES.every((s) => info?.key?.scopes?.includes(s))) return requestedKey;
    throw new Error("QVL_DEV_KEY exists on this edge but is revoked or lacks a scope: choose another value (or unset it)");
  }
  throw new Error(`could not create the development key: HTTP ${res.status} ${body?.error?.message ?? ""}`);
}

main().catch((err) => {
  if (!stopping) {
    process.stderr.write(`npm start: ${(err as Error).message}\n`);
    stop("SIGTERM", 1);
  }
});
