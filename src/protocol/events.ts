/**
 * The node's answer: `text/event-stream` of named events, each `data` one JSON object.
 *
 *   event: token   {prompt, text, tokens, logprobs?}        text for one prompt; may carry several tokens
 *   event: done    {prompt, finish_reason, usage, timings, engine}   once per prompt
 *   event: error   {prompt?, code, message, retryable}      ends the stream (no prompt: every prompt)
 *
 * A node sends what is ready as one `token` event (the edge pays per chunk, not per byte).
 */
import { EventSourceParserStream } from "eventsource-parser/stream";
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

/** Parses a node's SSE byte stream into validated events; a malformed event becomes an `error` event. */
export function decodeEventStream(body: ReadableStream<Uint8Array>): ReadableStream<NodeEvent> {
  return body
    .pipeThrough(new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>)
    .pipeThrough(new EventSourceParserStream())
    .pipeThrough(
      new TransformStream({
        transform(message, controller) {
          let data: unknown;
          try {
            data = JSON.parse(message.data);
          } catch {
            data = undefined;
          }
          const parsed = NodeEvent.safeParse({ ...(typeof data === "object" && data !== null ? data : {}), type: message.event });
          controller.enqueue(
            parsed.success
              ? parsed.data
              : {
                  type: "error",
                  code: "internal_error",
                  message: `malformed ${message.event ?? "message"} event from the node`,
                  retryable: true,
                },
          );
        },
      }),
    );
}
