/** Node events → client streams: OpenAI chunks, task-route SSE, the relay core, the grounding parser. */
export * from "./grounding";
export * from "./native";
export * from "./openai";
export * from "./sse";
export * from "./task";
