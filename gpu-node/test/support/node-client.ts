/**
 * Talking to an agent the way the edge does: POST a frame, read the event stream.
 */
import { decodeEventStream, type NodeEvent } from "../../../src/protocol/index";

export const SECRET = "test-node-secret";

export function postFrame(url: string, frame: Uint8Array, init: { secret?: string | null; signal?: AbortSignal } = {}): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/octet-stream" };
  if (init.secret !== null) headers.authorization = `Bearer ${init.secret ?? SECRET}`;
  return fetch(`${url}/v1/generate`, { method: "POST", headers, body: frame as Uint8Array<ArrayBuffer>, signal: init.signal });
}

/** Every event of a 200 response, with how many HTTP chunks carried them. */
export async function readEvents(res: Response): Promise<{ events: NodeEvent[]; chunks: number }> {
  if (res.status !== 200 || !res.body) throw new Error(`expected 200, got ${res.status}: ${await res.text()}`);
  let chunks = 0;
  const counted = res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        chunks++;
        controller.enqueue(chunk);
      },
    }),
  );
  const events: NodeEvent[] = [];
  const reader = decodeEventStream(counted).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    events.push(value);
  }
  return { events, chunks };
}

/** The text of each prompt, joined from its token events. */
export function textsByPrompt(events: NodeEvent[]): string[] {
  const out: string[] = [];
  for (const e of events) if (e.type === "token") out[e.prompt] = (out[e.prompt] ?? "") + e.text;
  return out;
}

/** Polls `check` every 5 ms until it is true or `ms` pass (then throws). */
export async function waitFor(check: () => boolean, ms = 5_000, what = "condition"): Promise<void> {
  const until = performance.now() + ms;
  while (!check()) {
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
