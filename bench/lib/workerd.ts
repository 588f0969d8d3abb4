/** workerd as the gateway benchmarks run it: Miniflare, reached through a direct socket (no entry worker, no Node proxy). */
import { Miniflare, type MiniflareOptions } from "miniflare";

/** workerd serving `options` through a direct socket on 127.0.0.1; returns it and its origin. */
export async function startDirectWorkerd(options: MiniflareOptions): Promise<{ mf: Miniflare; origin: string }> {
  const mf = new Miniflare({
    cf: false, // placeholder Request.cf: no fetch of workers.cloudflare.com/cf.json (loopback only)
    ...options,
    // Production has no such hop: by default Miniflare sends every outbound fetch through a JS worker that strips a header.
    stripCfConnectingIp: false,
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    host: "127.0.0.1",
    port: 0,
  } as MiniflareOptions);
  await mf.ready;
  return { mf, origin: (await mf.unsafeGetDirectURL()).origin };
}
