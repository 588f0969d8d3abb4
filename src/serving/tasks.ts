/**
 * Captions, VQA and grounding: one image, one prompt, an answer streamed as named SSE events or
 * returned as JSON (src/stream/task.ts describes both shapes), through the caches (./answer.ts).
 */
import type { Context } from "hono";
import { requestCachePolicy } from "../cache/policy";
import type { AppEnv } from "../env";
import { captionPrompt, groundingPrompt, type TaskPrompt, vqaPrompt } from "../prompt/index";
import { collectTask, relaySse, sseEvent, type Task, TaskFramer } from "../stream/index";
import { type Answer, answer, answerHeaders, usageReporter } from "./answer";
import { imageContext, imageQuality, imageQualityHeaders, prepareImage } from "./images";
import { resolveModel } from "./model";
import { CaptionRequest, GroundingRequest, VqaRequest } from "./schemas";
import { startStream } from "./stream-start";
import { readTaskInput } from "./task-input";

const SCHEMAS = { caption: CaptionRequest, vqa: VqaRequest, grounding: GroundingRequest } as const;

export async function serveTask(c: Context<AppEnv>, task: Task): Promise<Response> {
  const input = await readTaskInput(c, SCHEMAS[task]);
  const body = input.body as CaptionRequest & Partial<VqaRequest> & Partial<GroundingRequest>;
  const { model, variant } = resolveModel(body.model);
  const config = c.get("config");
  const signal = c.req.raw.signal;
  const policy = requestCachePolicy(c.req.raw.headers);
  const quality = imageQuality(c, body.quality);
  const image = await prepareImage(input.image, imageContext(c, policy), body.orientation ?? "apply", quality);

  let prompt: TaskPrompt;
  let grounding: ReturnType<typeof groundingPrompt>["grounding"] | undefined;
  if (task === "caption") prompt = captionPrompt(variant, { language: body.language });
  else if (task === "vqa") prompt = vqaPrompt(variant, { question: body.question ?? "" });
  else {
    const g = groundingPrompt(variant, { expression: body.expression ?? "" });
    prompt = g;
    grounding = g.grounding;
  }

  const plan = {
    variant,
    prompts: [prompt.segments],
    images: [image],
    sampling: { ...body, max_tokens: body.max_completion_tokens ?? body.max_tokens },
    policy,
    signal,
  };
  const options = {
    task,
    image: { width: image.width, height: image.height },
    ...(grounding ? { grounding } : {}),
    meta: { id: `${task}-${c.get("requestId")}`, model, image: { width: image.width, height: image.height, quality } },
  };
  if (body.stream) {
    // The response starts when a node takes the request (./stream-start.ts).
    return startStream<Answer>(c, {
      answer: (onAccepted) => answer(c, plan, onAccepted),
      relay: (ans, report, into) => {
        const framer = new TaskFramer(options);
        const stream = relaySse(ans.events, framer, {
          keepAliveMs: config.stream.keepAliveMs,
          signal,
          into,
          onEnd: (outcome) => {
            ans.release();
            report(outcome === "complete", framer.state.result?.usage);
          },
        });
        return { body: stream };
      },
      fail: (error) => sseEvent("error", error.toJSON()),
      images: [image],
      headers: imageQualityHeaders(quality, [image]),
    });
  }
  const ans = await answer(c, plan);
  const report = usageReporter(c, 1, ans.hit);
  const headers = { ...answerHeaders(c, ans, [image]), ...imageQualityHeaders(quality, [image]) };
  try {
    const collected = await collectTask(ans.events, options);
    report(collected.ok, collected.ok ? collected.result.usage : undefined);
    if (!collected.ok) throw collected.error;
    return c.json(collected.result, 200, headers);
  } finally {
    ans.release();
  }
}
