/**
 * Reads a request body into one buffer, refusing it as soon as it passes `maxBytes` (a declared
 * Content-Length over the cap is refused before a byte is read).
 */
import type { Readable } from "node:stream";
import { FrameError } from "../../../src/protocol/index";

export async function readBodyCapped(request: Request, maxBytes: number): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  const tooLarge = (n: number | string) => new FrameError("frame_too_large", `frame is ${n} bytes; the limit is ${maxBytes}`);
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > maxBytes) throw tooLarge(declared);
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  // With a Content-Length the buffer is allocated once; otherwise chunks are joined at the end.
  const expected = declared !== null && /^\d+$/.test(declared) ? Number(declared) : undefined;
  let buffer = expected !== undefined ? new Uint8Array(expected) : undefined;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (size + value.byteLength > maxBytes) {
      await reader.cancel().catch(() => {});
      throw tooLarge(`more than ${maxBytes}`);
    }
    if (buffer && size + value.byteLength <= buffer.byteLength) buffer.set(value, size);
    else {
      if (buffer) {
        // The body is longer than declared (the HTTP layer should prevent it): fall back to chunks.
        chunks.push(buffer.subarray(0, size));
        buffer = undefined;
      }
      chunks.push(value);
    }
    size += value.byteLength;
  }
  if (buffer) return buffer.subarray(0, size);
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

/**
 * `readBodyCapped` straight from Node's request stream, for requests served by @hono/node-server
 * (`c.env.incoming`): the same bytes, cap and errors, without building a WHATWG Request and two web
 * streams around the socket for every request. `declared` is the request's Content-Length header as
 * `Headers.get` gives it. On refusal the stream is paused, not destroyed: the server drains it.
 */
export function readIncomingCapped(incoming: Readable, declared: string | null, maxBytes: number): Promise<Uint8Array> {
  const tooLarge = (n: number | string) => new FrameError("frame_too_large", `frame is ${n} bytes; the limit is ${maxBytes}`);
  const hasLength = declared !== null && /^\d+$/.test(declared);
  if (hasLength && Number(declared) > maxBytes) return Promise.reject(tooLarge(declared));
  return new Promise<Uint8Array>((resolve, reject) => {
    // With a Content-Length the buffer is allocated once; otherwise chunks are joined at the end.
    let buffer = hasLength ? new Uint8Array(Number(declared)) : undefined;
    const chunks: Uint8Array[] = [];
    let size = 0;
    const stop = () => {
      incoming.off("data", onData);
      incoming.off("end", onEnd);
      incoming.off("error", onError);
      incoming.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      const value = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      if (size + value.byteLength > maxBytes) {
        stop();
        incoming.pause();
        reject(tooLarge(`more than ${maxBytes}`));
        return;
      }
      if (buffer && size + value.byteLength <= buffer.byteLength) buffer.set(value, size);
      else {
        if (buffer) {
          // The body is longer than declared (the HTTP layer should prevent it): fall back to chunks.
          chunks.push(buffer.subarray(0, size));
          buffer = undefined;
        }
        chunks.push(value);
      }
      size += value.byteLength;
    };
    const onEnd = () => {
      stop();
      if (buffer) resolve(buffer.subarray(0, size));
      else if (chunks.length === 1) resolve(chunks[0]);
      else {
        const out = new Uint8Array(size);
        let offset = 0;
        for (const c of chunks) {
          out.set(c, offset);
          offset += c.byteLength;
        }
        resolve(out);
      }
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
