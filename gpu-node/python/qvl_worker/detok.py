"""Incremental, UTF-8-safe detokenization with stop strings.

Qwen's tokenizer is byte-level BPE: one CJK character is often split over two or three tokens, so decoding
token by token would emit broken characters. Tokens are turned into their bytes and fed through an
incremental UTF-8 decoder, which keeps an incomplete trailing sequence until the rest arrives.

Stop strings are matched on the decoded text (tokenizing a stop string is ambiguous: the model may spell
the same text with other tokens). Text that could still be the start of a stop string is held back until
it is either completed (then nothing from the stop string on is emitted) or ruled out.
"""

from __future__ import annotations

import codecs
from typing import Callable, Iterable, Optional, Sequence


class IncrementalDetokenizer:
    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str] = ()):
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._pending = ""
        self.stopped = False
        self.stop_string: Optional[str] = None

    def push(self, token_ids: Iterable[int]) -> str:
        """Feeds generated tokens; returns the text that is now safe to emit (may be empty)."""
        if self.stopped:
            return ""
        for t in token_ids:
            self._pending += self._utf8.decode(self._token_bytes(t))
        return self._release(final=False)

    def finish(self) -> str:
        """End of generation: flushes everything held back (an incomplete trailing UTF-8 sequence
        becomes U+FFFD, as a strict decoder would report it)."""
        if self.stopped:
            return ""
        self._pending += self._utf8.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        pending = self._pending
        hit = -1
        for s in self._stop:
            at = pending.find(s)
            if at != -1 and (hit == -1 or at < hit):
                hit, self.stop_string = at, s
        if hit != -1:
            self.stopped = True
            self._pending = ""
            return pending[:hit]
        hold = 0
        if not final:
            for s in self._stop:
                for k in range(min(len(s) - 1, len(pending)), hold, -1):
                    if pending.endswith(s[:k]):
                        hold = k
                        break
        out = pending[: len(pending) - hold]
        self._pending = pending[len(pending) - hold :]
        return out
