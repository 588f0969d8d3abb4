/**
 * POST /v1/tensors: what the model sees. Runs the exact preprocessing and answers the raw tensor
 * (f16: [3,448,448] CHW little-endian float16; u8: [448,448,3] HWC) with its shape, dtype and sha256.
 * Not cached: it shows (and times) the preprocessing itself. `?quality=fast` decodes JPEGs at the DCT scale
 * `fastDctScale` picks (Pillow's `draft()` asked for 1.5× the output; not byte-identical to exact; see
 * README); `x-quality` and `x-dct-scale` say what ran.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { getCodecs } from "../image/codecs/worker";
import { readImageInput } from "../image/input";
import { preprocessImage } from "../image/pipeline";
import { apiKey } from "../middleware/api-key";
import { rateLimit } from "../middleware/rate-limit";

const TensorQuery = z.object({
  format: z.enum(["f16", "u8"]).default("f16"),
  orientation: z.enum(["apply", "ignore"]).default("apply"),
  quality: z.enum(["exact", "fast"]).default("exact"),
});

export const tensors = new Hono<AppEnv>();

// An operator's tool (what the model sees): the admin scope.
tensors.use(apiKey({ scope: "admin" }), rateLimit({ billable: false }));

tensors.post("/", async (c) => {
  const query = TensorQuery.safeParse(c.req.query());
  if (!query.success) {
    const issue = query.error.issues[0];
    throw new ApiError("invalid_request", `Invalid query parameter ${String(issue.path[0])}: ${issue.message}.`, {
      param: String(issue.path[0]),
    });
  }
  const config = c.get("config");
  const input = await readImageInput(c.req.raw, {
    maxBytes: config.image.maxBytes,
    ...config.fetch,
    signal: c.req.raw.signal,
  });
  const result = await preprocessImage(input.bytes, getCodecs(), {
    format: query.data.format,
    orientation: query.data.orientation,
    quality: query.data.quality,
    limits: config.image,
  });
  const t = result.timingMs;
  return c.body(result.tensor as Uint8Array<ArrayBuffer>, 200, {
    "content-type": "application/octet-stream",
    "x-tensor-shape": result.shape.join(","),
    "x-tensor-dtype": result.dtype,
    "x-tensor-sha256": result.sha256,
    "x-image-width": String(result.width),
    "x-image-height": String(result.height),
    "x-image-orientation": String(result.exifOrientation),
    "x-orientation-applied": String(result.orientationApplied),
    "x-quality": result.quality,
    "x-dct-scale": String(result.dctScale),
    "x-peak-bytes": String(result.peakBytes),
    "server-timing": [
      `fetch;dur=${input.fetchMs.toFixed(1)}`,
      `decode;dur=${t.decode.toFixed(1)}`,
      `resize;dur=${t.resize.toFixed(1)}`,
      `normalize;dur=${t.normalize.toFixed(1)}`,
    ].join(", "),
  });
});
