/** Qwen-VL's prompt formats as segments (user text never becomes special tokens). */
export * from "./box";
export * from "./chat";
export * from "./formats";
export * from "./segments";
export * from "./tasks";
