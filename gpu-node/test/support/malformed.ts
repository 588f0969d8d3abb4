/**
 * Valid and malformed frames for the protocol and agent tests: one malformed frame per FrameErrorCode
 * that a body can carry (frame_too_large depends on the limit and is tested apart).
 */
import { describeTensors, type FrameErrorCode, type GenerateHeaderInput, PROTOCOL_LIMITS } from "../../../src/protocol/index";
import { syntheticTensor } from "./frames";

export const f16 = syntheticTensor("f16", 1);
export const u8 = syntheticTensor("u8", 2);

export async function header(overrides: Partial<GenerateHeaderInput> = {}): Promise<GenerateHeaderInput> {
  return {
    version: 1,
    request_id: "req-1",
    variant: "qwen-vl-chat",
    prompts: [
      [
        { type: "image", index: 0 },
        { type: "user", text: "What is this?" },
      ],
      [
        { type: "image", index: 1 },
        { type: "template", text: "<ref>cat</ref><box>" },
      ],
    ],
    images: await describeTensors([
      { dtype: "f16", bytes: f16 },
      { dtype: "u8", bytes: u8 },
    ]),
    sampling: { max_tokens: 32, stop: ["\n"], logprobs: 2 },
    deadline_ms: 5_000,
    ...overrides,
  };
}

/** A frame whose JSON header is `json` verbatim, followed by `tail`. */
export function rawFrame(json: string | Uint8Array, tail: Uint8Array = new Uint8Array(0), declaredLength?: number): Uint8Array {
  const bytes = typeof json === "string" ? new TextEncoder().encode(json) : json;
  const out = new Uint8Array(4 + bytes.length + tail.length);
  new DataView(out.buffer).setUint32(0, declaredLength ?? bytes.length);
  out.set(bytes, 4);
  out.set(tail, 4 + bytes.length);
  return out;
}

/** One malformed frame per FrameErrorCode (shared with the agent test, which posts each one). */
export async function malformedFrames(): Promise<Array<{ code: FrameErrorCode; frame: Uint8Array; why: string }>> {
  const good = await header();
  const json = JSON.stringify(good);
  const tensors = new Uint8Array(f16.length + u8.length);
  tensors.set(f16, 0);
  tensors.set(u8, f16.length);
  const flipped = tensors.slice();
  flipped[12345] ^= 1;
  const overlapping = { ...good, images: [good.images[0], { ...good.images[1], offset: good.images[0].length - 10 }] };
  return [
    { code: "frame_truncated", frame: new Uint8Array([0, 0, 1]), why: "shorter than the length prefix" },
    { code: "frame_truncated", frame: rawFrame(json.slice(0, 40), new Uint8Array(0), json.length), why: "ends inside the header" },
    {
      code: "header_too_large",
      frame: rawFrame("{}", new Uint8Array(0), PROTOCOL_LIMITS.maxHeaderBytes + 1),
      why: "declares a header over the limit",
    },
    { code: "header_invalid_json", frame: rawFrame("{not json"), why: "not JSON" },
    { code: "header_invalid_json", frame: rawFrame(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), why: "not UTF-8" },
    { code: "header_invalid", frame: rawFrame(JSON.stringify({ ...good, prompts: [] })), why: "no prompts" },
    {
      code: "header_invalid",
      frame: rawFrame(JSON.stringify({ ...good, prompts: [[{ type: "image", index: 5 }]] }), tensors),
      why: "image index past the images",
    },
    { code: "header_invalid", frame: rawFrame(JSON.stringify({ ...good, sampling: { max_tokens: 0 } }), tensors), why: "max_tokens 0" },
    { code: "unsupported_version", frame: rawFrame(JSON.stringify({ ...good, version: 2 }), tensors), why: "protocol version 2" },
    { code: "image_out_of_bounds", frame: rawFrame(json, tensors.subarray(0, tensors.length - 1)), why: "last image cut short" },
    {
      code: "image_overlap",
      frame: rawFrame(JSON.stringify(overlapping), tensors.subarray(0, good.images[0].length - 10 + u8.length)),
      why: "overlap",
    },
    { code: "image_checksum_mismatch", frame: rawFrame(json, flipped), why: "one bit flipped" },
    { code: "trailing_bytes", frame: rawFrame(json, new Uint8Array([...tensors, 0])), why: "a byte after the last image" },
  ];
}
