/**
 * POST /v1/chat/completions: OpenAI's shape, so the official client works unchanged. Images come as
 * `image_url` parts (https URL or data URI); `n` > 1 samples the same prompt n times in one node request
 * (one vision pass). `quality` (`exact` | `fast`, not an OpenAI field) chooses the preprocessing of every
 * image; unset, the key's default. Answers go through the caches (./answer.ts).
 *
 * Two relays for `stream: true` (`x-relay` says which):
 * - `native` (opt-in, `EDGE_RELAY=native`): one prompt (`n` = 1), `stream_options.include_usage`, and an answer that is neither shared
 *   nor stored (`result=off` / `bypass`): the node writes the client's chunks itself (the frame's
 *   `output`) and the edge passes them through without JavaScript per chunk (src/stream/native.ts). The
 *   usage chunk is what tells the edge the answer's token counts (usage and quota) without reading every
 *   chunk, hence `include_usage`.
 *   The price: a node that dies mid-stream cuts the client's stream off (no error frame, no [DONE]),
 *   because workerd's native pump errors its destination with its source; hence opt-in.
 * - `js` (the default): everything else (cached or coalesced answers, `n` > 1, no usage chunk, a node that
 *   did not honour `output`, or `EDGE_RELAY=js`): node events framed here (`relaySse` + `ChatCompletionFramer`).
 */
import type { Context } from "hono";
import { requestCachePolicy } from "../cache/policy";
import type { AppEnv } from "../env";
import { sseErrorFrame, toApiError } from "../errors";
import type { ImageQuality } from "../keys/keys";
import { chatPrompt } from "../prompt/index";
import {
  ChatCompletionFramer,
  type ChatCompletionOptions,
  chatCompletionId,
  chatOutputField,
  collectChatCompletion,
  type Identity,
  identityStream,
  KEEP_ALIVE_COMMENT,
  relayNative,
  relaySse,
  sseResponse,
} from "../stream/index";
import {
  type AcceptedAnswer,
  type Answer,
  type AnswerPlan,
  answer,
  answerHeaders,
  answerOutput,
  type BytesAnswer,
  usageReporter,
} from "./answer";
import { imageContext, imageQuality, imageQualityHeaders, type PreparedImage, prepareImages } from "./images";
import { resolveModel } from "./model";
import { ChatCompletionRequest } from "./schemas";
import { readJsonBody, validate } from "./task-input";

export async function serveChatCompletion(c: Context<AppEnv>): Promise<Response> {
  const body = validate(ChatCompletionRequest, await readJsonBody(c));
  const { model, variant } = resolveModel(body.model);
  const prompt = chatPrompt(variant, body.messages);
  const config = c.get("config");
  const signal = c.req.raw.signal;
  const policy = requestCachePolicy(c.req.raw.headers);
  const quality = imageQuality(c, body.quality);
  const images = await prepareImages(
    prompt.images.map((i) => ({ url: i.url })),
    imageContext(c, policy),
    "apply",
    quality,
  );
  const n = body.n ?? 1;
  const includeUsage = body.stream_options?.include_usage ?? false;
  const options = {
    id: chatCompletionId(),
    created: Math.floor(Date.now() / 1000),
    model,
    choices: n,
    includeUsage,
    logprobs: body.logprobs ?? false,
    promptTokens: n > 1 ? ("once" as const) : ("sum" as const),
  };
  const native = config.stream.relay === "native" && body.stream === true && n === 1 && includeUsage;
  const plan: AnswerPlan = {
    variant,
    prompts: Array.from({ length: n }, () => prompt.segments),
    images,
    sampling: {
      max_tokens: body.max_completion_tokens ?? body.max_tokens,
      temperature: body.temperature,
      top_p: body.top_p,
      stop: body.stop,
      seed: body.seed,
      logprobs: body.logprobs ? (body.top_logprobs ?? 0) : undefined,
    },
    policy,
    signal,
  };
  if (body.stream) return serveStream(c, plan, options, images, quality, native);
  const ans = await answer(c, plan);
  const headers = { ...answerHeaders(c, ans, images), ...imageQualityHeaders(quality, images) };
  const report = usageReporter(c, images.length, ans.hit);
  try {
    const collected = await collectChatCompletion(ans.events, options);
    report(collected.ok, collected.ok ? collected.completion.usage : undefined);
    if (!collected.ok) throw collected.error;
    return c.json(collected.completion, 200, headers);
  } finally {
    ans.release();
  }
}

type Reporter = ReturnType<typeof usageReporter>;

/** Streams an answer to the client: the node's own bytes natively, or its events framed here. */
function relayAnswer(
  c: Context<AppEnv>,
  ans: Answer | BytesAnswer,
  options: ChatCompletionOptions,
  report: Reporter,
  into?: Identity,
): { body: ReadableStream<Uint8Array>; relay: "native" | "js" } {
  const signal = c.req.raw.signal;
  if ("bytes" in ans) {
    const body = relayNative(ans.bytes.head, ans.bytes.body, {
      signal,
      into,
      onEnd: (outcome, usage) => {
        ans.release();
        report(outcome === "complete", usage ?? undefined);
      },
    });
    return { body, relay: "native" };
  }
  const framer = new ChatCompletionFramer(options);
  const body = relaySse(ans.events, framer, {
    keepAliveMs: c.get("config").stream.keepAliveMs,
    signal,
    into,
    onEnd: (outcome) => {
      ans.release();
      report(outcome === "complete", framer.state.usage());
    },
  });
  return { body, relay: "js" };
}

/**
 * A streaming answer, answered as soon as a node has taken the request (its 200), not at its first
 * event: the response's status and headers go out while the GPU works, and the output follows in the
 * same stream (`: keep-alive` comments meanwhile, so a client, or a proxy in between, sees the answer
 * alive during a long queue or prefill). It also takes ≈ 0.45 ms off the last hop to the first token
 * (docs/benchmarks.md, "Time to first token, hop by hop"). Retries and hedging before the first token still happen: nothing but keep-alives
 * has reached the client. What changes: when every node fails after one took the request, the client gets
 * an error frame and `[DONE]` under the 200 instead of a 5xx status; a request no node takes (none free,
 * all refusing) is still answered with its status (503 no_capacity, …). A stored or shared answer is
 * answered once it is ready, as before.
 */
async function serveStream(
  c: Context<AppEnv>,
  plan: AnswerPlan,
  options: ChatCompletionOptions,
  images: PreparedImage[],
  quality: ImageQuality,
  native: boolean,
): Promise<Response> {
  const keepAliveMs = c.get("config").stream.keepAliveMs;
  let accept: (a: AcceptedAnswer) => void = () => {};
  const accepted = new Promise<{ accepted: AcceptedAnswer }>((resolve) => {
    accept = (a) => resolve({ accepted: a });
  });
  const pending: Promise<Answer | BytesAnswer> = native
    ? answerOutput(c, plan, chatOutputField(options, keepAliveMs), accept)
    : answer(c, plan, accept);
  const first = await Promise.race([pending, accepted]);
  if (!("accepted" in first)) {
    const headers = { ...answerHeaders(c, first, images), ...imageQualityHeaders(quality, images) };
    const relay = relayAnswer(c, first, options, usageReporter(c, images.length, first.hit));
    return sseResponse(relay.body, { headers: { ...headers, "x-relay": relay.relay } });
  }
  const { engine, queueMs, result } = first.accepted;
  const headers = {
    ...answerHeaders(c, { engine, queueMs, hit: false, result, release: () => {} }, images),
    ...imageQualityHeaders(quality, images),
    // The relay asked for; a node that did not honour `output` is relayed in JavaScript all the same.
    "x-relay": native ? "native" : "js",
  };
  const into = identityStream();
  const report = usageReporter(c, images.length, false);
  void relayWhenAnswered(c, pending, options, report, into, keepAliveMs);
  return sseResponse(into.readable, { headers });
}

/** After an early commit: keep-alives until the answer is there, then its relay; its error as a frame. */
async function relayWhenAnswered(
  c: Context<AppEnv>,
  pending: Promise<Answer | BytesAnswer>,
  options: ChatCompletionOptions,
  report: Reporter,
  into: Identity,
  keepAliveMs: number,
): Promise<void> {
  const writer = into.writable.getWriter();
  const encoder = new TextEncoder();
  let writes: Promise<unknown> = Promise.resolve();
  const timer =
    keepAliveMs > 0
      ? setInterval(() => {
          writes = writes.then(() => writer.write(encoder.encode(KEEP_ALIVE_COMMENT))).catch(() => {});
        }, keepAliveMs)
      : undefined;
  let ans: Answer | BytesAnswer;
  try {
    ans = await pending;
  } catch (err) {
    clearInterval(timer);
    await writes;
    const error = toApiError(err);
    if (error.code === "internal_error") {
      console.error(JSON.stringify({ level: "error", requestId: c.get("requestId"), path: c.req.path, error: String(err) }));
    }
    try {
      await writer.write(encoder.encode(sseErrorFrame(error)));
      await writer.close();
    } catch {
      writer.abort().catch(() => {});
    }
    report(false);
    return;
  }
  clearInterval(timer);
  await writes;
  writer.releaseLock();
  relayAnswer(c, ans, options, report, into);
}
