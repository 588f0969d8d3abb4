/**
 * The node's answer: `text/event-stream` of named events, each `data` one JSON object.
 *
 *   event: token   {prompt, text, tokens, logprobs?}        text for one prompt; may carry several tokens
 *   event: done    {prompt, finish_reason, usage, timings, engine}   once per prompt
 *   event: error   {prompt?, code, message, retryable}      ends the stream (no prompt: every prompt)
 *
 * A node sends what is ready as one `token` event (the edge pays per chunk, not per byte).
 */
import { createParser } from "eventsource-parser";
import { z } from "zod";

export const TokenLogprob = z.object({
  token: z.string(),
  logprob: z.number(),
  top: z.array(z.object({ token: z.string(), logprob: z.number() })).optional(),
});

export const TokenEvent = z.object({
  type: z.literal("token"),
  prompt: z.number().int().min(0),
  text: z.string(),
  /** Number of tokens this event carries. */
  tokens: z.number().int().min(0),
  logprobs: z.array(TokenLogprob).optional(),
});

export const FinishReason = z.enum(["stop", "length", "cancelled", "deadline"]);

export const DoneEvent = z.object({
  type: z.literal("done"),
  prompt: z.number().int().min(0),
  finish_reason: FinishReason,
  usage: z.object({ prompt_tokens: z.number().int().min(0), completion_tokens: z.number().int().min(0) }),
  timings: z.object({
    queue_ms: z.number().min(0),
    vision_ms: z.number().min(0),
    prefill_ms: z.number().min(0),
    decode_ms: z.number().min(0),
  }),
  /** Which engine answered: "trtllm", or "simulated" (a test instrument: no model ran). */
  engine: z.string(),
});

export const NodeErrorCode = z.enum([
  "invalid_frame",
  "unauthorized",
  "overloaded",
  "draining",
  "deadline_exceeded",
  "cancelled",
  "engine_failed",
  "engine_unavailable",
  "internal_error",
]);
export type NodeErrorCode = z.infer<typeof NodeErrorCode>;

export const ErrorEvent = z.object({
  type: z.literal("error"),
  prompt: z.number().int().min(0).optional(),
  code: NodeErrorCode,
  message: z.string(),
  /** True when the same request may succeed on another node (or later). */
  retryable: z.boolean(),
});

export const NodeEvent = z.discriminatedUnion("type", [TokenEvent, DoneEvent, ErrorEvent]);
export type TokenEvent = z.infer<typeof TokenEvent>;
export type DoneEvent = z.infer<typeof DoneEvent>;
export type ErrorEvent = z.infer<typeof ErrorEvent>;
export type NodeEvent = z.infer<typeof NodeEvent>;

/** One SSE message for an event. */
export function encodeEvent(event: NodeEvent): string {
  const { type, ...data } = event;
  return `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Several events as one chunk (one write for everything that is ready). */
export function encodeEvents(events: NodeEvent[]): string {
  return events.map(encodeEvent).join("");
}

/** A node's SSE byte stream decoded into validated events, with a look at the first one. */
export interface NodeEventStream {
  events: ReadableStream<NodeEvent>;
  /** The next event without consuming it (null at the end); for deciding on a retry before relaying. */
  peek(): Promise<NodeEvent | null>;
}

/**
 * Parses a node's SSE byte stream into validated events; a malformed event becomes an `error` event.
 * One stage (bytes → text → eventsource-parser → zod in a single pull source), not a chain of
 * `pipeThrough`s: the edge pays per chunk and stage, and at 64 streams a three-stage chain cost half
 * of workerd's CPU on the relay path (docs/benchmarks.md, gateway). Every event parsed from one chunk
 * is enqueued at once, so the relay can frame them as one write.
 */
export function openEventStream(body: ReadableStream<Uint8Array>): NodeEventStream {
  const reader = body.getReader();
  const text = new TextDecoder();
  const queue: NodeEvent[] = [];
  let ended = false;
  let filling: Promise<void> | null = null;
  const parser = createParser({ onEvent: (message) => queue.push(toNodeEvent(message.event, message.data)) });

  const fill = (): Promise<void> => {
    filling ??= (async () => {
      while (queue.length === 0 && !ended) {
        const next = await reader.read();
        if (next.done) {
          parser.feed(`${text.decode()}\n\n`); // flush a last event without its blank line
          ended = true;
        } else {
          parser.feed(text.decode(next.value, { stream: true }));
        }
      }
    })().finally(() => {
      filling = null;
    });
    return filling;
  };

  const events = new ReadableStream<NodeEvent>(
    {
      async pull(controller) {
        await fill();
        if (queue.length === 0) {
          controller.close();
          return;
        }
        for (const event of queue.splice(0)) controller.enqueue(event);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return {
    events,
    async peek() {
      await fill();
      return queue[0] ?? null;
    },
  };
}

/** Parses a node's SSE byte stream into validated events (see openEventStream). */
export function decodeEventStream(body: ReadableStream<Uint8Array>): ReadableStream<NodeEvent> {
  return openEventStream(body).events;
}

function toNodeEvent(name: string | undefined, data: string): NodeEvent {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    value = undefined;
  }
  const parsed = NodeEvent.safeParse({ ...(typeof value === "object" && value !== null ? value : {}), type: name });
  return parsed.success
    ? parsed.data
    : { type: "error", code: "internal_error", message: `malformed ${name ?? "message"} event from the node`, retryable: true };
}
