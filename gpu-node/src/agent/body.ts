/**
 * Reads a request body into one buffer, refusing it as soon as it passes `maxBytes` (a declared
 * Content-Length over the cap is refused before a byte is read).
 */
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
