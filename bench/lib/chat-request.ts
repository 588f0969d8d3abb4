/** The chat request the gateway benchmarks send, as the client sends it and as the edge frames it for the node. */

export const BENCH_MESSAGES = [{ role: "user" as const, content: "Describe a quiet harbour at dawn in a few sentences." }];

/** The frame's `output` the edge sends for this request (src/serving/chat.ts): the node writes the OpenAI chunks. */
export const BENCH_OUTPUT = {
  format: "openai-chat" as const,
  id: "chatcmpl-bench",
  created: 1_700_000_000,
  model: "qwen-vl-chat",
  include_usage: true,
  logprobs: false,
  prompt_tokens: "sum" as const,
  keep_alive_ms: 10_000,
};
