/**
 * The edge's client for one GPU node: sends a generate frame and hands back the node's event stream
 * once its first event has arrived, so a caller can retry elsewhere when a node fails before the
 * first token (nothing has reached the client yet) and not after.
 */
import { decodeEventStream, encodeFrame, type GenerateHeaderInput, type NodeEvent } from "../protocol/index";

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
  const reader = decodeEventStream(response.body).getReader();
  let first: ReadableStreamReadResult<NodeEvent>;
  try {
    first = await reader.read();
  } catch (err) {
    if (options.signal.aborted) throw err;
    throw new NodeCallError(`node ${options.node.id} failed before its first event: ${(err as Error).message}`, true);
  }
  if (first.done) throw new NodeCallError(`node ${options.node.id} closed the stream without an event`, true);
  if (first.value.type === "error") {
    reader.cancel().catch(() => {});
    throw new NodeCallError(`node ${options.node.id}: ${first.value.code}: ${first.value.message}`, first.value.retryable);
  }
  const head = first.value;
  let sentHead = false;
  const events = new ReadableStream<NodeEvent>({
    async pull(controller) {
      if (!sentHead) {
        sentHead = true;
        controller.enqueue(head);
        return;
      }
      try {
        const next = await reader.read();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      } catch (err) {
        controller.error(err);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return { node: options.node, engine, events };
}
