/**
 * What the node answers while its engine loads (TensorRT-LLM takes minutes): the port is open so
 * probes get an answer, `/healthz` says 503 `starting`, and generate is refused as `engine_unavailable`
 * with Retry-After (nothing registers with the edge before the engine is ready).
 */
import { Hono } from "hono";
import { AgentError } from "./errors";

export function startingApp(engine: string, retryAfterS = 5): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "starting", engine }, 503));
  app.get("/v1/node", (c) => c.json({ status: "starting", engine }, 503));
  app.all("*", () => new AgentError("engine_unavailable", "The engine is starting.", { retryAfterS }).toResponse());
  return app;
}
