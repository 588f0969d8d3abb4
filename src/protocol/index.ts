/** The edge ↔ GPU node protocol, shared by both tiers. */
export * from "./events";
export * from "./frame";
export * from "./schema";
