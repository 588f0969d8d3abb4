/**
 * The edge's client for one GPU node: sends a generate frame and hands back the node's event stream
 * once its first event has arrived, so a caller can retry elsewhere when a node fails before the
 * first token (nothing has reached the client yet) and not after.
 */
import { encodeFrame, type GenerateHeaderInput, type NodeEvent, OUTPUT_HEADER, openEventStream } from "../protocol/index";

export interface NodeTarget {
  id: string;
  url: string;
}

export class NodeCallError extends Error {
  constructor(
    message: string,
    /** True when another node (or a later try) may succeed. */
    readonly retryable: boolean,
    readonly status?: number,
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "NodeCallError";
  }
}

export interface OpenStreamOptions {
  node: NodeTarget;
  secret: string;
  header: GenerateHeaderInput;
  tensors: Uint8Array[];
  /** Aborts the node request (client gone, hedge lost, deadline). */
  signal: AbortSignal;
  fetch?: typeof fetch;
  /** Called when the node has taken the request (its 200 response), before its first event or output. */
  onAccepted?: (engine: string) => void;
}

export interface NodeStream {
  node: NodeTarget;
  engine: string;
  /** The first event followed by the rest. */
  events: ReadableStream<NodeEvent>;
}

/** Sends the frame; the node's 200 response with a body, or NodeCallError. */
async function postFrame(options: OpenStreamOptions): Promise<Response & { body: ReadableStream<Uint8Array> }> {
  const doFetch = options.fetch ?? fetch;
  let response: Response;
  try {
    response = await doFetch(new URL("/v1/generate", options.node.url), {
      method: "POST",
      headers: { authorization: `Bearer ${options.secret}`, "content-type": "application/octet-stream", accept: "text/event-stream" },
      body: encodeFrame(options.header, options.tensors) as Uint8Array<ArrayBuffer>,
      signal: options.signal,
    });
  } catch (err) {
    if (options.signal.aborted) throw err;
    throw new NodeCallError(`node ${options.node.id} unreachable: ${(err as Error).message}`, true);
  }
  if (response.status !== 200 || !response.body) {
    const retryAfter = Number(response.headers.get("retry-after") ?? Number.NaN);
    // The node says whether another node may succeed (`retryable`); without a readable body, back-pressure
    // and server errors are worth another node, other 4xx mean the edge sent something wrong.
    const body = (await response.json().catch(() => null)) as { error?: { code?: string; retryable?: boolean } } | null;
    const retryable =
      typeof body?.error?.retryable === "boolean" ? body.error.retryable : response.status === 429 || response.status >= 500;
    throw new NodeCallError(
      `node ${options.node.id} answered ${response.status}${body?.error?.code ? ` ${body.error.code}` : ""}`,
      retryable,
      response.status,
      Number.isFinite(retryAfter) ? retryAfter : undefined,
    );
  }
  options.onAccepted?.(response.headers.get("x-engine") ?? "unknown");
  return response as Response & { body: ReadableStream<Uint8Array> };
}

/** The node's protocol events, once the first one has arrived (see openNodeStream). */
async function firstEvent(options: OpenStreamOptions, response: Response & { body: ReadableStream<Uint8Array> }): Promise<NodeStream> {
  const engine = response.headers.get("x-engine") ?? "unknown";
  const decoded = openEventStream(response.body);
  let first: NodeEvent | null;
  try {
    first = await decoded.peek();
  } catch (err) {
    if (options.signal.aborted) throw err;
    throw new NodeCallError(`node ${options.node.id} failed before its first event: ${(err as Error).message}`, true);
  }
  if (first === null) throw new NodeCallError(`node ${options.node.id} closed the stream without an event`, true);
  if (first.type === "error") {
    decoded.events.cancel().catch(() => {});
    throw new NodeCallError(`node ${options.node.id}: ${first.code}: ${first.message}`, first.retryable);
  }
  // The first event stays queued in the stream: no wrapper stream (one fewer JS step per chunk).
  const events = decoded.events;
  return { node: options.node, engine, events };
}

/** Resolves when the node has answered with its first event; rejects with NodeCallError otherwise. */
export async function openNodeStream(options: OpenStreamOptions): Promise<NodeStream> {
  return firstEvent(options, await postFrame(options));
}

/** The client's bytes from a node that wrote them itself (the frame's `output`). */
export interface NodeBytes {
  node: NodeTarget;
  engine: string;
  /** What was read to see the first output: the client's first bytes (keep-alives before them left out). */
  head: Uint8Array;
  /** The rest of the node's body, unread (its reader released). */
  body: ReadableStream<Uint8Array>;
}

export type NodeOutput = ({ kind: "bytes" } & NodeBytes) | ({ kind: "events" } & NodeStream);

/**
 * Like openNodeStream for a frame with `output` (the node writes the client's bytes): resolves once the
 * node's first client bytes have arrived, reading (in JavaScript) only that far; rejects with
 * NodeCallError when the node fails before them (a protocol `event: error` says whether another node may
 * succeed), so retries and hedging work as with events. A node that did not honour `output` (no
 * `x-output` response header) is answered with its events.
 */
export async function openNodeOutput(options: OpenStreamOptions): Promise<NodeOutput> {
  const response = await postFrame(options);
  if (response.headers.get(OUTPUT_HEADER) !== "openai-chat") return { kind: "events", ...(await firstEvent(options, response)) };
  const engine = response.headers.get("x-engine") ?? "unknown";
  const reader = response.body.getReader();
  const fail = (message: string, retryable = true): never => {
    reader.cancel().catch(() => {});
    throw new NodeCallError(`node ${options.node.id}${message}`, retryable);
  };
  const decoder = new TextDecoder();
  const chunks: Uint8Array[] = [];
  let text = "";
  /** Characters of `text` already looked at (whole SSE messages: comments before the first output). */
  let scanned = 0;
  for (;;) {
    let r: ReadableStreamReadResult<Uint8Array>;
    try {
      r = await reader.read();
    } catch (err) {
      if (options.signal.aborted) throw err;
      return fail(` failed before its first output: ${(err as Error).message}`);
    }
    if (r.done) return fail(" closed the stream without output");
    chunks.push(r.value);
    text += decoder.decode(r.value, { stream: true });
    for (let end = text.indexOf("\n\n", scanned); end >= 0; end = text.indexOf("\n\n", scanned)) {
      const message = text.slice(scanned, end);
      if (message.startsWith(":")) {
        scanned = end + 2; // a keep-alive while the node works: not the client's (no response yet)
        continue;
      }
      if (message.startsWith("data: ")) {
        reader.releaseLock();
        return {
          kind: "bytes",
          node: options.node,
          engine,
          head: concat(chunks).subarray(utf8Length(text.slice(0, scanned))),
          body: response.body,
        };
      }
      // A protocol error before any output (the only other thing a node writes first).
      const error = /^event: error\ndata: (.*)$/s.exec(message);
      let parsed: { code?: string; message?: string; retryable?: boolean } | null = null;
      try {
        parsed = error ? JSON.parse(error[1]) : null;
      } catch {}
      if (!parsed) return fail(` wrote something unexpected before its first output: ${message.slice(0, 80)}`);
      return fail(`: ${parsed.code}: ${parsed.message}`, parsed.retryable !== false);
    }
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

const utf8Length = (s: string) => new TextEncoder().encode(s).byteLength;
