"""A stand-in for Qwen's tiktoken-based QWenTokenizer, small enough to reason about exact ids.

Byte-level: every UTF-8 byte is its own token (id = byte value), so a CJK character is three tokens, as it
often is across Qwen's BPE tokens too. Special tokens use Qwen-VL's real ids. ``encode`` follows
tiktoken's rules for ``allowed_special`` / ``disallowed_special`` (both default as in tiktoken:
nothing allowed, everything disallowed -> special-token text raises), so a caller that forgets to pass
them fails loudly here as it would with the real tokenizer.
"""

import re

from qvl_worker.prompt import QWEN_VL_SPECIAL_IDS

VOCAB_SIZE = 151936  # Qwen-VL's config.json vocab_size: prompt-table ids start here


class ToyQwenTokenizer:
    def __init__(self):
        self.special_tokens = dict(QWEN_VL_SPECIAL_IDS)
        self.decoder = {i: bytes([i]) for i in range(256)}
        self.decoder.update({i: t for t, i in self.special_tokens.items()})
        self.calls = []

    def encode(self, text, allowed_special=frozenset(), disallowed_special="all"):
        self.calls.append((text, allowed_special, disallowed_special))
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        disallowed = set(self.special_tokens) - allowed if disallowed_special == "all" else set(disallowed_special)
        for tok in disallowed:
            if tok in text:
                raise ValueError(f"Encountered text corresponding to disallowed special token {tok!r}")
        ids = []
        if allowed:
            pattern = "(" + "|".join(re.escape(t) for t in sorted(allowed, key=len, reverse=True)) + ")"
            parts = re.split(pattern, text)
        else:
            parts = [text]
        for part in parts:
            if part in allowed:
                ids.append(self.special_tokens[part])
            else:
                ids.extend(part.encode("utf-8"))
        return ids


def text_ids(text):
    return list(text.encode("utf-8"))
