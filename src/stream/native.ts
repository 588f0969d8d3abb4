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
 *
 * `relayBytes` is the same relay with a JavaScript loop in place of the pipe: one wake-up per chunk the node
 * writes (no parsing, no framing: the JS relay's default for the node's own bytes), and in exchange a node
 * body that breaks mid-answer still ends the client's stream with the error frame and `data: [DONE]`.
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

/** Writes the relay's closing text (if any) and closes `writable`; false when the client is gone. */
async function closeWith(writable: WritableStream<Uint8Array>, text: string): Promise<boolean> {
  const writer = writable.getWriter();
  try {
    if (text !== "") await writer.write(new TextEncoder().encode(text));
    await writer.close();
    return true;
  } catch {
    writer.abort().catch(() => {});
    return false;
  }
}

/** The end of a relay whose source ended: its closing text from the stream's tail, and the outcome. */
async function finishFromTail(writable: WritableStream<Uint8Array>, tail: ChatTail): Promise<[RelayOutcome, Usage | null]> {
  // A body that ended without [DONE]: the relay's closing error frame, as for a source that ended early.
  const ok = await closeWith(writable, tail.closed ? "" : sseErrorFrame(upstreamBrokenError()));
  if (!ok) return ["cancelled", null];
  return [tail.complete ? "complete" : "error", tail.usage];
}

/** A body that broke (the node's connection lost) or a write that failed (the client gone). */
async function finishBroken(
  writable: WritableStream<Uint8Array>,
  broken: unknown,
  signal?: AbortSignal,
): Promise<[RelayOutcome, Usage | null]> {
  if (signal?.aborted) {
    writable.abort().catch(() => {});
    return ["cancelled", null];
  }
  return [(await closeWith(writable, sseErrorFrame(upstreamBrokenError(broken)))) ? "error" : "cancelled", null];
}

/** Runs a relay and reports its end once (a logging hook's failure is not the client's problem). */
function reportEnd(run: Promise<[RelayOutcome, Usage | null]>, onEnd: NativeRelayOptions["onEnd"]): void {
  run
    .catch((): [RelayOutcome, Usage | null] => ["error", null])
    .then(([outcome, usage]) => {
      try {
        onEnd?.(outcome, usage);
      } catch {}
    });
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

  // The client gone: stop buffering the second branch at once (the pipe ends when the node's body does).
  signal?.addEventListener(
    "abort",
    () => {
      toTail.cancel(signal.reason).catch(() => {});
    },
    { once: true },
  );

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
      return finishBroken(writable, broken, signal);
    }
    let tail: ChatTail;
    try {
      // The head counts: a short answer may have come whole with the first output.
      tail = chatTail(new TextDecoder().decode(head) + (await new Response(toTail).text()));
    } catch {
      tail = { complete: false, closed: false, usage: null };
    }
    return finishFromTail(writable, tail);
  }

  reportEnd(run(), options.onEnd);
  return readable;
}

/** How much of the stream's end `relayBytes` keeps for its last message (a usage chunk is a few hundred bytes). */
const TAIL_BYTES = 8 * 1024;

/** `head`, then `body` copied by a JavaScript loop, into an SSE byte stream for the client (see the module header). */
export function relayBytes(
  head: Uint8Array,
  body: ReadableStream<Uint8Array>,
  options: NativeRelayOptions = {},
): ReadableStream<Uint8Array> {
  const { readable, writable } = options.into ?? identityStream();
  const { signal } = options;
  const reader = body.getReader();
  // The client gone: the node's body is cancelled at once, not at the next chunk (the node stops generating).
  const onAbort = () => {
    reader.cancel(signal?.reason).catch(() => {});
  };
  signal?.addEventListener("abort", onAbort, { once: true });

  async function run(): Promise<[RelayOutcome, Usage | null]> {
    const writer = writable.getWriter();
    /** The last chunks, at least TAIL_BYTES of them when there are that many. */
    const tail: Uint8Array[] = [head];
    let tailBytes = head.byteLength;
    let broken: unknown;
    try {
      // One write in flight while the next chunk is awaited: the write's completion (the client side taking
      // the chunk) overlaps the wait for the node, instead of costing a turn of its own per chunk.
      let writing = writer.write(head);
      for (;;) {
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await reader.read();
        } catch (err) {
          broken = err ?? new Error("the node's body failed");
          break;
        } finally {
          // A failed write (the client gone) fails here, into the outer catch; so does one still in flight.
          await writing;
        }
        if (r.done) break;
        tail.push(r.value);
        tailBytes += r.value.byteLength;
        while (tail.length > 1 && tailBytes - tail[0].byteLength >= TAIL_BYTES) tailBytes -= (tail.shift() as Uint8Array).byteLength;
        writing = writer.write(r.value);
      }
    } catch {
      // A write failed: the client went away.
      reader.cancel().catch(() => {});
      writer.abort().catch(() => {});
      return ["cancelled", null];
    } finally {
      signal?.removeEventListener("abort", onAbort);
      writer.releaseLock();
    }
    // The client gone (its signal cancelled the node's body, which then reads as done): nothing more to write.
    if (broken !== undefined || signal?.aborted) return finishBroken(writable, broken, signal);
    const decoder = new TextDecoder();
    return finishFromTail(writable, chatTail(tail.map((c) => decoder.decode(c, { stream: true })).join("") + decoder.decode()));
  }

  reportEnd(run(), options.onEnd);
  return readable;
}
