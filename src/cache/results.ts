/**
 * Answers of deterministic requests in KV (binding `RESULT_CACHE`), with a TTL.
 *
 * A request is deterministic when it samples greedily (temperature 0, the default) or names a seed.
 * Its key is the sha256 of everything the model's output depends on, in a canonical JSON form:
 *
 *   format version · protocol version · model variant · the engines (and versions) of the live nodes
 *   serving it · every prompt as segments (template text, user text, image slots) · the sha256 of every
 *   input tensor (which already folds in the preprocessing version, the orientation mode and the image
 *   quality: a `fast` tensor is other bytes, so another sha256) · the sampling parameters after defaults
 *   (max_tokens, temperature, top_p, top_k, repetition penalty, stop, seed, logprobs)
 *
 * Quality is deliberately not a field of its own: where `fast` changes nothing (PNG, WebP, GIF, a JPEG
 * too small to decode at a reduced DCT scale) both qualities give the same tensor, the model sees the same
 * input, and sharing the answer is right; where it changes the tensor, the keys differ. The in-flight
 * coalescing (./flights.ts) uses this key too.
 *
 * The key is the full input and nothing else: two callers get the same answer only when they sent the
 * same images, the same words and the same parameters to the same model, and then the model would have
 * answered both the same. Nothing in a cached answer is about the caller (ids, times and usage
 * accounting are made per request), so sharing it across keys shows nobody anything they did not send.
 *
 * What is stored is the node's event stream, compacted (one token event and one done event per prompt):
 * a hit replays it through the same framers as a live answer, so streaming and JSON answers, grounding
 * boxes and usage come out in exactly the live shapes.
 */
import type { DoneEvent, NodeEvent, TokenEvent } from "../protocol/events";
import { PROTOCOL_VERSION, type Segment } from "../protocol/index";
import { sha256Hex } from "./source";

export const RESULT_FORMAT = 1;

export interface ResultSampling {
  max_tokens: number;
  temperature: number;
  top_p: number;
  top_k: number;
  repetition_penalty: number;
  stop: string[];
  seed?: number;
  logprobs?: number;
}

export interface ResultKeyInput {
  variant: string;
  /** `engine@version` of the live nodes for the variant, sorted, comma-joined. */
  engines: string;
  prompts: Segment[][];
  /** sha256 of each input tensor, in image-index order. */
  tensors: string[];
  sampling: ResultSampling;
}

export function isDeterministic(sampling: Pick<ResultSampling, "temperature" | "seed">): boolean {
  return sampling.temperature === 0 || sampling.seed !== undefined;
}

/** JSON with object keys sorted, so equal inputs hash equally whatever order their fields were built in. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export async function resultKey(input: ResultKeyInput): Promise<string> {
  return `r${RESULT_FORMAT}:${await sha256Hex(canonicalJson({ format: RESULT_FORMAT, protocol: PROTOCOL_VERSION, ...input }))}`;
}

export interface StoredResult {
  v: typeof RESULT_FORMAT;
  engine: string;
  created_at: string;
  events: NodeEvent[];
}

/** One token event and one done event per prompt, in prompt order. Only complete answers are stored. */
export function compactEvents(events: readonly NodeEvent[]): NodeEvent[] {
  const tokens = new Map<number, TokenEvent>();
  const done: DoneEvent[] = [];
  for (const e of events) {
    if (e.type === "token") {
      const t = tokens.get(e.prompt);
      if (!t) tokens.set(e.prompt, { ...e, ...(e.logprobs ? { logprobs: [...e.logprobs] } : {}) });
      else {
        t.text += e.text;
        t.tokens += e.tokens;
        if (e.logprobs) t.logprobs = [...(t.logprobs ?? []), ...e.logprobs];
      }
    } else if (e.type === "done") done.push(e);
  }
  const out: NodeEvent[] = [];
  for (const d of [...done].sort((a, b) => a.prompt - b.prompt)) {
    const t = tokens.get(d.prompt);
    if (t) out.push(t);
    out.push(d);
  }
  return out;
}

export async function getResult(kv: KVNamespace | undefined, key: string): Promise<StoredResult | null> {
  if (!kv) return null;
  const value = await kv.get<StoredResult>(key, { type: "json", cacheTtl: 60 });
  if (!value || value.v !== RESULT_FORMAT || !Array.isArray(value.events) || typeof value.engine !== "string") return null;
  return value;
}

export async function putResult(kv: KVNamespace | undefined, key: string, value: StoredResult, ttlS: number): Promise<void> {
  if (!kv || ttlS <= 0) return;
  // KV's shortest TTL is 60 s.
  await kv.put(key, JSON.stringify(value), { expirationTtl: Math.max(60, ttlS) });
}

/** A stored answer as a node event stream (everything available at once: the relay writes it as one chunk). */
export function replayEvents(events: readonly NodeEvent[]): ReadableStream<NodeEvent> {
  return new ReadableStream<NodeEvent>({
    start(controller) {
      for (const e of events) controller.enqueue(e);
      controller.close();
    },
  });
}
