/**
 * The task routes take an image three ways: JSON (`{"image": "https://…" | "data:…", …}`), multipart
 * (`image` as a file or a URL field, other fields as form fields), or the raw image as the body
 * (`image/*` or `application/octet-stream`) with the other fields in the query string.
 */
import type { Context } from "hono";
import type { z } from "zod";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { readBodyCapped } from "../image/input";
import type { ImageSource } from "./images";

export interface TaskInput<T> {
  body: T;
  image: ImageSource;
}

const BOOLEAN_FIELDS = new Set(["stream"]);
const NUMBER_FIELDS = new Set(["max_tokens", "max_completion_tokens", "temperature", "top_p", "seed"]);

/** Form fields and query parameters arrive as strings: give the known ones their JSON types. */
function coerceFields(entries: Iterable<[string, string]>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of entries) {
    if (BOOLEAN_FIELDS.has(key)) out[key] = value === "true" || value === "1" ? true : value === "false" || value === "0" ? false : value;
    else if (NUMBER_FIELDS.has(key)) out[key] = value.trim() !== "" && Number.isFinite(Number(value)) ? Number(value) : value;
    else out[key] = value;
  }
  return out;
}

function validate<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const param = issue.path.join(".") || null;
    throw new ApiError("invalid_request", `Invalid request${param ? ` field ${param}` : ""}: ${issue.message}.`, param ? { param } : {});
  }
  return parsed.data;
}

/** JSON bodies carry base64 data URIs: allow their 4/3 expansion plus some slack. */
export const jsonBodyCap = (maxImageBytes: number) => Math.ceil((maxImageBytes * 4) / 3) + 256 * 1024;

export async function readJsonBody(c: Context<AppEnv>): Promise<unknown> {
  const bytes = await readBodyCapped(c.req.raw, jsonBodyCap(c.get("config").image.maxBytes));
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new ApiError("invalid_request", "The request body is not valid JSON.");
  }
}

export async function readTaskInput<S extends z.ZodType<{ image?: string }>>(
  c: Context<AppEnv>,
  schema: S,
): Promise<TaskInput<z.infer<S>>> {
  const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
  const maxBytes = c.get("config").image.maxBytes;
  if (type === "application/json") {
    const body = validate(schema, await readJsonBody(c));
    if (!body.image) throw new ApiError("missing_image", 'Send the image as "image": an https URL or a data: URI.', { param: "image" });
    return { body, image: { url: body.image } };
  }
  if (type === "multipart/form-data") {
    const raw = await readBodyCapped(c.req.raw, maxBytes + 1024 * 1024);
    let form: FormData;
    try {
      form = await new Response(raw as Uint8Array<ArrayBuffer>, {
        headers: { "content-type": c.req.header("content-type") ?? "" },
      }).formData();
    } catch {
      throw new ApiError("invalid_request", "The multipart body could not be parsed.");
    }
    const fields: Array<[string, string]> = [];
    let file: Uint8Array | undefined;
    for (const [key, value] of form.entries()) {
      if (typeof value === "string") fields.push([key, value]);
      else if (key === "image") file = new Uint8Array(await value.arrayBuffer());
    }
    const body = validate(schema, coerceFields(fields));
    if (file) return { body, image: { bytes: file } };
    if (body.image) return { body, image: { url: body.image } };
    throw new ApiError("missing_image", "Send the image as a multipart file field named image.", { param: "image" });
  }
  if (type === "application/octet-stream" || type.startsWith("image/")) {
    const body = validate(schema, coerceFields(Object.entries(c.req.query())));
    const bytes = await readBodyCapped(c.req.raw, maxBytes);
    if (bytes.length === 0) throw new ApiError("missing_image", "The request body is empty: send the image bytes.", { param: "image" });
    return { body, image: { bytes } };
  }
  throw new ApiError(
    "unsupported_media_type",
    `Content-Type ${type || "(none)"} is not accepted: send application/json, multipart/form-data, or the image itself (image/*).`,
  );
}

export { validate };
