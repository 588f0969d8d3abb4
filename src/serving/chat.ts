/**
 * POST /v1/chat/completions: OpenAI's shape, so the official client works unchanged. Images come as
 * `image_url` parts (https URL or data URI); `n` > 1 samples the same prompt n times in one node request
 * (one vision pass).
 */
import type { Context } from "hono";
import type { AppEnv } from "../env";
import { chatPrompt } from "../prompt/index";
import { chatCompletionId, collectChatCompletion, relayChatCompletion, sseResponse } from "../stream/index";
import { generate } from "./generate";
import { imageServerTiming, prepareImages } from "./images";
import { resolveModel } from "./model";
import { ChatCompletionRequest } from "./schemas";
import { readJsonBody, validate } from "./task-input";

export async function serveChatCompletion(c: Context<AppEnv>): Promise<Response> {
  const body = validate(ChatCompletionRequest, await readJsonBody(c));
  const { model, variant } = resolveModel(body.model);
  const prompt = chatPrompt(variant, body.messages);
  const config = c.get("config");
  const signal = c.req.raw.signal;
  const images = await prepareImages(
    prompt.images.map((i) => ({ url: i.url })),
    config,
    { signal },
  );
  const n = body.n ?? 1;
  const generation = await generate(c, {
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
    signal,
  });
  const options = {
    id: chatCompletionId(),
    created: Math.floor(Date.now() / 1000),
    model,
    choices: n,
    includeUsage: body.stream_options?.include_usage ?? false,
    logprobs: body.logprobs ?? false,
    promptTokens: n > 1 ? ("once" as const) : ("sum" as const),
  };
  const headers = {
    "x-engine": generation.stream.engine,
    "x-request-id": c.get("requestId"),
    "server-timing": [...imageServerTiming(images), `queue;dur=${generation.queueMs.toFixed(1)}`].join(", "),
  };
  if (body.stream) {
    const stream = relayChatCompletion(generation.stream.events, options, {
      keepAliveMs: config.stream.keepAliveMs,
      signal,
      onEnd: generation.release,
    });
    return sseResponse(stream, { headers });
  }
  try {
    const collected = await collectChatCompletion(generation.stream.events, options);
    if (!collected.ok) throw collected.error;
    return c.json(collected.completion, 200, headers);
  } finally {
    generation.release();
  }
}
