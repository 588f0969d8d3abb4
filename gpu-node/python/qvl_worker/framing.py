"""Framed IPC between the gpu-node agent (Node) and this worker, over the worker's stdin/stdout.

One message is:

    u32 big-endian N | N bytes of UTF-8 JSON (an object with a string "type") | payload

The payload is present only when the JSON object has ``payload_bytes`` > 0; it is exactly that many raw
bytes (for ``generate``: the request's image tensors back to back, as the JSON header's
``images[i].offset``/``length`` describe). No other field says how long anything is, so a reader never
scans for delimiters and a tensor needs no base64.

Limits (both sides, configurable): the JSON part at most ``MAX_JSON_BYTES``, the payload at most
``MAX_PAYLOAD_BYTES``. A length over a limit, JSON that does not parse, or JSON that is not an object with
a string ``type`` is refused with :class:`FramingError` before any payload is read into memory. After
such an error the stream is out of step, so both sides treat it as fatal for the connection.

The TypeScript twin of this module is ``gpu-node/src/engines/worker-ipc.ts``; docs/gpu-node.md lists
every message.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Optional

MAX_JSON_BYTES = 1 << 20
# 8 images of 3x448x448 f16 are 9.6 MB; leave room without allowing anything unbounded.
MAX_PAYLOAD_BYTES = 16 << 20

_LEN = struct.Struct(">I")


class FramingError(Exception):
    """A frame that cannot be accepted; ``code`` is one of the strings below."""

    # json_too_large | payload_too_large | invalid_json | invalid_message | truncated
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Message:
    body: dict
    payload: bytes = field(default=b"")

    @property
    def type(self) -> str:
        return self.body["type"]


def encode(body: dict, payload: bytes = b"", *, max_json_bytes: int = MAX_JSON_BYTES) -> bytes:
    """One frame. ``payload_bytes`` is set from ``payload`` (and removed when there is none)."""
    body = dict(body)
    if payload:
        body["payload_bytes"] = len(payload)
    else:
        body.pop("payload_bytes", None)
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > max_json_bytes:
        raise FramingError("json_too_large", f"message JSON is {len(data)} bytes; the limit is {max_json_bytes}")
    return _LEN.pack(len(data)) + data + bytes(payload)


def _parse_body(data: bytes, max_payload_bytes: int) -> tuple[dict, int]:
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FramingError("invalid_json", f"message is not UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise FramingError("invalid_message", "message must be a JSON object with a string 'type'")
    n = body.get("payload_bytes", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise FramingError("invalid_message", "payload_bytes must be a non-negative integer")
    if n > max_payload_bytes:
        raise FramingError("payload_too_large", f"payload is {n} bytes; the limit is {max_payload_bytes}")
    return body, n


class FrameDecoder:
    """Incremental decoder: feed it whatever arrived, take out the complete messages.

    Partial reads are the normal case on a pipe (a 9 MB payload arrives in 64 KiB pieces); the decoder
    keeps at most one incomplete frame.
    """

    def __init__(self, *, max_json_bytes: int = MAX_JSON_BYTES, max_payload_bytes: int = MAX_PAYLOAD_BYTES):
        self.max_json_bytes = max_json_bytes
        self.max_payload_bytes = max_payload_bytes
        self._buf = bytearray()
        self._body: Optional[dict] = None
        self._need_payload = 0

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while True:
            if self._body is None:
                if len(self._buf) < 4:
                    return out
                (n,) = _LEN.unpack_from(self._buf, 0)
                if n > self.max_json_bytes:
                    raise FramingError("json_too_large", f"message JSON is {n} bytes; the limit is {self.max_json_bytes}")
                if len(self._buf) < 4 + n:
                    return out
                body, self._need_payload = _parse_body(bytes(self._buf[4 : 4 + n]), self.max_payload_bytes)
                del self._buf[: 4 + n]
                self._body = body
            if len(self._buf) < self._need_payload:
                return out
            payload = bytes(self._buf[: self._need_payload])
            del self._buf[: self._need_payload]
            out.append(Message(self._body, payload))
            self._body = None
            self._need_payload = 0

    def check_eof(self) -> None:
        """Call at end of stream: a frame cut short is an error, not a silent drop."""
        if self._body is not None or self._buf:
            raise FramingError("truncated", "stream ended inside a frame")


def _read_exactly(stream: BinaryIO, n: int) -> Optional[bytes]:
    chunks = []
    remaining = n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_message(
    stream: BinaryIO, *, max_json_bytes: int = MAX_JSON_BYTES, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> Optional[Message]:
    """Blocking read of one message; ``None`` at a clean end of stream (between frames)."""
    head = stream.read(4)
    if not head:
        return None
    if len(head) < 4:
        rest = _read_exactly(stream, 4 - len(head))
        if rest is None:
            raise FramingError("truncated", "stream ended inside a frame length")
        head += rest
    (n,) = _LEN.unpack(head)
    if n > max_json_bytes:
        raise FramingError("json_too_large", f"message JSON is {n} bytes; the limit is {max_json_bytes}")
    data = _read_exactly(stream, n)
    if data is None:
        raise FramingError("truncated", "stream ended inside a message")
    body, payload_bytes = _parse_body(data, max_payload_bytes)
    payload = b""
    if payload_bytes:
        payload = _read_exactly(stream, payload_bytes)
        if payload is None:
            raise FramingError("truncated", "stream ended inside a payload")
    return Message(body, payload)


def write_message(stream: BinaryIO, body: dict, payload: bytes = b"") -> None:
    stream.write(encode(body, payload))
    stream.flush()
