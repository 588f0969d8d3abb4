import { describe, expect, it } from "vitest";
import { encodeEvent, type NodeEvent, openEventStream } from "./events";

const token = (text: string): NodeEvent => ({ type: "token", prompt: 0, text, tokens: 1 });

function body(chunks: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(enc.encode(c));
      controller.close();
    },
  });
}

async function all(stream: ReadableStream<NodeEvent>): Promise<NodeEvent[]> {
  const out: NodeEvent[] = [];
  const reader = stream.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) out.push(r.value);
  return out;
}

describe("openEventStream", () => {
  it("peeks at the first event without consuming it", async () => {
    const decoded = openEventStream(body([encodeEvent(token("a")), encodeEvent(token("b"))]));
    expect(await decoded.peek()).toEqual(token("a"));
    expect(await decoded.peek()).toEqual(token("a"));
    expect(await all(decoded.events)).toEqual([token("a"), token("b")]);
  });

  it("decodes events split anywhere, several per chunk, and a last one without its blank line", async () => {
    const wire = encodeEvent(token("héllo 世界")) + encodeEvent(token("x")) + encodeEvent(token("y")).trimEnd();
    const bytes = new TextEncoder().encode(wire);
    for (const cut of [1, 7, 20, bytes.length - 3]) {
      const chunks = [bytes.subarray(0, cut), bytes.subarray(cut)];
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          for (const ch of chunks) c.enqueue(ch);
          c.close();
        },
      });
      expect(await all(openEventStream(stream).events)).toEqual([token("héllo 世界"), token("x"), token("y")]);
    }
  });

  it("turns a malformed event into a retryable error event, and null at the end", async () => {
    const decoded = openEventStream(body(["event: token\ndata: {not json}\n\n"]));
    expect(await decoded.peek()).toMatchObject({ type: "error", code: "internal_error", retryable: true });
    expect(await openEventStream(body([": only a comment\n\n"])).peek()).toBeNull();
  });
});
