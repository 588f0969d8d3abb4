/**
 * When a streaming answer's response starts: as soon as a node has taken the request (its 200), not at its
 * first event. The status and headers go out while the GPU works, `: keep-alive` comments follow every
 * `SSE_KEEP_ALIVE_MS` (so a client, or a proxy in between, sees the answer alive through a long queue or
 * prefill), then the relay writes the answer into the same stream. It also takes ≈ 0.45 ms off the last
 * hop to the first token (docs/benchmarks.md, "Time to first token, hop by hop").
 *
 * Retries and hedging before the first token still happen: nothing but keep-alives has reached the client.
 * What changes: when every node fails after one took the request, the stream ends with the route's error
 * event (`fail`) instead of a 5xx status. A request no node takes (none free, all refusing) is still
 * answered with its status (503 no_capacity, …); a stored or shared answer starts once it is ready.
 */
import type { Context } from "hono";
import type { AppEnv } from "../env";
import { type ApiError, toApiError } from "../errors";
import { type Identity, identityStream, KEEP_ALIVE_COMMENT, sseResponse } from "../stream/index";
import { type AcceptedAnswer, type Answer, answerHeaders, usageReporter } from "./answer";
import type { PreparedImage } from "./images";

type Reporter = ReturnType<typeof usageReporter>;

export interface StreamStart<A extends Omit<Answer, "events">> {
  /** Starts the answer; `onAccepted` is called when a node takes its request (GPU work this request started). */
  answer: (onAccepted: (accepted: AcceptedAnswer) => void) => Promise<A>;
  /** Starts relaying an answer into `into` (or a stream of its own); its body and the headers it adds. */
  relay: (ans: A, report: Reporter, into?: Identity) => { body: ReadableStream<Uint8Array>; headers?: Record<string, string> };
  /** The closing text of a stream whose answer failed after the response started (the route's error event). */
  fail: (error: ApiError) => string;
  images: PreparedImage[];
  /** Headers every response of the route carries (image quality, …). */
  headers: Record<string, string>;
  /** Headers a response started early carries in place of the relay's own. */
  earlyHeaders?: Record<string, string>;
}

export async function startStream<A extends Omit<Answer, "events">>(c: Context<AppEnv>, s: StreamStart<A>): Promise<Response> {
  let accept: (a: AcceptedAnswer) => void = () => {};
  const accepted = new Promise<{ accepted: AcceptedAnswer }>((resolve) => {
    accept = (a) => resolve({ accepted: a });
  });
  const pending = s.answer(accept);
  const first = await Promise.race([pending, accepted]);
  if (!("accepted" in first)) {
    const relay = s.relay(first, usageReporter(c, s.images.length, first.hit));
    return sseResponse(relay.body, { headers: { ...answerHeaders(c, first, s.images), ...s.headers, ...relay.headers } });
  }
  const { engine, queueMs, result } = first.accepted;
  const headers = {
    ...answerHeaders(c, { engine, queueMs, hit: false, result, release: () => {} }, s.images),
    ...s.headers,
    ...s.earlyHeaders,
  };
  const into = identityStream();
  const report = usageReporter(c, s.images.length, false);
  void relayWhenAnswered(c, s, pending, report, into);
  return sseResponse(into.readable, { headers });
}

/** After an early start: keep-alives until the answer is there, then its relay; its failure as the route's error event. */
async function relayWhenAnswered<A extends Omit<Answer, "events">>(
  c: Context<AppEnv>,
  s: StreamStart<A>,
  pending: Promise<A>,
  report: Reporter,
  into: Identity,
): Promise<void> {
  const keepAliveMs = c.get("config").stream.keepAliveMs;
  const writer = into.writable.getWriter();
  const encoder = new TextEncoder();
  let writes: Promise<unknown> = Promise.resolve();
  const timer =
    keepAliveMs > 0
      ? setInterval(() => {
          writes = writes.then(() => writer.write(encoder.encode(KEEP_ALIVE_COMMENT))).catch(() => {});
        }, keepAliveMs)
      : undefined;
  let ans: A;
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
      await writer.write(encoder.encode(s.fail(error)));
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
  s.relay(ans, report, into);
}
