/**
 * The edge's client for one GPU node: sends a generate frame and hands back the node's event stream
 * once its first event has arrived, so a caller can retry elsewhere when a node fails before the
 * first token (nothing has reached the client yet) and not after.
 */
import { encodeFrame, type GenerateHeaderInput, type NodeEvent, openEventStream } from "../protocol/index";

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
}

export interface NodeStream {
  node: NodeTarget;
  engine: string;
  /** The first event followed by the rest. */
  events: ReadableStream<NodeEvent>;
}

/** Resolves when the node has answered with its first event; rejects with NodeCallError otherwise. */
export async function openNodeStream(options: OpenStreamOptions): Promise<NodeStream> {
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
