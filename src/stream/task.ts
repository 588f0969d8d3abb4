/**
 * The task routes' answers (`/v1/captions`, `/v1/vqa`, `/v1/grounding`), streaming and not.
 *
 * Streaming is SSE with named events, each `data` one JSON object:
 *
 *   event: delta   {"text":"…"}                      answer text as it is generated (raw model text;
 *                                                     everything that arrived together is one delta)
 *   event: box     {"label","box","box_normalized"}  grounding only: each box as soon as its `</box>`
 *                                                     arrives, after the delta that closed it
 *   event: done    {caption|answer|boxes+text, finish_reason, usage, engine, …meta}   last event on success
 *   event: error   {"error":{"message","type","param","code"}}                        last event on failure
 *
 * plus `: keep-alive` comments while nothing is generated. `done` carries the same body the
 * non-streaming route answers (`collectTask`): `{caption}` for captions, `{answer}` for VQA,
 * `{boxes:[{label, box, box_normalized}], text}` for grounding (boxes in pixels of the image as the user
 * sees it), each with `finish_reason` ("stop" | "length"), `usage` {prompt_tokens, completion_tokens,
 * total_tokens} and `engine`. `caption`, `answer` and `text` are trimmed; the deltas are not. There is
 * no `[DONE]` sentinel: `done` and `error` are the two ways a stream ends.
 *
 * One prompt per request (prompt 0); events for other prompts are ignored.
 */
import { type ApiError, toApiError } from "../errors";
import type { GroundingStart } from "../prompt/tasks";
import type { ErrorEvent, NodeEvent } from "../protocol/events";
import { type GroundingBox, type GroundingEvent, GroundingParser } from "./grounding";
import { type OpenAIFinishReason, openAIFinishReason, type Usage } from "./openai";
import { apiErrorFromNode, drainSource, relaySse, type SseFramer, type SseRelayOptions, sseEvent, upstreamBrokenError } from "./sse";

export type Task = "caption" | "vqa" | "grounding";

export interface TaskOptions {
  task: Task;
  /** Grounding: the image as the user sees it (after orientation). */
  image?: { width: number; height: number };
  /** Grounding: where the answer starts (`groundingPrompt(...).grounding`). */
  grounding?: GroundingStart;
  /** Extra fields for the `done` body (e.g. `id`, `model`); the task's own fields win. */
  meta?: Record<string, unknown>;
  /** Node error → client error (default `apiErrorFromNode`). */
  mapError?: (event: ErrorEvent) => ApiError;
}

interface TaskCommon {
  finish_reason: OpenAIFinishReason;
  usage: Usage;
  engine: string;
  [key: string]: unknown;
}
export type CaptionResult = TaskCommon & { caption: string };
export type VqaResult = TaskCommon & { answer: string };
export type GroundingTaskResult = TaskCommon & { boxes: GroundingBox[]; text: string };
export type TaskResult = CaptionResult | VqaResult | GroundingTaskResult;

type Piece = { type: "text"; text: string } | { type: "box"; box: GroundingBox };

/** The answer of one task request, built from node events. */
export class TaskState {
  readonly options: TaskOptions;
  readonly parser: GroundingParser | null;
  text = "";
  result: TaskResult | null = null;
  error: ApiError | null = null;

  constructor(options: TaskOptions) {
    this.options = options;
    if (options.task === "grounding") {
      if (!options.image) throw new RangeError("a grounding task needs the image size");
      this.parser = new GroundingParser({
        width: options.image.width,
        height: options.image.height,
        defaultLabel: options.grounding?.defaultLabel ?? null,
        startInBox: options.grounding?.startInBox ?? false,
      });
    } else {
      this.parser = null;
    }
  }

  /** Applies one event; returns what to tell a streaming client. `end` once the answer is over. */
  apply(event: NodeEvent): { pieces: Piece[]; end?: "complete" | "error" } {
    if (this.result || this.error) return { pieces: [] };
    if (event.type === "error") {
      this.error = (this.options.mapError ?? apiErrorFromNode)(event);
      return { pieces: [], end: "error" };
    }
    if (event.prompt !== 0) return { pieces: [] };
    if (event.type === "token") {
      this.text += event.text;
      return { pieces: this.parser ? this.parser.push(event.text).map(piece) : [{ type: "text", text: event.text }] };
    }
    const pieces = this.parser ? this.parser.end().map(piece) : [];
    const common = {
      ...this.options.meta,
      finish_reason: openAIFinishReason(event.finish_reason),
      usage: {
        prompt_tokens: event.usage.prompt_tokens,
        completion_tokens: event.usage.completion_tokens,
        total_tokens: event.usage.prompt_tokens + event.usage.completion_tokens,
      },
      engine: event.engine,
    };
    const text = this.text.trim();
    switch (this.options.task) {
      case "caption":
        this.result = { ...common, caption: text };
        break;
      case "vqa":
        this.result = { ...common, answer: text };
        break;
      case "grounding":
        this.result = { ...common, boxes: this.parser!.boxes, text };
        break;
    }
    return { pieces, end: "complete" };
  }

  failUpstream(error?: unknown): ApiError {
    this.error ??= upstreamBrokenError(error);
    return this.error;
  }
}

function piece(e: GroundingEvent): Piece {
  if (e.type === "text") return e;
  const { type: _, ...box } = e;
  return { type: "box", box };
}

/** Frames node events as the task SSE events above. */
export class TaskFramer implements SseFramer {
  readonly state: TaskState;

  constructor(options: TaskOptions) {
    this.state = new TaskState(options);
  }

  frame(events: readonly NodeEvent[]): { text: string; end?: "complete" | "error" } {
    let out = "";
    let delta = "";
    const flush = () => {
      if (delta !== "") out += sseEvent("delta", { text: delta });
      delta = "";
    };
    for (const event of events) {
      const { pieces, end } = this.state.apply(event);
      for (const p of pieces) {
        if (p.type === "text") delta += p.text;
        else {
          flush();
          out += sseEvent("box", p.box);
        }
      }
      if (end) {
        flush();
        if (end === "complete") return { text: out + sseEvent("done", this.state.result), end };
        return { text: out + sseEvent("error", this.state.error!.toJSON()), end };
      }
    }
    flush();
    return { text: out };
  }

  fail(error?: unknown): string {
    return sseEvent("error", this.state.failUpstream(error).toJSON());
  }
}

/** The streaming body of a task route. */
export function relayTask(
  source: ReadableStream<NodeEvent>,
  options: TaskOptions,
  relay: SseRelayOptions = {},
): ReadableStream<Uint8Array> {
  return relaySse(source, new TaskFramer(options), relay);
}

export type CollectedTask = { ok: true; result: TaskResult } | { ok: false; error: ApiError };

/** Reads the whole source into the task's response body (non-streaming). Failures are returned. */
export async function collectTask(
  source: ReadableStream<NodeEvent>,
  options: TaskOptions,
  abort?: AbortController,
): Promise<CollectedTask> {
  const state = new TaskState(options);
  const reader = source.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const { end } = state.apply(value);
      if (end === "complete") {
        void drainSource(reader);
        return { ok: true, result: state.result! };
      }
      if (end) {
        reader.cancel().catch(() => {});
        abort?.abort(state.error);
        return { ok: false, error: state.error! };
      }
    }
    state.failUpstream();
  } catch (err) {
    state.failUpstream(err);
    abort?.abort(err);
  }
  return { ok: false, error: state.error ?? toApiError(undefined) };
}
