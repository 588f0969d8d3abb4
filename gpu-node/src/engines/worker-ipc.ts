/**
 * The framing between the agent and the Python TensorRT-LLM worker (gpu-node/python/qvl_worker/framing.py is
 * its twin), over the worker's stdin/stdout:
 *
 *   u32 big-endian N | N bytes of UTF-8 JSON (an object with a string "type") | payload
 *
 * The payload is there only when the JSON has `payload_bytes` > 0 and is exactly that many bytes (for
 * `generate`, the request's image tensors back to back). Oversize lengths, bad JSON and objects without a
 * `type` are refused before any payload is buffered; after such an error the stream is out of step and the
 * connection (the worker) is abandoned.
 */

export const MAX_JSON_BYTES = 1 << 20;
/** 8 images of 3×448×448 f16 are 9.6 MB. */
export const MAX_PAYLOAD_BYTES = 16 << 20;

export type IpcErrorCode = "json_too_large" | "payload_too_large" | "invalid_json" | "invalid_message";

export class IpcError extends Error {
  constructor(
    readonly code: IpcErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "IpcError";
  }
}

export interface IpcMessage {
  body: { type: string; [key: string]: unknown };
  payload: Uint8Array;
}

export interface IpcLimits {
  maxJsonBytes: number;
  maxPayloadBytes: number;
}

const DEFAULT_LIMITS: IpcLimits = { maxJsonBytes: MAX_JSON_BYTES, maxPayloadBytes: MAX_PAYLOAD_BYTES };
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** One frame; `payload_bytes` is set from the payloads (several views are written back to back). */
export function encodeMessage(
  body: { type: string; [key: string]: unknown },
  payload: Uint8Array[] = [],
  limits = DEFAULT_LIMITS,
): Buffer[] {
  const payloadBytes = payload.reduce((n, p) => n + p.byteLength, 0);
  const { payload_bytes: _ignored, ...rest } = body;
  const json = encoder.encode(JSON.stringify(payloadBytes > 0 ? { ...rest, payload_bytes: payloadBytes } : rest));
  if (json.byteLength > limits.maxJsonBytes) throw new IpcError("json_too_large", `message JSON is ${json.byteLength} bytes`);
  if (payloadBytes > limits.maxPayloadBytes) throw new IpcError("payload_too_large", `payload is ${payloadBytes} bytes`);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(json.byteLength, 0);
  // Views are passed through, not copied: a 9 MB payload goes to the pipe as it came from the frame.
  return [
    head,
    Buffer.from(json.buffer, json.byteOffset, json.byteLength),
    ...payload.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)),
  ];
}

/** Incremental decoder: push whatever the pipe delivered, get back the complete messages. */
export class MessageDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private body: IpcMessage["body"] | undefined;
  private needPayload = 0;

  constructor(private readonly limits: IpcLimits = DEFAULT_LIMITS) {}

  get pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Uint8Array): IpcMessage[] {
    if (chunk.byteLength > 0) {
      this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.buffered += chunk.byteLength;
    }
    const out: IpcMessage[] = [];
    for (;;) {
      if (this.body === undefined) {
        if (this.buffered < 4) return out;
        const n = this.peek(4).readUInt32BE(0);
        if (n > this.limits.maxJsonBytes)
          throw new IpcError("json_too_large", `message JSON is ${n} bytes; the limit is ${this.limits.maxJsonBytes}`);
        if (this.buffered < 4 + n) return out;
        this.take(4);
        this.body = this.parseBody(this.take(n));
      }
      if (this.buffered < this.needPayload) return out;
      const payload = this.take(this.needPayload);
      out.push({ body: this.body, payload: new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength) });
      this.body = undefined;
      this.needPayload = 0;
    }
  }

  /** True when the stream ended between frames. */
  get atBoundary(): boolean {
    return this.body === undefined && this.buffered === 0;
  }

  private parseBody(data: Buffer): IpcMessage["body"] {
    let body: unknown;
    try {
      body = JSON.parse(decoder.decode(data));
    } catch (err) {
      throw new IpcError("invalid_json", `message is not UTF-8 JSON: ${(err as Error).message}`);
    }
    if (typeof body !== "object" || body === null || Array.isArray(body) || typeof (body as { type?: unknown }).type !== "string") {
      throw new IpcError("invalid_message", "message must be a JSON object with a string 'type'");
    }
    const n = (body as { payload_bytes?: unknown }).payload_bytes ?? 0;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0)
      throw new IpcError("invalid_message", "payload_bytes must be a non-negative integer");
    if (n > this.limits.maxPayloadBytes)
      throw new IpcError("payload_too_large", `payload is ${n} bytes; the limit is ${this.limits.maxPayloadBytes}`);
    this.needPayload = n;
    return body as IpcMessage["body"];
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].byteLength >= n) return this.chunks[0].subarray(0, n);
    return Buffer.concat(this.chunks, this.buffered).subarray(0, n);
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    let out: Buffer;
    if (this.chunks[0].byteLength >= n) {
      out = this.chunks[0].subarray(0, n);
      this.chunks[0] = this.chunks[0].subarray(n);
      if (this.chunks[0].byteLength === 0) this.chunks.shift();
    } else {
      const all = Buffer.concat(this.chunks, this.buffered);
      out = all.subarray(0, n);
      this.chunks = all.byteLength > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }
}
