/**
 * Node events → OpenAI's chat completion shapes, streaming (`chat.completion.chunk` SSE) and not
 * (`chat.completion`), so the official `openai` client works unchanged.
 *
 * Stream, per choice (choice index = prompt index; several prompts or `n` > 1 share one stream):
 *   {"choices":[{"index":i,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}
 *   {"choices":[{"index":i,"delta":{"content":"…"},"logprobs":null,"finish_reason":null}]}   (0 or more)
 *   {"choices":[{"index":i,"delta":{},"logprobs":null,"finish_reason":"stop"}]}
 * then, once every choice is finished, the usage chunk (`choices: []`) when `includeUsage`, and
 * `data: [DONE]`. Every chunk carries `id`, `object`, `created`, `model`, `system_fingerprint` (and
 * `usage: null` when usage is included, as OpenAI does). Adjacent token events of one prompt that
 * arrive together become one content chunk. An error — a node `error` event, a broken source, a
 * source that ends before every choice finished — is `data: {"error":{…}}` then `data: [DONE]`
 * (`sseErrorFrame`): the official client raises it instead of returning a truncated answer.
 *
 * Finish reasons: the node's `stop` and `length` pass through; `deadline` (the node's time budget ran
 * out mid-answer) is `length`, OpenAI's reason for an answer cut by a budget; `cancelled` is `stop`.
 */
import { type ApiError, sseErrorFrame } from "../errors";
import { type DoneEvent, type ErrorEvent, encodeEvent, type NodeEvent, type TokenEvent } from "../protocol/events";
import type { OpenAIChatOutput, OpenAIChatOutputInput } from "../protocol/schema";
import {
  apiErrorFromNode,
  drainSource,
  relaySse,
  SSE_DONE,
  type SseFramer,
  type SseRelayOptions,
  sseData,
  upstreamBrokenError,
} from "./sse";

export type OpenAIFinishReason = "stop" | "length";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface TopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface TokenLogprobOut extends TopLogprob {
  top_logprobs: TopLogprob[];
}

export interface ChoiceLogprobs {
  content: TokenLogprobOut[] | null;
  refusal: null;
}

export interface ChunkChoice {
  index: number;
  delta: { role?: "assistant"; content?: string };
  logprobs: ChoiceLogprobs | null;
  finish_reason: OpenAIFinishReason | null;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  system_fingerprint: string | null;
  choices: ChunkChoice[];
  usage?: Usage | null;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  system_fingerprint: string | null;
  choices: {
    index: number;
    message: { role: "assistant"; content: string; refusal: null };
    logprobs: ChoiceLogprobs | null;
    finish_reason: OpenAIFinishReason;
  }[];
  usage: Usage;
}

export interface ChatCompletionOptions {
  /** `chatcmpl-…` (see `chatCompletionId`). */
  id: string;
  /** Unix seconds. */
  created: number;
  /** The model name the client asked for. */
  model: string;
  /** Number of choices (= prompts); prompt indexes 0…choices-1. */
  choices: number;
  /** `stream_options.include_usage`. */
  includeUsage?: boolean;
  /** Put the node's per-token logprobs into the chunks (the request asked for `logprobs`). */
  logprobs?: boolean;
  /**
   * `system_fingerprint`. Default: null until a `done` event says which engine answered, then the
   * engine's name (`trtllm`, `simulated`). Pass the node's engine when known up front for a constant value.
   */
  systemFingerprint?: string;
  /**
   * "sum" (default): prompt tokens of every prompt add up (different prompts); "once": the prompts are
   * one prompt sampled `n` times, counted once as OpenAI does.
   */
  promptTokens?: "sum" | "once";
  /** Node error → client error (default `apiErrorFromNode`). */
  mapError?: (event: ErrorEvent) => ApiError;
}

/** `chatcmpl-` + 32 hex characters (the request id may be used instead). */
export function chatCompletionId(): string {
  return `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
}

export function openAIFinishReason(reason: DoneEvent["finish_reason"]): OpenAIFinishReason {
  return reason === "length" || reason === "deadline" ? "length" : "stop";
}

const encoder = new TextEncoder();
const bytesOf = (s: string) => Array.from(encoder.encode(s));

export function openAILogprobs(logprobs: NonNullable<TokenEvent["logprobs"]>): TokenLogprobOut[] {
  return logprobs.map((l) => ({
    token: l.token,
    logprob: l.logprob,
    bytes: bytesOf(l.token),
    top_logprobs: (l.top ?? []).map((t) => ({ token: t.token, logprob: t.logprob, bytes: bytesOf(t.token) })),
  }));
}

interface ChoiceState {
  started: boolean;
  finish: OpenAIFinishReason | null;
  text: string;
  logprobs: TokenLogprobOut[];
  promptTokens: number;
  completionTokens: number;
}

/**
 * The state both shapes are built from: which choices started and finished, their text, usage and
 * engine, and the first error. Streaming and non-streaming read the same events through it.
 */
export class ChatCompletionState {
  readonly options: ChatCompletionOptions;
  readonly choices: ChoiceState[];
  engine: string | null = null;
  error: ApiError | null = null;

  constructor(options: ChatCompletionOptions) {
    if (!(Number.isInteger(options.choices) && options.choices >= 1)) throw new RangeError("choices must be a positive integer");
    this.options = options;
    this.choices = Array.from({ length: options.choices }, () => ({
      started: false,
      finish: null,
      text: "",
      logprobs: [],
      promptTokens: 0,
      completionTokens: 0,
    }));
  }

  get finished(): boolean {
    return this.choices.every((c) => c.finish !== null);
  }

  get fingerprint(): string | null {
    return this.options.systemFingerprint ?? this.engine;
  }

  usage(): Usage {
    const prompt =
      this.options.promptTokens === "once"
        ? Math.max(0, ...this.choices.map((c) => c.promptTokens))
        : this.choices.reduce((n, c) => n + c.promptTokens, 0);
    const completion = this.choices.reduce((n, c) => n + c.completionTokens, 0);
    return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  }

  /** The choice an event is for, or null when the event must be ignored (unknown or finished prompt). */
  choice(prompt: number): ChoiceState | null {
    const c = this.choices[prompt];
    return c && c.finish === null ? c : null;
  }

  fail(event: ErrorEvent): ApiError {
    this.error ??= (this.options.mapError ?? apiErrorFromNode)(event);
    return this.error;
  }

  /** Applies a done event; returns the finish reason set, or null when ignored. */
  done(event: DoneEvent): OpenAIFinishReason | null {
    const c = this.choice(event.prompt);
    if (!c) return null;
    c.finish = openAIFinishReason(event.finish_reason);
    c.promptTokens = event.usage.prompt_tokens;
    c.completionTokens = event.usage.completion_tokens;
    this.engine ??= event.engine;
    return c.finish;
  }
}

/** Frames node events as `chat.completion.chunk` SSE (see the module header). */
export class ChatCompletionFramer implements SseFramer {
  readonly state: ChatCompletionState;

  constructor(options: ChatCompletionOptions) {
    this.state = new ChatCompletionState(options);
  }

  #chunk(choices: ChunkChoice[], usage?: Usage): string {
    const o = this.state.options;
    const chunk: ChatCompletionChunk = {
      id: o.id,
      object: "chat.completion.chunk",
      created: o.created,
      model: o.model,
      system_fingerprint: this.state.fingerprint,
      choices,
    };
    if (o.includeUsage) chunk.usage = usage ?? null;
    return sseData(chunk);
  }

  frame(events: readonly NodeEvent[]): { text: string; end?: "complete" | "error" } {
    let out = "";
    // Adjacent token events of one prompt are merged into one content chunk.
    let pendingIndex = -1;
    let pendingText = "";
    let pendingLogprobs: TokenLogprobOut[] = [];
    const flush = () => {
      if (pendingIndex < 0) return;
      const logprobs = this.state.options.logprobs && pendingLogprobs.length > 0 ? { content: pendingLogprobs, refusal: null } : null;
      if (pendingText !== "" || logprobs) {
        out += this.#chunk([{ index: pendingIndex, delta: { content: pendingText }, logprobs, finish_reason: null }]);
      }
      pendingIndex = -1;
      pendingText = "";
      pendingLogprobs = [];
    };
    const start = (index: number, c: ChoiceState) => {
      if (c.started) return;
      c.started = true;
      out += this.#chunk([{ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]);
    };

    for (const event of events) {
      if (event.type === "token") {
        const c = this.state.choice(event.prompt);
        if (!c) continue;
        if (pendingIndex !== event.prompt) flush();
        start(event.prompt, c);
        pendingIndex = event.prompt;
        pendingText += event.text;
        c.text += event.text;
        if (event.logprobs) {
          const lps = openAILogprobs(event.logprobs);
          pendingLogprobs.push(...lps);
          c.logprobs.push(...lps);
        }
      } else if (event.type === "done") {
        flush();
        const c = this.state.choice(event.prompt);
        if (!c) continue;
        start(event.prompt, c);
        const finish = this.state.done(event);
        out += this.#chunk([{ index: event.prompt, delta: {}, logprobs: null, finish_reason: finish }]);
        if (this.state.finished) {
          if (this.state.options.includeUsage) out += this.#chunk([], this.state.usage());
          return { text: out + SSE_DONE, end: "complete" };
        }
      } else {
        flush();
        return { text: out + sseErrorFrame(this.state.fail(event)), end: "error" };
      }
    }
    flush();
    return { text: out };
  }

  fail(error?: unknown): string {
    this.state.error ??= upstreamBrokenError(error);
    return sseErrorFrame(this.state.error);
  }
}

/** The frame's `output` field asking a node for these chunks (see OpenAIChatOutput in the protocol). */
export function chatOutputField(options: ChatCompletionOptions, keepAliveMs: number): OpenAIChatOutputInput {
  if (options.systemFingerprint !== undefined || options.mapError !== undefined) {
    throw new TypeError("chatOutputField: a node frames with the default fingerprint and error mapping only");
  }
  return {
    format: "openai-chat",
    id: options.id,
    created: options.created,
    model: options.model,
    include_usage: options.includeUsage ?? false,
    logprobs: options.logprobs ?? false,
    prompt_tokens: options.promptTokens ?? "sum",
    keep_alive_ms: keepAliveMs,
  };
}

/** The framer's options from a frame's `output` field (the node side of chatOutputField). */
export function chatOptionsFromOutput(output: OpenAIChatOutput, prompts: number): ChatCompletionOptions {
  return {
    id: output.id,
    created: output.created,
    model: output.model,
    choices: prompts,
    includeUsage: output.include_usage,
    logprobs: output.logprobs,
    promptTokens: output.prompt_tokens,
  };
}

/**
 * What a node writes when the frame asks for `openai-chat` output: each write's events through the same
 * framer the edge's relay uses, so the bytes are the relay's for the same batches. Until something was
 * written for the client, an error event stays a protocol `event: error` (the edge may retry it on
 * another node, as it does when a node's first event is an error); after that it is the client's error
 * frame. `finish()` closes a stream that ended before the framer did (the relay's `fail()`: an error
 * frame after output, nothing before).
 */
export class ChatCompletionOutput {
  readonly framer: ChatCompletionFramer;
  /** Client bytes have been written. */
  started = false;
  /** The output is finished: nothing more is written. */
  ended = false;

  constructor(options: ChatCompletionOptions) {
    this.framer = new ChatCompletionFramer(options);
  }

  frame(events: readonly NodeEvent[]): string {
    if (this.ended || events.length === 0) return "";
    if (!this.started && events[0].type === "error") {
      this.ended = true;
      return encodeEvent(events[0]);
    }
    const { text, end } = this.framer.frame(events);
    if (text !== "") this.started = true;
    if (end) this.ended = true;
    return text;
  }

  finish(): string {
    if (this.ended) return "";
    this.ended = true;
    return this.started ? this.framer.fail() : "";
  }
}

/** The streaming response body for `POST /v1/chat/completions` with `stream: true`. */
export function relayChatCompletion(
  source: ReadableStream<NodeEvent>,
  options: ChatCompletionOptions,
  relay: SseRelayOptions = {},
): ReadableStream<Uint8Array> {
  return relaySse(source, new ChatCompletionFramer(options), relay);
}

export type ChatCompletionResult = { ok: true; completion: ChatCompletion; engine: string | null } | { ok: false; error: ApiError };

/** Builds the non-streaming `chat.completion` from the state after every choice finished. */
export function chatCompletionFromState(state: ChatCompletionState): ChatCompletion {
  const o = state.options;
  return {
    id: o.id,
    object: "chat.completion",
    created: o.created,
    model: o.model,
    system_fingerprint: state.fingerprint,
    choices: state.choices.map((c, index) => ({
      index,
      message: { role: "assistant", content: c.text, refusal: null },
      logprobs: o.logprobs ? { content: c.logprobs, refusal: null } : null,
      finish_reason: c.finish ?? "stop",
    })),
    usage: state.usage(),
  };
}

/**
 * Reads the whole source into one `chat.completion` (`stream: false`). Expected failures are returned:
 * a node error, a broken source or one that ends early give `{ok: false, error}`. `abort` is aborted
 * when the relay gives up while the node is still working (an error event with prompts running).
 */
export async function collectChatCompletion(
  source: ReadableStream<NodeEvent>,
  options: ChatCompletionOptions,
  abort?: AbortController,
): Promise<ChatCompletionResult> {
  const framer = new ChatCompletionFramer(options);
  const state = framer.state;
  const reader = source.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const { end } = framer.frame([value]);
      if (end === "complete") {
        void drainSource(reader);
        return { ok: true, completion: chatCompletionFromState(state), engine: state.engine };
      }
      if (end === "error") {
        reader.cancel().catch(() => {});
        abort?.abort(state.error);
        return { ok: false, error: state.error! };
      }
    }
    framer.fail();
  } catch (err) {
    framer.fail(err);
    abort?.abort(err);
  }
  return { ok: false, error: state.error! };
}
