/**
 * `npm start`: the edge under `wrangler dev` on 127.0.0.1:8787 (local workerd, offline), with a
 * development token, then a ready-to-run curl. Ctrl-C (or SIGTERM) stops everything.
 *
 * The token comes from QVL_DEV_KEY when set, else a fresh random one; it is printed on a line of its
 * own as `QVL_DEV_KEY=<key>`.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

const HOST = "127.0.0.1";
const PORT = Number(process.env.PORT ?? 8787);
const ORIGIN = `http://${HOST}:${PORT}`;
const root = fileURLToPath(new URL("..", import.meta.url));
const key = process.env.QVL_DEV_KEY || `qvl_dev_${randomBytes(18).toString("base64url")}`;

const wrangler = spawn(
  "npx",
  [
    "wrangler",
    "dev",
    "--ip",
    HOST,
    "--port",
    String(PORT),
    "--var",
    `EDGE_API_KEY:${key}`,
    "--var",
    "ALLOW_HTTP_LOOPBACK:true",
    "--show-interactive-dev-session=false",
  ],
  {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  },
);
wrangler.stdout.on("data", (d) => process.stderr.write(d));
wrangler.stderr.on("data", (d) => process.stderr.write(d));

let stopping = false;
function stop(signal: NodeJS.Signals): void {
  if (stopping) {
    wrangler.kill("SIGKILL"); // a second Ctrl-C: at once
    return;
  }
  stopping = true;
  wrangler.kill("SIGTERM");
  setTimeout(() => wrangler.kill("SIGKILL"), 5000).unref();
  process.exitCode = 128 + (signal === "SIGINT" ? 2 : 15);
}
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));
wrangler.on("exit", (code) => process.exit(stopping ? (process.exitCode ?? 0) : (code ?? 1)));

async function waitForHealth(deadlineMs: number): Promise<boolean> {
  while (Date.now() < deadlineMs) {
    try {
      const res = await fetch(`${ORIGIN}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return true;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  return false;
}

if (await waitForHealth(Date.now() + 60_000)) {
  const photo = "test/fixtures/images/exif_rot6_4032x3024.jpg";
  process.stdout.write(
    [
      "",
      `The edge is up on ${ORIGIN}. Development key (bearer token for /v1/tensors):`,
      `QVL_DEV_KEY=${key}`,
      "",
      "See what the model sees (448x448 RGB after EXIF orientation and Pillow-exact resize):",
      `curl -sS -X POST '${ORIGIN}/v1/tensors?format=u8' -H 'Authorization: Bearer ${key}' \\`,
      `  -H 'Content-Type: image/jpeg' --data-binary @${photo} -o /tmp/qvl-tensor.u8 -D -`,
      "",
      "The normalized float16 tensor the GPU node receives:",
      `curl -sS -X POST '${ORIGIN}/v1/tensors?format=f16' -H 'Authorization: Bearer ${key}' \\`,
      `  -H 'Content-Type: image/jpeg' --data-binary @${photo} -o /tmp/qvl-tensor.f16 -D -`,
      "",
    ].join("\n"),
  );
} else {
  process.stderr.write(`The edge did not answer ${ORIGIN}/healthz within 60 s.\n`);
  stop("SIGTERM");
}
