/**
 * POST /v1/chat/completions: OpenAI's shape, so the official client works unchanged. Images come as
 * `image_url` parts (https URL or data URI); `n` > 1 samples the same prompt n times in one node request
 * (one vision pass). `quality` (`exact` | `fast`, not an OpenAI field) chooses the preprocessing of every
 * image; unset, the key's default. Answers go through the caches (./answer.ts).
 *
 * For `stream: true` with one prompt (`n` = 1), `stream_options.include_usage`, and an answer that is neither
 * shared nor stored (`result=off` / `bypass`), the node writes the client's chunks itself (the frame's
 * `output`) and the edge relays its bytes without parsing them (src/stream/native.ts); the usage chunk is
 * what tells the edge the answer's token counts (usage and quota) without reading every chunk, hence
 * `include_usage`. `EDGE_RELAY` says how (`x-relay` tells the client):
 * - `js` (the default): a JavaScript loop copies the bytes (`relayBytes`): a wake-up per chunk, and a node that
 *   dies mid-stream still gets the error frame and [DONE];
 * - `native` (opt-in): a native pipe (`relayNative`): no JavaScript per chunk, but a node that dies mid-stream
 *   cuts the client's stream off (no error frame, no [DONE]), because workerd's native pump errors its
 *   destination with its source.
 * Everything else (cached or coalesced answers, `n` > 1, no usage chunk, a node that did not honour `output`)
 * is relayed from node events framed here (`relaySse` + `ChatCompletionFramer`), under `x-relay: js`.
 */
import type { Context } from "hono";
import { requestCachePolicy } from "../cache/policy";
import type { AppEnv } from "../env";
import { sseErrorFrame } from "../errors";
import type { ImageQuality } from "../keys/keys";
import { chatPrompt } from "../prompt/index";
import {
  ChatCompletionFramer,
  type ChatCompletionOptions,
  chatCompletionId,
  chatOutputField,
  collectChatCompletion,
  type Identity,
  relayBytes,
  relayNative,
  relaySse,
} from "../stream/index";
import { type Answer, type AnswerPlan, answer, answerHeaders, answerOutput, type BytesAnswer, usageReporter } from "./answer";
import { imageContext, imageQuality, imageQualityHeaders, type PreparedImage, prepareImages } from "./images";
import { resolveModel } from "./model";
import { ChatCompletionRequest } from "./schemas";
import { startStream } from "./stream-start";
import { readJsonBody, validate } from "./task-input";

export async function serveChatCompletion(c: Context<AppEnv>): Promise<Response> {
  const body = validate(ChatCompletionRequest, await readJsonBody(c));
  const { model, variant } = resolveModel(body.model);
  const prompt = chatPrompt(variant, body.messages);
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
  // The node's own bytes (see the module header), relayed as EDGE_RELAY says.
  const ownBytes = body.stream === true && n === 1 && includeUsage;
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
  if (body.stream) return serveStream(c, plan, options, images, quality, ownBytes);
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

/** Streams an answer to the client: the node's own bytes (natively or by a JS loop), or its events framed here. */
function relayAnswer(
  c: Context<AppEnv>,
  ans: Answer | BytesAnswer,
  options: ChatCompletionOptions,
  report: Reporter,
  into?: Identity,
): { body: ReadableStream<Uint8Array>; relay: "native" | "js" } {
  const signal = c.req.raw.signal;
  if ("bytes" in ans) {
    const relay = c.get("config").stream.relay;
    const body = (relay === "native" ? relayNative : relayBytes)(ans.bytes.head, ans.bytes.body, {
      signal,
      into,
      onEnd: (outcome, usage) => {
        ans.release();
        report(outcome === "complete", usage ?? undefined);
      },
    });
    return { body, relay };
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

/** A streaming chat answer (its response starts when a node takes the request: ./stream-start.ts). */
function serveStream(
  c: Context<AppEnv>,
  plan: AnswerPlan,
  options: ChatCompletionOptions,
  images: PreparedImage[],
  quality: ImageQuality,
  ownBytes: boolean,
): Promise<Response> {
  const { keepAliveMs, relay } = c.get("config").stream;
  return startStream<Answer | BytesAnswer>(c, {
    answer: (onAccepted) =>
      ownBytes ? answerOutput(c, plan, chatOutputField(options, keepAliveMs), onAccepted) : answer(c, plan, onAccepted),
    relay: (ans, report, into) => {
      const relay = relayAnswer(c, ans, options, report, into);
      return { body: relay.body, headers: { "x-relay": relay.relay } };
    },
    fail: sseErrorFrame,
    images,
    headers: imageQualityHeaders(quality, images),
    // The relay asked for; a node that did not honour `output` is relayed in JavaScript all the same.
    earlyHeaders: { "x-relay": ownBytes ? relay : "js" },
  });
}
