/**
 * Reads a request body into one buffer, refusing it as soon as it passes `maxBytes` (a declared
 * Content-Length over the cap is refused before a byte is read).
 */
import type { Readable } from "node:stream";
import { FrameError } from "../../../src/protocol/index";

/** The body's bytes as they arrive, under the cap: one buffer when a Content-Length was declared, else chunks joined at the end. */
class CappedBody {
  private buffer: Uint8Array | undefined;
  private readonly chunks: Uint8Array[] = [];
  private size = 0;

  constructor(
    private readonly maxBytes: number,
    declared: string | null,
  ) {
    const expected = CappedBody.declaredLength(declared);
    if (expected !== undefined && expected > maxBytes) throw this.tooLarge(expected);
    this.buffer = expected !== undefined ? new Uint8Array(expected) : undefined;
  }

  static declaredLength(declared: string | null): number | undefined {
    return declared !== null && /^\d+$/.test(declared) ? Number(declared) : undefined;
  }

  tooLarge(n: number | string): FrameError {
    return new FrameError("frame_too_large", `frame is ${n} bytes; the limit is ${this.maxBytes}`);
  }

  /** Adds a chunk; throws frame_too_large once the body passes the cap. */
  push(value: Uint8Array): void {
    if (this.size + value.byteLength > this.maxBytes) throw this.tooLarge(`more than ${this.maxBytes}`);
    if (this.buffer && this.size + value.byteLength <= this.buffer.byteLength) this.buffer.set(value, this.size);
    else {
      if (this.buffer) {
        // The body is longer than declared (the HTTP layer should prevent it): fall back to chunks.
        this.chunks.push(this.buffer.subarray(0, this.size));
        this.buffer = undefined;
      }
      this.chunks.push(value);
    }
    this.size += value.byteLength;
  }

  bytes(): Uint8Array {
    if (this.buffer) return this.buffer.subarray(0, this.size);
    if (this.chunks.length === 1) return this.chunks[0];
    const out = new Uint8Array(this.size);
    let offset = 0;
    for (const c of this.chunks) {
      out.set(c, offset);
      offset += c.byteLength;
    }
    return out;
  }
}

export async function readBodyCapped(request: Request, maxBytes: number): Promise<Uint8Array> {
  const body = new CappedBody(maxBytes, request.headers.get("content-length"));
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    try {
      body.push(value);
    } catch (err) {
      await reader.cancel().catch(() => {});
      throw err;
    }
  }
  return body.bytes();
}

/**
 * `readBodyCapped` straight from Node's request stream, for requests served by @hono/node-server
 * (`c.env.incoming`): the same bytes, cap and errors, without building a WHATWG Request and two web
 * streams around the socket for every request. `declared` is the request's Content-Length header as
 * `Headers.get` gives it. On refusal the stream is paused, not destroyed: the server drains it.
 */
export function readIncomingCapped(incoming: Readable, declared: string | null, maxBytes: number): Promise<Uint8Array> {
  let body: CappedBody;
  try {
    body = new CappedBody(maxBytes, declared);
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise<Uint8Array>((resolve, reject) => {
    const stop = () => {
      incoming.off("data", onData);
      incoming.off("end", onEnd);
      incoming.off("error", onError);
      incoming.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      try {
        body.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      } catch (err) {
        stop();
        incoming.pause();
        reject(err);
      }
    };
    const onEnd = () => {
      stop();
      resolve(body.bytes());
    };
    const onError = (err: Error) => {
      stop();
      reject(err);
    };
    const onClose = () => {
      stop();
      reject(new Error("The request stream closed before its end."));
    };
    incoming.on("data", onData);
    incoming.on("end", onEnd);
    incoming.on("error", onError);
    incoming.on("close", onClose);
  });
}
