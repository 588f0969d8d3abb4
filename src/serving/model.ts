/** Model names the public API accepts, and the node variant each one runs on. */
import { ApiError } from "../errors";
import type { ModelVariant } from "../protocol/index";
import { DEFAULT_MODEL, MODEL_IDS } from "./schemas";

export function resolveModel(model: string | undefined): { model: string; variant: ModelVariant } {
  const name = model ?? DEFAULT_MODEL;
  if (!(MODEL_IDS as readonly string[]).includes(name)) {
    throw new ApiError("model_not_found", `The model '${name}' does not exist; available: ${MODEL_IDS.join(", ")}.`, { param: "model" });
  }
  return { model: name, variant: name as ModelVariant };
}
