/**
 * POST /v1/chat/completions: OpenAI's shape, so the official client works unchanged. Images come as
 * `image_url` parts (https URL or data URI); `n` > 1 samples the same prompt n times in one node request
 * (one vision pass). `quality` (`exact` | `fast`, not an OpenAI field) chooses the preprocessing of every
 * image; unset, the key's default. Answers go through the caches (./answer.ts).
 */
import type { Context } from "hono";
import { requestCachePolicy } from "../cache/policy";
import type { AppEnv } from "../env";
import { chatPrompt } from "../prompt/index";
import { ChatCompletionFramer, chatCompletionId, collectChatCompletion, relaySse, sseResponse } from "../stream/index";
import { answer, answerHeaders, usageReporter } from "./answer";
import { imageContext, imageQuality, imageQualityHeaders, prepareImages } from "./images";
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
  const ans = await answer(c, {
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
  });
  const report = usageReporter(c, images.length, ans.hit);
  const options = {
    id: chatCompletionId(),
    created: Math.floor(Date.now() / 1000),
    model,
    choices: n,
    includeUsage: body.stream_options?.include_usage ?? false,
    logprobs: body.logprobs ?? false,
    promptTokens: n > 1 ? ("once" as const) : ("sum" as const),
  };
  const headers = { ...answerHeaders(c, ans, images), ...imageQualityHeaders(quality, images) };
  if (body.stream) {
    const framer = new ChatCompletionFramer(options);
    const stream = relaySse(ans.events, framer, {
      keepAliveMs: config.stream.keepAliveMs,
      signal,
      onEnd: (outcome) => {
        ans.release();
        report(outcome === "complete", framer.state.usage());
      },
    });
    return sseResponse(stream, { headers });
  }
  try {
    const collected = await collectChatCompletion(ans.events, options);
    report(collected.ok, collected.ok ? collected.completion.usage : undefined);
    if (!collected.ok) throw collected.error;
    return c.json(collected.completion, 200, headers);
  } finally {
    ans.release();
  }
}
