"""Prompt assembly: the edge's segments -> Qwen-VL input ids, with the image slots as prompt-table ids.

The edge sends each prompt as segments (src/protocol/schema.ts):

- ``{"type": "template", "text"}``: our own text; Qwen-VL's special tokens (``<|im_start|>``, ``<ref>``...)
  are allowed in it.
- ``{"type": "user", "text"}``: the client's text, tokenized with **no** special token allowed, so a user
  who types ``<|im_start|>`` or ``<img>`` gets those characters as plain text (prompt injection).
  For Qwen's tiktoken tokenizer that is ``allowed_special=set(), disallowed_special=()``.
- ``{"type": "image", "index"}``: ``<img>`` + 256 slot ids + ``</img>``.

Slot ids follow TensorRT-LLM's Qwen-VL example (examples/models/core/qwenvl/run.py, ``qwen_infer``: the
"fake prompt ids" ``arange(vocab_size, vocab_size + n_images * 256)`` written between each
``<img>``/``</img>`` pair): image ``i`` of the request takes ``vocab_size + i*256 + j`` for j in 0..255,
and the request's prompt-tuning table holds the images' ViT outputs stacked in index order. The engine
replaces any id >= vocab_size by row ``id - vocab_size`` of the request's table.

Template text must not contain ``<img>``/``</img>``/``<imgpad>`` itself: Qwen-VL's tokenizer treats
``<img>…</img>`` in text as an image *path* and pads it with ``<imgpad>`` (tokenization_qwen.py,
``_encode_imgurl``); only an image segment may open an image.

Standard library only: the tokenizer is passed in (see :class:`QwenVocab`).
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence

IMAGE_SLOTS = 256

# Qwen-VL's special tokens (tokenization_qwen.py of Qwen/Qwen-VL-Chat; docs/architecture: "Prompts").
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMG_START = "<img>"
IMG_END = "</img>"
IMG_PAD = "<imgpad>"
QWEN_VL_SPECIAL_IDS = {
    ENDOFTEXT: 151643,
    IM_START: 151644,
    IM_END: 151645,
    "<ref>": 151851,
    "</ref>": 151852,
    "<box>": 151853,
    "</box>": 151854,
    "<quad>": 151855,
    "</quad>": 151856,
    IMG_START: 151857,
    IMG_END: 151858,
    IMG_PAD: 151859,
}
_IMAGE_TAGS = (IMG_START, IMG_END, IMG_PAD)

VARIANTS = ("qwen-vl", "qwen-vl-chat")


class PromptError(ValueError):
    """The prompt cannot be built (bad segment, unknown image, template opening an image)."""


class QwenLikeTokenizer(Protocol):
    """The surface of Qwen's ``QWenTokenizer`` (tokenization_qwen.py) this module uses."""

    special_tokens: dict  # str -> id
    decoder: dict  # id -> bytes (ordinary tokens) | str (special tokens)

    def encode(self, text: str, **kwargs: Any) -> list: ...


class QwenVocab:
    """Wraps the checkpoint's own tokenizer (``AutoTokenizer.from_pretrained(dir, trust_remote_code=True)``)
    or, in tests, a stand-in with the same surface."""

    def __init__(self, tokenizer: QwenLikeTokenizer):
        self.tokenizer = tokenizer
        self.special: dict[str, int] = dict(tokenizer.special_tokens)
        missing = [t for t in (ENDOFTEXT, IM_START, IM_END, IMG_START, IMG_END) if t not in self.special]
        if missing:
            raise ValueError(f"tokenizer lacks Qwen-VL special tokens {missing}: is this a Qwen-VL checkpoint?")
        self._all_special = frozenset(self.special)
        self._special_text = {i: t for t, i in self.special.items()}

    def id(self, token: str) -> int:
        return self.special[token]

    def encode_template(self, text: str) -> list[int]:
        for tag in _IMAGE_TAGS:
            if tag in text:
                raise PromptError(f"template text contains {tag}; images enter a prompt only as image segments")
        return list(self.tokenizer.encode(text, allowed_special=set(self._all_special), disallowed_special=()))

    def encode_user(self, text: str) -> list[int]:
        # Nothing allowed and nothing disallowed: special-token text is encoded as the ordinary bytes it is.
        return list(self.tokenizer.encode(text, allowed_special=set(), disallowed_special=()))

    def token_bytes(self, token_id: int) -> bytes:
        """What a generated token contributes to the output text (special tokens as their text: the
        answer's ``<ref>``/``<box>`` must reach the client)."""
        piece = self.tokenizer.decoder.get(token_id)
        if piece is None:
            return b""
        return piece.encode("utf-8") if isinstance(piece, str) else bytes(piece)

    def stop_token_ids(self, variant: str) -> tuple[int, list[int]]:
        """(end_id, other stop ids). Chat (ChatML) stops on ``<|im_end|>`` or ``<|im_start|>``, the base
        model on ``<|endoftext|>``; a chat model that emits ``<|endoftext|>`` has ended too."""
        if variant == "qwen-vl-chat":
            return self.id(IM_END), [self.id(IM_START), self.id(ENDOFTEXT)]
        return self.id(ENDOFTEXT), []


def assemble_prompt(segments: Sequence[dict], vocab: QwenVocab, vocab_size: int, n_images: int) -> list[int]:
    """The input ids of one prompt. ``vocab_size`` is the LLM engine's (its prompt-table ids start there)."""
    if not isinstance(segments, (list, tuple)) or not segments:
        raise PromptError("a prompt is a non-empty list of segments")
    img_start, img_end = vocab.id(IMG_START), vocab.id(IMG_END)
    ids: list[int] = []
    for n, seg in enumerate(segments):
        if not isinstance(seg, dict):
            raise PromptError(f"segment {n} is not an object")
        kind = seg.get("type")
        if kind in ("template", "user"):
            text = seg.get("text")
            if not isinstance(text, str):
                raise PromptError(f"segment {n}: text must be a string")
            ids += vocab.encode_template(text) if kind == "template" else vocab.encode_user(text)
        elif kind == "image":
            index = seg.get("index")
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_images:
                raise PromptError(f"segment {n}: image index {index!r} but the request has {n_images} images")
            base = vocab_size + index * IMAGE_SLOTS
            ids.append(img_start)
            ids.extend(range(base, base + IMAGE_SLOTS))
            ids.append(img_end)
        else:
            raise PromptError(f"segment {n}: unknown type {kind!r}")
    return ids


def image_slot_ids(vocab_size: int, n_images: int) -> Iterable[int]:
    """Every prompt-table id a request with ``n_images`` images may use (for checks and tests)."""
    return range(vocab_size, vocab_size + n_images * IMAGE_SLOTS)
