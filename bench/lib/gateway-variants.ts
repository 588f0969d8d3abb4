/**
 * A Worker for `npm run bench:gateway`'s breakdown: the edge's stream path taken apart, to see where
 * the CPU per relayed token goes. `POST /?variant=…[&node=unpaced]` (the body is read and ignored) sends the
 * same frame to the node at NODE_URL (or, with `node=unpaced`, NODE_URL_UNPACED: a node with output pacing
 * off) as the edge would, and answers with
 *   - `pass`:       the node's bytes untouched (the floor: one hop through workerd, no JavaScript per chunk);
 *   - `pass-output`: the same with the frame's `output` (the node writes the OpenAI chunks the edge's native relay
 *                   sends): the bytes the edge relays, passed through untouched;
 *   - `raw-loop`:   a JavaScript loop reads each chunk of the node's body and writes it on unchanged (the floor
 *                   once JavaScript touches every chunk: no parsing, no framing);
 *   - `stream`:     the edge's stream path without the routes: `openNodeStream` (the node's SSE through the
 *                   one-stage `openEventStream`: bytes → text → eventsource-parser → zod, the first event
 *                   peeked) → `relayChatCompletion`.
 *   - `first-output`: the native relay's path without the routes: the frame asks the node for the client's bytes
 *                   (`output`); the response starts when the node takes the request; `openNodeOutput` reads in
 *                   JavaScript up to the first output (what retry before the first token needs), `relayNative`
 *                   writes that into the response and pipes the rest natively.
 */
import { chatPrompt } from "../../src/prompt/index";
import { encodeFrame, type GenerateHeaderInput, PROTOCOL_VERSION } from "../../src/protocol/index";
import { openNodeOutput, openNodeStream } from "../../src/serving/node-client";
import { chatCompletionId, relayChatCompletion, relayNative, sseResponse } from "../../src/stream/index";
import { BENCH_OUTPUT } from "./chat-request";

interface VariantEnv {
  NODE_URL: string;
  NODE_URL_UNPACED: string;
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

async function nodeFetch(env: VariantEnv, nodeUrl: string, signal: AbortSignal, output = false): Promise<Response> {
  const res = await fetch(new URL("/v1/generate", nodeUrl), {
    method: "POST",
    headers: { authorization: `Bearer ${env.NODE_SECRET}`, "content-type": "application/octet-stream", accept: "text/event-stream" },
    body: encodeFrame(output ? { ...header(env), output: BENCH_OUTPUT } : header(env), []) as Uint8Array<ArrayBuffer>,
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

export default {
  async fetch(request: Request, env: VariantEnv): Promise<Response> {
    await request.arrayBuffer();
    const url = new URL(request.url);
    const variant = url.searchParams.get("variant");
    const nodeUrl = url.searchParams.get("node") === "unpaced" ? env.NODE_URL_UNPACED : env.NODE_URL;
    const options = {
      id: chatCompletionId(),
      created: Math.floor(Date.now() / 1000),
      model: "qwen-vl-chat",
      choices: 1,
      includeUsage: true,
    };
    const relay = { keepAliveMs: 10_000, signal: request.signal };
    switch (variant) {
      case "pass":
      case "pass-output": {
        const res = await nodeFetch(env, nodeUrl, request.signal, variant === "pass-output");
        return new Response(res.body, { headers: { "content-type": "text/event-stream; charset=utf-8" } });
      }
      case "raw-loop": {
        const res = await nodeFetch(env, nodeUrl, request.signal);
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
        const node = { id: "bench-node", url: nodeUrl };
        const s = await openNodeStream({ node, secret: env.NODE_SECRET, header: header(env), tensors: [], signal: request.signal });
        return sseResponse(relayChatCompletion(s.events, options, relay));
      }
      case "first-output": {
        // As the edge does it: the response starts when the node takes the request, the relay writes into it.
        let accept = () => {};
        const accepted = new Promise<void>((resolve) => {
          accept = resolve;
        });
        const opening = openNodeOutput({
          node: { id: "bench-node", url: nodeUrl },
          secret: env.NODE_SECRET,
          header: { ...header(env), output: BENCH_OUTPUT },
          tensors: [],
          signal: request.signal,
          onAccepted: accept,
        });
        await Promise.race([accepted, opening]);
        const into = identityStream();
        void opening.then(
          (opened) => {
            if (opened.kind === "bytes") relayNative(opened.head, opened.body, { signal: request.signal, into });
            else into.writable.abort(new Error("the node did not write the output")).catch(() => {});
          },
          (err: unknown) => into.writable.abort(err).catch(() => {}),
        );
        return sseResponse(into.readable);
      }
      default:
        return new Response("unknown variant", { status: 400 });
    }
  },
};
