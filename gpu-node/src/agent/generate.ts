/**
 * `POST /v1/generate`: frame in, `text/event-stream` out.
 *
 * Order (TGI's): cheap refusals first (draining, engine down, queue full: no body read), then the body
 * under a cap and `decodeFrame` (400 + the FrameError code), then admission (429 / 503 / 504 when the
 * deadline passes in the queue), then the stream. Once streaming, failures are `error` events.
 * The engine's signal is aborted when the client goes away, the deadline passes, or a drain times out.
 *
 * Output pacing (`streamIntervalMs`, vLLM's `--stream-interval` in time rather than tokens): each chunk
 * costs the edge a JavaScript wake-up whatever it carries, so the agent writes what is pending at most
 * once per interval. A prompt's first token goes out at once (time to first token is never delayed), and
 * `done` and `error` events flush at once with whatever is pending (the end is never delayed); tokens
 * that arrive within the interval after a write wait for the interval's end and go out together. Pending
 * tokens of one prompt become one `token` event (text joined, `tokens` and logprobs added up), so the
 * protocol and the counts are unchanged. 0 writes whatever is ready as soon as it is ready. Events the
 * engine produces in the same turn always join one chunk.
 *
 * Output format: protocol events, or, when the frame asks for `output: {format: "openai-chat"}`, the
 * client's OpenAI `chat.completion.chunk` SSE framed here by the edge's own framer (src/stream/openai.ts,
 * `ChatCompletionOutput`), with `: keep-alive` comments after `keep_alive_ms` without a write, so the
 * edge can pass the bytes through without JavaScript per chunk. Pacing is the same in both formats.
 */
import { IncomingMessage, type ServerResponse } from "node:http";
import type { Context } from "hono";
import {
  decodeFrame,
  encodeEvents,
  FrameError,
  type FrameLimits,
  type ModelVariant,
  type NodeEvent,
  OUTPUT_HEADER,
} from "../../../src/protocol/index";
import { ChatCompletionOutput, chatOptionsFromOutput, KEEP_ALIVE_COMMENT } from "../../../src/stream/index";
import type { Engine } from "../engines/engine";
import { type Admission, AdmissionError } from "./admission";
import { readBodyCapped, readIncomingCapped } from "./body";
import { AgentError } from "./errors";
import type { Logger } from "./log";
import type { AgentMetrics } from "./metrics";

export interface RetryAfterSeconds {
  overloaded: number;
  draining: number;
  unavailable: number;
}

/** Default output pacing: a person does not see 20 ms; see docs/gpu-node.md ("Output pacing"). */
export const DEFAULT_STREAM_INTERVAL_MS = 20;

export interface GenerateDeps {
  engine: Engine;
  admission: Admission;
  metrics: AgentMetrics;
  log: Logger;
  limits: FrameLimits;
  variant: ModelVariant;
  retryAfterS: RetryAfterSeconds;
  /** Running streams, so a drain that times out can abort them. */
  inFlight: Set<InFlight>;
  /** Minimum time between two writes of a stream (first tokens, done and error excepted); 0: no pacing. */
  streamIntervalMs: number;
}

export interface InFlight {
  requestId: string;
  /** Ends the stream with a retryable `draining` error event and aborts the engine's work. */
  abortForShutdown(): void;
}

type AbortCause = "client" | "deadline" | "shutdown";

export function generateHandler(deps: GenerateDeps) {
  const { engine, admission, metrics, log, limits } = deps;

  const refuse = (err: AgentError, fields: Record<string, unknown>) => {
    metrics.requests.inc({ outcome: err.type });
    metrics.errors.inc({ code: err.code });
    log({
      level: err.status >= 500 ? "warn" : "info",
      msg: "generate",
      status: err.status,
      outcome: err.type,
      code: err.code,
      error: err.message,
      ...fields,
    });
    return err.toResponse();
  };

  const fromAdmission = (err: AdmissionError) => {
    switch (err.code) {
      case "overloaded":
        return new AgentError("overloaded", err.message, { retryAfterS: deps.retryAfterS.overloaded });
      case "draining":
        return new AgentError("draining", err.message, { retryAfterS: deps.retryAfterS.draining });
      case "deadline_exceeded":
        return new AgentError("deadline_exceeded", err.message);
      case "cancelled":
        return new AgentError("cancelled", err.message);
    }
  };

  return async function generate(c: Context): Promise<Response> {
    const receivedAt = performance.now();
    const request = c.req.raw;
    // Served by @hono/node-server: Node's request and response, read directly (no WHATWG Request).
    const node = nodeHttp(c.env);
    // Aborted when the connection closes early (touching `request.signal` makes @hono/node-server do it).
    const clientGone = node ? clientGoneSignal(node.incoming, node.outgoing) : request.signal;
    const elapsed = () => Math.round(performance.now() - receivedAt);

    const early = admission.refusal();
    if (early) return refuse(fromAdmission(early), { duration_ms: elapsed() });
    const health = engine.health();
    if (!health.ok) {
      return refuse(new AgentError("engine_unavailable", "The engine is not ready.", { retryAfterS: deps.retryAfterS.unavailable }), {
        detail: health.detail,
        duration_ms: elapsed(),
      });
    }

    let decoded: Awaited<ReturnType<typeof decodeFrame>>;
    try {
      const bytes = node
        ? await readIncomingCapped(node.incoming, request.headers.get("content-length"), limits.maxFrameBytes)
        : await readBodyCapped(request, limits.maxFrameBytes);
      decoded = await decodeFrame(bytes, limits);
    } catch (err) {
      if (err instanceof FrameError)
        return refuse(new AgentError("invalid_frame", err.message, { code: err.code }), { duration_ms: elapsed() });
      if (clientGone.aborted)
        return refuse(new AgentError("cancelled", "The client went away while sending the frame."), { duration_ms: elapsed() });
      throw err;
    }
    const { header, images } = decoded;
    const fields = { request_id: header.request_id, prompts: header.prompts.length, images: images.length };
    if (header.variant !== deps.variant) {
      return refuse(
        new AgentError("invalid_frame", `This node serves ${deps.variant}, not ${header.variant}.`, {
          code: "unsupported_variant",
          retryable: true,
        }),
        { ...fields, duration_ms: elapsed() },
      );
    }

    const deadlineAt = header.deadline_ms !== undefined ? receivedAt + header.deadline_ms : undefined;
    const queuedAt = performance.now();
    let release: () => void;
    try {
      release = await admission.acquire({ signal: clientGone, deadlineAt });
    } catch (err) {
      if (err instanceof AdmissionError) {
        return refuse(fromAdmission(err), { ...fields, queue_ms: Math.round(performance.now() - queuedAt), duration_ms: elapsed() });
      }
      throw err;
    }
    const startedAt = performance.now();
    metrics.queueWait.observe((startedAt - queuedAt) / 1000);

    // --- streaming ------------------------------------------------------------------------------
    const controller = new AbortController();
    let cause: AbortCause | undefined;
    const pending: NodeEvent[] = [];
    let ended = false;
    /** Something pending must go out now: a prompt's first token, a done or an error event. */
    let urgent = false;
    /** Prompts whose first token has been queued. */
    const startedPrompts = new Set<number>();
    let wake: (() => void) | undefined;
    /** The output waits out the interval (set by the stream below). */
    let pacing = false;
    let firstTokenAt: number | undefined;
    let lastTokenAt = 0;
    let completionTokens = 0;
    let donePrompts = 0;
    let errorCode: string | undefined;
    let finished = false;

    const push = (event: NodeEvent) => {
      if (ended) return;
      if (event.type !== "token") {
        urgent = true;
      } else if (!startedPrompts.has(event.prompt)) {
        startedPrompts.add(event.prompt);
        urgent = true;
      }
      if (!(event.type === "token" && mergeIntoPending(pending, event))) pending.push(event);
      if (event.type === "error") ended = true;
      // While the output is pacing, only what must go out now wakes it (no timer churn per token).
      if (!pacing || urgent || ended) wake?.();
    };
    const end = () => {
      ended = true;
      wake?.();
    };
    const abort = (why: AbortCause, event?: NodeEvent) => {
      if (cause || finished) return;
      cause = why;
      if (event) push(event);
      // The response ends now; the slot is released when the engine has actually stopped.
      end();
      controller.abort(why);
    };

    const onClientGone = () => abort("client");
    clientGone.addEventListener("abort", onClientGone, { once: true });
    const deadlineTimer =
      deadlineAt === undefined
        ? undefined
        : setTimeout(
            () =>
              abort("deadline", {
                type: "error",
                code: "deadline_exceeded",
                message: `The deadline of ${header.deadline_ms} ms passed.`,
                retryable: false,
              }),
            Math.max(0, deadlineAt - performance.now()),
          );
    const entry: InFlight = {
      requestId: header.request_id,
      abortForShutdown: () =>
        abort("shutdown", { type: "error", code: "draining", message: "The node shut down before the request finished.", retryable: true }),
    };
    deps.inFlight.add(entry);

    const produce = async () => {
      try {
        for await (const event of engine.generate({ header, images, acceptedAt: queuedAt }, controller.signal)) {
          if (cause) break;
          if (event.type === "token" && event.tokens > 0) {
            const now = performance.now();
            if (firstTokenAt === undefined) {
              firstTokenAt = now;
              metrics.ttft.observe((now - receivedAt) / 1000);
            }
            lastTokenAt = now;
            completionTokens += event.tokens;
            metrics.tokens.inc(event.tokens);
          } else if (event.type === "done") {
            donePrompts++;
          } else if (event.type === "error") {
            errorCode = event.code;
          }
          push(event);
          if (event.type === "error") break;
        }
        if (!cause && !errorCode && donePrompts < header.prompts.length) {
          errorCode = "engine_failed";
          push({ type: "error", code: "engine_failed", message: "The engine ended the stream early.", retryable: true });
        }
      } catch (err) {
        if (!cause) {
          errorCode = "engine_failed";
          push({ type: "error", code: "engine_failed", message: "The engine failed.", retryable: true });
          log({ level: "error", msg: "engine error", request_id: header.request_id, error: String((err as Error)?.stack ?? err) });
        }
      } finally {
        finished = true;
        clearTimeout(deadlineTimer);
        clientGone.removeEventListener("abort", onClientGone);
        deps.inFlight.delete(entry);
        release();
        end();
        const outcome =
          cause === "client"
            ? "cancelled"
            : cause === "deadline"
              ? "deadline_exceeded"
              : cause === "shutdown"
                ? "draining"
                : (errorCode ?? "ok");
        const now = performance.now();
        metrics.requests.inc({ outcome });
        if (outcome !== "ok") metrics.errors.inc({ code: outcome });
        metrics.duration.observe((now - receivedAt) / 1000);
        if (firstTokenAt !== undefined && completionTokens > 1 && lastTokenAt > firstTokenAt) {
          metrics.decodeRate.observe((completionTokens - 1) / ((lastTokenAt - firstTokenAt) / 1000));
        }
        log({
          level: outcome === "ok" || outcome === "cancelled" ? "info" : "warn",
          msg: "generate",
          status: 200,
          outcome,
          ...fields,
          queue_ms: Math.round(startedAt - receivedAt),
          ttft_ms: firstTokenAt === undefined ? null : Math.round(firstTokenAt - receivedAt),
          duration_ms: Math.round(now - receivedAt),
          completion_tokens: completionTokens,
        });
      }
    };
    void produce();

    const interval = deps.streamIntervalMs;
    let lastWriteAt = Number.NEGATIVE_INFINITY;
    let cancelled = false;
    /** Resolves on the next event or the end, or after `ms`; the timer never outlives the wait. */
    const nextEvent = (ms?: number) =>
      new Promise<void>((resolve) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const done = () => {
          wake = undefined;
          clearTimeout(timer);
          resolve();
        };
        wake = done;
        if (ms !== undefined) timer = setTimeout(done, ms);
      });
    const encoder = new TextEncoder();
    /** The client's bytes (OpenAI chunks) instead of protocol events, when the frame asks for them. */
    const output = header.output ? new ChatCompletionOutput(chatOptionsFromOutput(header.output, header.prompts.length)) : null;
    const keepAliveMs = header.output?.keep_alive_ms ?? 0;
    let lastOutputAt = performance.now();
    let closed = false;
    const body = new ReadableStream<Uint8Array>(
      {
        async pull(stream) {
          if (closed) return;
          while (pending.length === 0 && !ended) {
            if (keepAliveMs <= 0) {
              await nextEvent();
              continue;
            }
            // OpenAI output: a keep-alive comment when nothing was written for keep_alive_ms.
            const quiet = performance.now() - lastOutputAt;
            if (quiet >= keepAliveMs) {
              lastOutputAt = performance.now();
              stream.enqueue(encoder.encode(KEEP_ALIVE_COMMENT));
              return;
            }
            await nextEvent(keepAliveMs - quiet);
            if (cancelled) return;
          }
          // Let events the engine produces in this same turn join the chunk.
          if (!ended) await new Promise<void>((resolve) => setImmediate(resolve));
          // Pacing: later tokens wait for the interval since the last write, unless something urgent arrives.
          const wait = lastWriteAt + interval - performance.now();
          if (wait > 0 && !(ended || urgent || cancelled)) {
            pacing = true;
            await nextEvent(wait);
            pacing = false;
          }
          if (cancelled) return;
          if (pending.length > 0) {
            urgent = false;
            const batch = pending.splice(0);
            const text = output ? output.frame(batch) : encodeEvents(batch);
            if (text !== "") {
              lastWriteAt = lastOutputAt = performance.now();
              metrics.streamWrites.inc();
              stream.enqueue(encoder.encode(text));
            }
          }
          if (output?.ended || (ended && pending.length === 0)) {
            // A stream that ended before its answer did: the relay's closing error frame (after output).
            const rest = output?.finish() ?? "";
            if (rest !== "") stream.enqueue(encoder.encode(rest));
            closed = true;
            stream.close();
          }
        },
        cancel() {
          cancelled = true;
          abort("client");
        },
      },
      { highWaterMark: 0 },
    );
    return new Response(body, {
      status: 200,
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-engine": engine.name,
        "x-request-id": header.request_id,
        ...(output ? { [OUTPUT_HEADER]: "openai-chat" } : {}),
      },
    });
  };
}

/**
 * Folds a token event into the pending token event of the same prompt, when no done or error event
 * stands between them (order is kept within a prompt; prompts are independent streams). False when
 * there is none to fold into.
 */
function mergeIntoPending(pending: NodeEvent[], event: NodeEvent & { type: "token" }): boolean {
  for (let i = pending.length - 1; i >= 0; i--) {
    const p = pending[i];
    if (p.type === "error") return false;
    if (p.prompt !== event.prompt) continue;
    if (p.type !== "token") return false;
    pending[i] = mergeTokens(p, event);
    return true;
  }
  return false;
}

function mergeTokens(a: NodeEvent & { type: "token" }, b: NodeEvent & { type: "token" }): NodeEvent {
  const merged: NodeEvent = { type: "token", prompt: a.prompt, text: a.text + b.text, tokens: a.tokens + b.tokens };
  if (a.logprobs || b.logprobs) merged.logprobs = [...(a.logprobs ?? []), ...(b.logprobs ?? [])];
  return merged;
}

interface NodeHttp {
  incoming: IncomingMessage;
  outgoing: ServerResponse;
}

/** Node's request and response when @hono/node-server serves the app (its `env`); null otherwise (tests' `app.request`). */
function nodeHttp(env: unknown): NodeHttp | null {
  const e = env as Partial<NodeHttp> | undefined;
  const incoming = e?.incoming;
  // A body someone already started reading goes through the WHATWG Request as before.
  if (!(incoming instanceof IncomingMessage) || !e?.outgoing || incoming.readableDidRead) return null;
  return { incoming, outgoing: e.outgoing };
}

/**
 * What @hono/node-server does for `request.signal` (aborted when the response closes before it
 * finished, or the request stream failed), without building the WHATWG Request it hangs on.
 */
function clientGoneSignal(incoming: IncomingMessage, outgoing: ServerResponse): AbortSignal {
  const controller = new AbortController();
  outgoing.once("close", () => {
    if (incoming.errored) controller.abort(incoming.errored.toString());
    else if (!outgoing.writableFinished) controller.abort("Client connection prematurely closed.");
  });
  return controller.signal;
}
