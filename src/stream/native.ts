/**
 * The native relay: the client's bytes, written by the node itself (the frame's `output`,
 * src/protocol/schema.ts), passed through workerd without JavaScript per chunk.
 *
 * The edge has read (in JavaScript) only as far as the node's first output (`openNodeOutput`, which is
 * what retry-before-first-token and hedging need); it writes those bytes, then pipes the rest of the
 * node's body into a native `IdentityTransformStream` with `pipeTo` (workerd pumps native stream to native
 * stream itself: no JavaScript wakes per chunk). Around the pipe, once per request:
 * - the end: a body that ends without `data: [DONE]` gets the relay's own closing text,
 *   `data: {"error":…}` then `data: [DONE]` (`upstreamBrokenError`), as the JS relay does, and so does a
 *   body that errors where the pipe leaves the output writable. Known limit: workerd's native pump errors
 *   its destination when a native source (the node fetch's body) errors, even with `preventAbort`
 *   (measured with workerd 1.20260426.1), so when the node's connection is lost mid-answer (the node
 *   process died) the client's stream is cut off (no error frame, no `[DONE]`: a truncated answer a
 *   client can tell from a complete one, not the JS relay's error frame). Everything the node itself
 *   reports (engine failures, deadlines, drains) is framed by the node as the JS relay frames it;
 * - cancellation: the client going away ends the pipe and cancels the node's body, so the node request
 *   stops: the output cancelled fails the pipe's next write, which cancels the body; the request's
 *   `signal` aborts the node fetch (made with it), which errors the body (workerd does not end a pipe
 *   that waits on a read when a `pipeTo` signal aborts, so the signal is not given to the pipe);
 * - what the answer was, for usage and quota: the body is teed natively, the second branch read once the
 *   pipe has ended (its bytes buffered natively meanwhile), and only its last message parsed: an error
 *   frame, the usage chunk (`include_usage`), or a finish chunk.
 */
import { sseErrorFrame } from "../errors";
import type { Usage } from "./openai";
import { type Identity, identityStream, type RelayOutcome, SSE_DONE, upstreamBrokenError } from "./sse";

export interface NativeRelayOptions {
  /** The client went away when this aborts (the incoming request's `signal`). */
  signal?: AbortSignal;
  /** Called once when the relay stops: the outcome, and the usage chunk's figures when there was one. */
  onEnd?: (outcome: RelayOutcome, usage: Usage | null) => void;
  /** Write into this stream (its readable side already the response's body); default: a new one. */
  into?: Identity;
}

/** The end of a chat completion stream: complete (`[DONE]` after no error frame), and its usage chunk. */
export interface ChatTail {
  complete: boolean;
  /** The stream ended with `data: [DONE]` (after an answer or after an error frame). */
  closed: boolean;
  usage: Usage | null;
}

/** Reads the end of a `chat.completion.chunk` stream: its last message before `data: [DONE]`. */
export function chatTail(text: string): ChatTail {
  if (!text.endsWith(SSE_DONE)) return { complete: false, closed: false, usage: null };
  const body = text.slice(0, -SSE_DONE.length);
  // "\n\ndata: " cannot occur inside a message (JSON escapes newlines).
  const at = body.lastIndexOf("\n\ndata: ", body.length - 3);
  const last = body.slice(at < 0 ? 0 : at + 2).trimEnd();
  let value: { error?: unknown; usage?: Usage | null } | null = null;
  try {
    value = last.startsWith("data: ") ? JSON.parse(last.slice(6)) : null;
  } catch {}
  if (!value || value.error !== undefined) return { complete: false, closed: true, usage: null };
  return { complete: true, closed: true, usage: value.usage ?? null };
}

/** `head`, then `body` piped natively, into an SSE byte stream for the client (see the module header). */
export function relayNative(
  head: Uint8Array,
  body: ReadableStream<Uint8Array>,
  options: NativeRelayOptions = {},
): ReadableStream<Uint8Array> {
  const { readable, writable } = options.into ?? identityStream();
  const [toClient, toTail] = body.tee();
  const { signal } = options;
  const encoder = new TextEncoder();

  const closing = async (text: string): Promise<boolean> => {
    const writer = writable.getWriter();
    try {
      if (text !== "") await writer.write(encoder.encode(text));
      await writer.close();
      return true;
    } catch {
      writer.abort().catch(() => {});
      return false;
    }
  };

  // The client gone: stop buffering the second branch at once (the pipe ends when the node's body does).
  signal?.addEventListener("abort", () => toTail.cancel(signal.reason).catch(() => {}), { once: true });

  async function run(): Promise<[RelayOutcome, Usage | null]> {
    const writer = writable.getWriter();
    try {
      await writer.write(head);
    } catch {
      toClient.cancel().catch(() => {});
      toTail.cancel().catch(() => {});
      return ["cancelled", null];
    }
    writer.releaseLock();
    let broken: unknown;
    try {
      // No `signal` here: workerd does not end a pipe waiting on a read when it aborts (the node fetch,
      // made with the same signal, errors the body instead, which ends the pipe).
      await toClient.pipeTo(writable, { preventClose: true, preventAbort: true });
    } catch (err) {
      broken = err ?? new Error("pipe failed");
    }
    if (broken !== undefined) {
      // Either side: the node's body broke (node died), or the client went away (the write failed).
      toTail.cancel(broken).catch(() => {});
      if (signal?.aborted) {
        writable.abort().catch(() => {});
        return ["cancelled", null];
      }
      return [(await closing(sseErrorFrame(upstreamBrokenError(broken)))) ? "error" : "cancelled", null];
    }
    let tail: ChatTail;
    try {
      // The head counts: a short answer may have come whole with the first output.
      tail = chatTail(new TextDecoder().decode(head) + (await new Response(toTail).text()));
    } catch {
      tail = { complete: false, closed: false, usage: null };
    }
    // A body that ended without [DONE]: the relay's closing error frame, as for a source that ended early.
    const ok = await closing(tail.closed ? "" : sseErrorFrame(upstreamBrokenError()));
    if (!ok) return ["cancelled", null];
    return [tail.complete ? "complete" : "error", tail.usage];
  }

  run()
    .catch((): [RelayOutcome, Usage | null] => ["error", null])
    .then(([outcome, usage]) => {
      try {
        options.onEnd?.(outcome, usage);
      } catch {
        // A logging hook's failure is not the client's problem.
      }
    });
  return readable;
}
