/**
 * A Worker for `npm run bench:gateway`'s breakdown: the edge's stream path taken apart, to see where
 * the CPU per relayed token goes. `POST /?variant=…` (the body is read and ignored) sends the same frame
 * to the node at NODE_URL as the edge would, and answers with
 *   - `pass`:       the node's bytes untouched (the floor: one hop through workerd, no JavaScript per chunk);
 *   - `raw-loop`:   a JavaScript loop reads each chunk of the node's body and writes it on unchanged (the floor
 *                   once JavaScript touches every chunk: no parsing, no framing);
 *   - `stream`:     the edge's stream path without the routes: `openNodeStream` (the node's SSE through
 *                   `decodeEventStream`: TextDecoderStream → EventSourceParserStream → a validating
 *                   TransformStream, then the first-event wrapper) → `relayChatCompletion`;
 *   - `one-stage`:  the same parsing and validation in a single reader-driven ReadableStream (no pipe
 *                   chain) → `relayChatCompletion`: what a one-stage decoder would cost.
 */
import { chatPrompt } from "../../src/prompt/index";
import { encodeFrame, type GenerateHeaderInput, NodeEvent, PROTOCOL_VERSION } from "../../src/protocol/index";
import { openNodeStream } from "../../src/serving/node-client";
import { chatCompletionId, relayChatCompletion, sseResponse } from "../../src/stream/index";

interface VariantEnv {
  NODE_URL: string;
  NODE_SECRET: string;
  MESSAGES: string;
  MAX_TOKENS: string;
  TEMPERATURE: string;
}

function header(env: VariantEnv): GenerateHeaderInput {
  return {
    version: PROTOCOL_VERSION,
    request_id: crypto.randomUUID(),
    variant: "qwen-vl-chat",
    prompts: [chatPrompt("qwen-vl-chat", JSON.parse(env.MESSAGES)).segments],
    images: [],
    sampling: { max_tokens: Number(env.MAX_TOKENS), temperature: Number(env.TEMPERATURE), top_p: 1, stop: [] },
  };
}

async function nodeFetch(env: VariantEnv, signal: AbortSignal): Promise<Response> {
  const res = await fetch(new URL("/v1/generate", env.NODE_URL), {
    method: "POST",
    headers: { authorization: `Bearer ${env.NODE_SECRET}`, "content-type": "application/octet-stream", accept: "text/event-stream" },
    body: encodeFrame(header(env), []) as Uint8Array<ArrayBuffer>,
    signal,
  });
  if (res.status !== 200 || !res.body) throw new Error(`node answered ${res.status}`);
  return res;
}

interface Identity {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}

/** workerd's native pass-through stream (what the relay writes into). */
function identityStream(): Identity {
  const Native = (globalThis as { IdentityTransformStream?: new () => Identity }).IdentityTransformStream;
  return Native ? new Native() : (new TransformStream<Uint8Array, Uint8Array>() as Identity);
}

/** `decodeEventStream`'s parsing and validation as one stage: bytes are read and split where they are consumed. */
export function decodeEventStreamOneStage(body: ReadableStream<Uint8Array>): ReadableStream<NodeEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const parse = (message: string): NodeEvent => {
    let event = "message";
    const data: string[] = [];
    for (const line of message.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
    }
    let value: unknown;
    try {
      value = JSON.parse(data.join("\n"));
    } catch {
      value = undefined;
    }
    const parsed = NodeEvent.safeParse({ ...(typeof value === "object" && value !== null ? value : {}), type: event });
    return parsed.success
      ? parsed.data
      : { type: "error", code: "internal_error", message: `malformed ${event} event from the node`, retryable: true };
  };
  return new ReadableStream<NodeEvent>(
    {
      async pull(controller) {
        for (;;) {
          buffer = buffer.replaceAll("\r\n", "\n");
          let produced = false;
          for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
            const message = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            if (message.split("\n").some((l) => l.startsWith("data:"))) {
              controller.enqueue(parse(message));
              produced = true;
            }
          }
          if (produced) return;
          const next = await reader.read();
          if (next.done) {
            controller.close();
            return;
          }
          buffer += decoder.decode(next.value, { stream: true });
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

export default {
  async fetch(request: Request, env: VariantEnv): Promise<Response> {
    await request.arrayBuffer();
    const variant = new URL(request.url).searchParams.get("variant");
    const options = {
      id: chatCompletionId(),
      created: Math.floor(Date.now() / 1000),
      model: "qwen-vl-chat",
      choices: 1,
      includeUsage: true,
    };
    const relay = { keepAliveMs: 10_000, signal: request.signal };
    switch (variant) {
      case "pass": {
        const res = await nodeFetch(env, request.signal);
        return new Response(res.body, { headers: { "content-type": "text/event-stream; charset=utf-8" } });
      }
      case "raw-loop": {
        const res = await nodeFetch(env, request.signal);
        const { readable, writable } = identityStream();
        void (async () => {
          const reader = res.body!.getReader();
          const writer = writable.getWriter();
          try {
            for (let r = await reader.read(); !r.done; r = await reader.read()) await writer.write(r.value);
            await writer.close();
          } catch (err) {
            await writer.abort(err).catch(() => {});
          }
        })();
        return new Response(readable, { headers: { "content-type": "text/event-stream; charset=utf-8" } });
      }
      case "stream": {
        const node = { id: "bench-node", url: env.NODE_URL };
        const s = await openNodeStream({ node, secret: env.NODE_SECRET, header: header(env), tensors: [], signal: request.signal });
        return sseResponse(relayChatCompletion(s.events, options, relay));
      }
      case "one-stage": {
        const res = await nodeFetch(env, request.signal);
        return sseResponse(relayChatCompletion(decodeEventStreamOneStage(res.body!), options, relay));
      }
      default:
        return new Response("unknown variant", { status: 400 });
    }
  },
};
