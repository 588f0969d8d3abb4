/**
 * Where an answer comes from: the result cache, an identical request already in flight, or the GPU.
 *
 *   non-deterministic (temperature > 0 without a seed),
 *   or no result store configured                        → the GPU, nothing shared or kept   (result=off)
 *   `Cache-Control: no-cache` / `no-store`              → the GPU; kept unless no-store     (result=bypass)
 *   deterministic                                        → joinOrStart(key):
 *        a stored answer (KV)                            → replayed                          (result=hit)
 *        an identical request in flight in this isolate  → its events, live                  (result=coalesced)
 *        neither                                         → the GPU, then stored              (result=miss)
 *
 * Every path hands back a node event stream, so the routes frame all of them the same way.
 */
import type { Context } from "hono";
import { Flight, joinOrStart } from "../cache/flights";
import type { CachePolicy } from "../cache/policy";
import { compactEvents, getResult, isDeterministic, putResult, replayEvents, resultKey } from "../cache/results";
import type { AppEnv, Env } from "../env";
import type { UsageOutcome } from "../middleware/api-key";
import { waitUntil } from "../middleware/rate-limit";
import { getPoolRouter } from "../pool/router";
import type { ModelVariant, NodeEvent, OpenAIChatOutputInput, Segment } from "../protocol/index";
import { type Accepted, type GenerateSampling, generate, generateOutput, samplingFor } from "./generate";
import { imageCacheDetail, imageServerTiming, type PreparedImage } from "./images";
import type { NodeBytes } from "./node-client";

export type ResultCacheStatus = "hit" | "coalesced" | "miss" | "bypass" | "off";

export interface AnswerPlan {
  variant: ModelVariant;
  prompts: Segment[][];
  images: PreparedImage[];
  sampling: GenerateSampling;
  policy: CachePolicy;
  /** The client's signal: it going away stops the GPU work once no other request shares it. */
  signal: AbortSignal;
}

export interface Answer {
  events: ReadableStream<NodeEvent>;
  engine: string;
  queueMs: number;
  /** `x-cache: HIT`: this request started no GPU work (a stored answer, or one shared with an identical request). */
  hit: boolean;
  result: ResultCacheStatus;
  /** Time spent looking up the result cache (or waiting on an identical request's lookup). */
  lookupMs?: number;
  /** Call when the events are finished with. */
  release: () => void;
}

/** `engine@version` of the live nodes serving the variant (part of the result key); null when none. */
async function engineTag(env: Env, variant: ModelVariant): Promise<string | null> {
  try {
    const nodes = await getPoolRouter(env).nodes();
    const tags = [...new Set(nodes.filter((n) => n.variant === variant && !n.draining).map((n) => `${n.engine}@${n.version}`))].sort();
    return tags.length ? tags.join(",") : null;
  } catch {
    return null;
  }
}

async function tensorsOf(images: PreparedImage[]) {
  return Promise.all(images.map(async (i) => ({ tensor: await i.tensor(), sha256: i.sha256 })));
}

/** The GPU, straight through (no recording). */
async function live(
  c: Context<AppEnv>,
  plan: AnswerPlan,
  result: "off" | "bypass" | "miss",
  onAccepted?: (accepted: AcceptedAnswer) => void,
): Promise<Answer> {
  const generation = await generate(
    c,
    { ...plan, images: await tensorsOf(plan.images), signal: plan.signal },
    acceptedAs(onAccepted, result),
  );
  return {
    events: generation.stream.events,
    engine: generation.stream.engine,
    queueMs: generation.queueMs,
    hit: false,
    result,
    release: generation.release,
  };
}

/** The GPU, recorded: a flight whose events can be shared and stored. */
async function startFlight(
  c: Context<AppEnv>,
  plan: AnswerPlan,
  signal: AbortSignal,
  onAccepted?: (accepted: Accepted) => void,
): Promise<Flight> {
  const generation = await generate(c, { ...plan, images: await tensorsOf(plan.images), signal }, onAccepted);
  const flight = new Flight(generation.stream.events, plan.prompts.length, generation.stream.engine, generation.queueMs);
  signal.addEventListener("abort", () => flight.cancel(signal.reason), { once: true });
  flight.finished.finally(generation.release);
  return flight;
}

function storeWhenComplete(c: Context<AppEnv>, key: string, flight: Flight): Promise<unknown> {
  const ttl = c.get("config").cache.resultTtlS;
  const stored = flight.finished.then((outcome) =>
    outcome === "complete"
      ? putResult(
          c.env.RESULT_CACHE,
          key,
          { v: 1, engine: flight.engine, created_at: new Date().toISOString(), events: compactEvents(flight.events) },
          ttl,
        )
      : undefined,
  );
  waitUntil(c, stored);
  return stored.catch(() => {});
}

/** "off" / "bypass" when the answer is neither shared nor stored (straight from the GPU), else null. */
function unsharedStatus(c: Context<AppEnv>, plan: AnswerPlan): "off" | "bypass" | null {
  if (!isDeterministic(samplingFor(plan.sampling))) return "off";
  // No result store configured (RESULT_CACHE unbound, or a TTL of 0): no result layer, and no coalescing either.
  if (!c.env.RESULT_CACHE || c.get("config").cache.resultTtlS <= 0) return "off";
  if (!plan.policy.read && !plan.policy.write) return "bypass";
  return null;
}

/** An answer the node wrote as the client's bytes (see `answerOutput`). */
export interface BytesAnswer extends Omit<Answer, "events"> {
  bytes: NodeBytes;
}

/** A node took the request of an answer this request started (see `answer`'s `onAccepted`). */
export interface AcceptedAnswer extends Accepted {
  result: "off" | "bypass" | "miss";
}

/** The dispatch's `onAccepted`, telling the route which result-cache path the answer took. */
function acceptedAs(onAccepted: ((a: AcceptedAnswer) => void) | undefined, result: AcceptedAnswer["result"]) {
  return onAccepted && ((a: Accepted) => onAccepted({ ...a, result }));
}

/**
 * `answer`, except that an answer that is neither shared nor stored (`result=off` or `bypass`) is asked
 * of the node as the client's own bytes (the frame's `output`), for the native relay. An answer that
 * goes through the result cache or coalescing takes `answer`'s path unchanged, as does one from a node
 * that did not honour `output`: both come back as events. `onAccepted` is called (for an unshared answer)
 * when the first node takes the request, before its first output.
 */
export async function answerOutput(
  c: Context<AppEnv>,
  plan: AnswerPlan,
  output: OpenAIChatOutputInput,
  onAccepted?: (accepted: AcceptedAnswer) => void,
): Promise<Answer | BytesAnswer> {
  await c.get("admitted")?.();
  const result = unsharedStatus(c, plan);
  if (!result) return answer(c, plan, onAccepted);
  const generation = await generateOutput(
    c,
    { ...plan, images: await tensorsOf(plan.images), signal: plan.signal },
    output,
    acceptedAs(onAccepted, result),
  );
  const { output: out } = generation;
  const common = { engine: out.engine, queueMs: generation.queueMs, hit: false, result, release: generation.release };
  return out.kind === "bytes" ? { ...common, bytes: out } : { ...common, events: out.events };
}

/**
 * Where the answer comes from (see the module header). `onAccepted` is called when a node takes the
 * request of GPU work this request started (not for a stored or coalesced answer), before its first
 * event: a streaming route may start its response then.
 */
export async function answer(c: Context<AppEnv>, plan: AnswerPlan, onAccepted?: (accepted: AcceptedAnswer) => void): Promise<Answer> {
  // The rate limiter's decision has travelled while the images were looked up; nothing is answered without it.
  await c.get("admitted")?.();
  const sampling = samplingFor(plan.sampling);
  const unshared = unsharedStatus(c, plan);
  if (unshared) return live(c, plan, unshared, onAccepted);
  const engines = await engineTag(c.env, plan.variant);
  if (!engines) return live(c, plan, "miss", onAccepted); // no live node: the dispatch answers 503
  const key = await resultKey({
    variant: plan.variant,
    engines,
    prompts: plan.prompts,
    tensors: plan.images.map((i) => i.sha256),
    sampling,
  });

  if (!plan.policy.read) {
    // no-cache: a fresh answer of its own (not shared with requests that may read the cache), stored.
    const controller = new AbortController();
    plan.signal.addEventListener("abort", () => controller.abort(plan.signal.reason), { once: true });
    const flight = await startFlight(c, plan, controller.signal, acceptedAs(onAccepted, "bypass"));
    storeWhenComplete(c, key, flight);
    return {
      events: flight.subscribe(() => controller.abort(new Error("client went away"))),
      engine: flight.engine,
      queueMs: flight.queueMs,
      hit: false,
      result: "bypass",
      release: () => {},
    };
  }

  const asked = performance.now();
  const joined = await joinOrStart(key, plan.signal, async (signal) => {
    const stored = await getResult(c.env.RESULT_CACHE, key).catch(() => null);
    if (stored) return { kind: "stored", result: stored };
    const flight = await startFlight(c, plan, signal, acceptedAs(onAccepted, "miss"));
    return { kind: "flight", flight, stored: storeWhenComplete(c, key, flight) };
  });
  const { shared } = joined;
  if (shared.kind === "stored") {
    joined.leave();
    return {
      events: replayEvents(shared.result.events),
      engine: shared.result.engine,
      queueMs: 0,
      hit: true,
      result: "hit",
      lookupMs: performance.now() - asked,
      release: () => {},
    };
  }
  return {
    events: shared.flight.subscribe(joined.leave),
    engine: shared.flight.engine,
    queueMs: joined.leader ? shared.flight.queueMs : 0,
    hit: !joined.leader,
    result: joined.leader ? "miss" : "coalesced",
    release: () => {},
  };
}

/** The headers every answer carries: engine, request id, the cache verdicts and the timings. */
export function answerHeaders(c: Context<AppEnv>, ans: Omit<Answer, "events">, images: PreparedImage[]): Record<string, string> {
  return {
    "x-engine": ans.engine,
    "x-request-id": c.get("requestId"),
    "x-cache": ans.hit ? "HIT" : "MISS",
    "x-cache-detail": [`result=${ans.result}`, ...imageCacheDetail(images)].join("; "),
    "server-timing": [
      ...imageServerTiming(images),
      ...(ans.lookupMs !== undefined ? [`result;dur=${ans.lookupMs.toFixed(1)}`] : []),
      `queue;dur=${ans.queueMs.toFixed(1)}`,
    ].join(", "),
  };
}

/**
 * Hands the rate-limit middleware what this request used, once its answer has ended (at once for JSON,
 * at the end of the stream for SSE). Returns the function to call then.
 */
export function usageReporter(
  c: Context<AppEnv>,
  images: number,
  cached: boolean,
): (ok: boolean, usage?: { prompt_tokens: number; completion_tokens: number }) => void {
  let settle: (u: UsageOutcome) => void = () => {};
  c.set(
    "usage",
    new Promise<UsageOutcome>((r) => {
      settle = r;
    }),
  );
  return (ok, usage) =>
    settle({ ok, images, cached, promptTokens: usage?.prompt_tokens ?? 0, completionTokens: usage?.completion_tokens ?? 0 });
}
