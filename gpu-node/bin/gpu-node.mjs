#!/usr/bin/env node
// Entry for `npx gpu-node`: runs the TypeScript CLI through tsx (a runtime dependency).
import { register } from "tsx/esm/api";

register();
await import("./gpu-node.ts");
