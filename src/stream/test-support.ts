/** Test helpers for the stream tests: a source the test drives, and readers of SSE output. */
import { createParser, type EventSourceMessage } from "eventsource-parser";
import type { DoneEvent, ErrorEvent, NodeEvent, TokenEvent } from "../protocol/events";

export const tok = (prompt: number, text: string, tokens = 1, logprobs?: TokenEvent["logprobs"]): TokenEvent =>
  logprobs ? { type: "token", prompt, text, tokens, logprobs } : { type: "token", prompt, text, tokens };

export const done = (
  prompt: number,
  prompt_tokens = 300,
  completion_tokens = 2,
  finish_reason: DoneEvent["finish_reason"] = "stop",
): DoneEvent => ({
  type: "done",
  prompt,
  finish_reason,
  usage: { prompt_tokens, completion_tokens },
  timings: { queue_ms: 1, vision_ms: 2, prefill_ms: 3, decode_ms: 4 },
  engine: "simulated",
});

export const nodeError = (code: ErrorEvent["code"] = "engine_failed", prompt?: number): ErrorEvent =>
  prompt === undefined
    ? { type: "error", code, message: "CUDA out of memory at 0xdeadbeef", retryable: false }
    : { type: "error", prompt, code, message: "CUDA out of memory at 0xdeadbeef", retryable: false };

/** A source stream the test writes to, recording whether (and why) the consumer cancelled it. */
export function controlledSource(initial: NodeEvent[] = []) {
  let controller!: ReadableStreamDefaultController<NodeEvent>;
  let cancelReason: unknown;
  let cancelled = false;
  let onCancel: () => void = () => {};
  const cancelledPromise = new Promise<void>((r) => {
    onCancel = r;
  });
  const stream = new ReadableStream<NodeEvent>({
    start(c) {
      controller = c;
      for (const e of initial) c.enqueue(e);
    },
    cancel(reason) {
      cancelled = true;
      cancelReason = reason;
      onCancel();
    },
  });
  return {
    stream,
    push: (...events: NodeEvent[]) => {
      for (const e of events) controller.enqueue(e);
    },
    close: () => controller.close(),
    error: (e: unknown) => controller.error(e),
    get cancelled() {
      return cancelled;
    },
    get cancelReason() {
      return cancelReason;
    },
    whenCancelled: cancelledPromise,
  };
}

/** Reads a byte stream to its end: the decoded chunks as the reader saw them. */
export async function readChunks(body: ReadableStream<Uint8Array>): Promise<string[]> {
  const decoder = new TextDecoder();
  const chunks: string[] = [];
  const reader = body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return chunks;
    chunks.push(decoder.decode(value, { stream: true }));
  }
}

export interface ParsedSse {
  messages: EventSourceMessage[];
  comments: string[];
  /** Messages and comments in order: `#comment` or `event|data`. */
  sequence: string[];
}

/** Parses SSE text with eventsource-parser. */
export function parseSse(text: string): ParsedSse {
  const out: ParsedSse = { messages: [], comments: [], sequence: [] };
  const parser = createParser({
    onEvent(m) {
      out.messages.push(m);
      out.sequence.push(`${m.event ?? ""}|${m.data}`);
    },
    onComment(c) {
      out.comments.push(c);
      out.sequence.push(`#${c}`);
    },
  });
  parser.feed(text);
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
