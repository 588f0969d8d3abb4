/**
 * One generation on the pool: builds the protocol header, picks a node (retrying elsewhere when a
 * node fails before its first event, optionally hedging), and hands back the node's event stream.
 */
import type { Context } from "hono";
import type { ResultSampling } from "../cache/results";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import type { CallerLocation } from "../pool/region";
import { getPoolRouter } from "../pool/router";
import {
  describeTensors,
  type GenerateHeaderInput,
  type ModelVariant,
  type OpenAIChatOutputInput,
  PROTOCOL_VERSION,
  type Segment,
} from "../protocol/index";
import { NodeCallError, type NodeOutput, type NodeStream, type OpenStreamOptions, openNodeOutput, openNodeStream } from "./node-client";

export interface GenerateSampling {
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  stop?: string | string[];
  seed?: number;
  logprobs?: number;
}

/** A tensor ready to send: its bytes and their sha256. */
export interface TensorInput {
  tensor: Uint8Array;
  sha256: string;
}

export interface GenerateOptions {
  variant: ModelVariant;
  prompts: Segment[][];
  images: TensorInput[];
  sampling: GenerateSampling;
  /** Aborted when the client goes away: cancels the node request. */
  signal: AbortSignal;
}

export interface Generation {
  stream: NodeStream;
  /** Must be called when the stream is finished with (the router counts in-flight work per node). */
  release: () => void;
  queueMs: number;
}

const DEFAULT_MAX_TOKENS = 256;

/** The sampling parameters the node gets, defaults filled in (the result cache keys on exactly these). */
export function samplingFor(sampling: GenerateSampling): ResultSampling {
  return {
    max_tokens: sampling.max_tokens ?? DEFAULT_MAX_TOKENS,
    temperature: sampling.temperature ?? 0,
    top_p: sampling.top_p ?? 1,
    top_k: 0,
    repetition_penalty: 1,
    stop: sampling.stop === undefined ? [] : Array.isArray(sampling.stop) ? sampling.stop : [sampling.stop],
    ...(sampling.seed !== undefined ? { seed: sampling.seed } : {}),
    ...(sampling.logprobs !== undefined ? { logprobs: sampling.logprobs } : {}),
  };
}

/** `onAccepted`: called once, when the first node takes the request (its 200), before its first event. */
export async function generate(
  c: Context<AppEnv>,
  options: GenerateOptions,
  onAccepted?: (accepted: Accepted) => void,
): Promise<Generation> {
  const routed = await dispatch(c, options, undefined, openNodeStream, (s) => s.events.cancel().catch(() => {}), onAccepted);
  return { stream: routed.value, release: routed.release, queueMs: routed.queueMs };
}

/** A node took the request (its 200), before its first output: what the response can say already. */
export interface Accepted {
  engine: string;
  /** From the dispatch's start to the node's 200 (ms). */
  queueMs: number;
}

export interface OutputGeneration {
  /** The client's bytes (the node honoured `output`), or events (a node that did not). */
  output: NodeOutput;
  release: () => void;
  queueMs: number;
}

/**
 * Like generate, with the frame's `output` set: the node writes the client's bytes itself, and the
 * dispatch (retries, hedging) settles on the node's first output (`openNodeOutput`).
 */
export async function generateOutput(
  c: Context<AppEnv>,
  options: GenerateOptions,
  output: OpenAIChatOutputInput,
  onAccepted?: (accepted: Accepted) => void,
): Promise<OutputGeneration> {
  const routed = await dispatch(
    c,
    options,
    output,
    openNodeOutput,
    (o) => (o.kind === "bytes" ? o.body : o.events).cancel().catch(() => {}),
    onAccepted,
  );
  return { output: routed.value, release: routed.release, queueMs: routed.queueMs };
}

async function dispatch<T>(
  c: Context<AppEnv>,
  options: GenerateOptions,
  output: OpenAIChatOutputInput | undefined,
  open: (o: OpenStreamOptions) => Promise<T>,
  discard: (value: T) => void,
  onAccepted?: (accepted: Accepted) => void,
): Promise<{ value: T; release: () => void; queueMs: number }> {
  const secret = c.env.NODE_SECRET;
  if (!secret) throw new ApiError("no_capacity", "No model servers are configured.", { retryAfter: 30 });
  const header: GenerateHeaderInput = {
    version: PROTOCOL_VERSION,
    request_id: c.get("requestId"),
    variant: options.variant,
    prompts: options.prompts,
    images: await describeTensors(options.images.map((i) => ({ dtype: "f16" as const, bytes: i.tensor, sha256: i.sha256 }))),
    sampling: samplingFor(options.sampling),
    ...(output ? { output } : {}),
  };
  const tensors = options.images.map((i) => i.tensor);
  const started = performance.now();
  let accepted = false;
  const accept = onAccepted
    ? (engine: string) => {
        if (accepted) return; // the first node to take it (a hedge or a retry may take it later)
        accepted = true;
        onAccepted({ engine, queueMs: performance.now() - started });
      }
    : undefined;
  try {
    const routed = await getPoolRouter(c.env).dispatch({
      variant: options.variant,
      region: c.req.raw.cf as CallerLocation | undefined,
      signal: options.signal,
      hedgeAfterMs: c.get("config").pool.hedgeAfterMs,
      attempt: (node, signal) => open({ node, secret, header, tensors, signal, onAccepted: accept }),
      discard,
    });
    return { value: routed.value, release: routed.release, queueMs: performance.now() - started };
  } catch (err) {
    if (err instanceof NodeCallError) {
      throw new ApiError("node_error", "The model server could not process the request.", { cause: err });
    }
    throw err;
  }
}
