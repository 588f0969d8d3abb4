/**
 * Captions, VQA and grounding: one image, one prompt, an answer streamed as named SSE events or
 * returned as JSON (src/stream/task.ts describes both shapes).
 */
import type { Context } from "hono";
import type { AppEnv } from "../env";
import { captionPrompt, groundingPrompt, type TaskPrompt, vqaPrompt } from "../prompt/index";
import { collectTask, relayTask, sseResponse, type Task } from "../stream/index";
import { generate } from "./generate";
import { imageServerTiming, prepareImage } from "./images";
import { resolveModel } from "./model";
import { CaptionRequest, GroundingRequest, VqaRequest } from "./schemas";
import { readTaskInput } from "./task-input";

const SCHEMAS = { caption: CaptionRequest, vqa: VqaRequest, grounding: GroundingRequest } as const;

export async function serveTask(c: Context<AppEnv>, task: Task): Promise<Response> {
  const input = await readTaskInput(c, SCHEMAS[task]);
  const body = input.body as CaptionRequest & Partial<VqaRequest> & Partial<GroundingRequest>;
  const { model, variant } = resolveModel(body.model);
  const config = c.get("config");
  const signal = c.req.raw.signal;
  const image = await prepareImage(input.image, config, { orientation: body.orientation, signal });

  let prompt: TaskPrompt;
  let grounding: ReturnType<typeof groundingPrompt>["grounding"] | undefined;
  if (task === "caption") prompt = captionPrompt(variant, { language: body.language });
  else if (task === "vqa") prompt = vqaPrompt(variant, { question: body.question ?? "" });
  else {
    const g = groundingPrompt(variant, { expression: body.expression ?? "" });
    prompt = g;
    grounding = g.grounding;
  }

  const generation = await generate(c, {
    variant,
    prompts: [prompt.segments],
    images: [image],
    sampling: { ...body, max_tokens: body.max_completion_tokens ?? body.max_tokens },
    signal,
  });
  const options = {
    task,
    image: { width: image.width, height: image.height },
    ...(grounding ? { grounding } : {}),
    meta: { id: `${task}-${c.get("requestId")}`, model, image: { width: image.width, height: image.height } },
  };
  const headers = {
    "x-engine": generation.stream.engine,
    "x-request-id": c.get("requestId"),
    "server-timing": [...imageServerTiming([image]), `queue;dur=${generation.queueMs.toFixed(1)}`].join(", "),
  };
  if (body.stream) {
    const stream = relayTask(generation.stream.events, options, {
      keepAliveMs: config.stream.keepAliveMs,
      signal,
      onEnd: generation.release,
    });
    return sseResponse(stream, { headers });
  }
  try {
    const collected = await collectTask(generation.stream.events, options);
    if (!collected.ok) throw collected.error;
    return c.json(collected.result, 200, headers);
  } finally {
    generation.release();
  }
}
