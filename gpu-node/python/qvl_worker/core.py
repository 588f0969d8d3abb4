"""The worker's request/response state machine, apart from TensorRT-LLM and from the stdio loop.

Messages in (agent -> worker), as framed by framing.py:

    hello    {protocol}                                  -> ready {engine, version, capacity, vocab_size, ...}
    generate {id, header, payload_bytes} + image bytes   -> token* / done per prompt, or error {id}
    cancel   {id}                                        -> the engine cancels; each prompt ends with done "cancelled"
    shutdown {}                                          -> cancels everything; the loop ends

Messages out (worker -> agent):

    ready {engine, version, capacity, vocab_size, variant, max_input_len, max_seq_len, protocol}
    token {id, prompt, text, tokens, logprobs?}
    done  {id, prompt, finish_reason, usage, timings}
    error {id?, prompt?, code, message, retryable}       (no id: the engine itself failed)
    log   {level, message}

One request = one vision pass over its images (a [K*256, hidden] prompt-tuning table) shared by all its
prompts, each prompt a separate streaming request in the engine's in-flight batch. A failure that
belongs to one request is reported for that request and the worker keeps serving the others.

The engine is behind :class:`Backend` (trtllm_backend.py on a GPU host; a fake in the tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

from .detok import IncrementalDetokenizer
from .prompt import IMAGE_SLOTS, VARIANTS, PromptError, QwenVocab, assemble_prompt

PROTOCOL = 1
TENSOR_SIDE = 448
IMAGE_BYTES = {"f16": 3 * TENSOR_SIDE * TENSOR_SIDE * 2, "u8": TENSOR_SIDE * TENSOR_SIDE * 3}
IMAGE_SHAPES = {"f16": [3, TENSOR_SIDE, TENSOR_SIDE], "u8": [TENSOR_SIDE, TENSOR_SIDE, 3]}
MAX_ID_CHARS = 200

# TensorRT-LLM's FinishReason (bindings.executor.FinishReason) -> the protocol's finish_reason.
_FINISH = {"end_id": "stop", "stop_words": "stop", "length": "length", "cancelled": "cancelled", "timed_out": "deadline"}


@dataclass
class ImageInput:
    dtype: str  # "f16": [3,448,448] CLIP-normalized little-endian; "u8": [448,448,3] RGB
    data: memoryview


@dataclass
class EnqueueArgs:
    input_ids: list
    max_tokens: int
    sampling: dict
    end_id: int
    pad_id: int
    stop_token_ids: list
    table: Any  # the request's prompt-tuning table (None without images)
    logprobs: bool


@dataclass
class BackendResponse:
    backend_id: int
    tokens: Sequence[int] = ()
    logprobs: Optional[Sequence[float]] = None
    final: bool = False
    finish_reason: Optional[str] = None  # a key of _FINISH, lower case
    error: Optional[str] = None


class Backend(Protocol):
    engine: str
    version: str
    capacity: int
    vocab_size: int
    variant: Optional[str]
    max_input_len: int
    max_seq_len: int
    max_table_rows: int
    vocab: QwenVocab

    def encode_images(self, images: list) -> Any: ...
    def enqueue(self, args: EnqueueArgs) -> int: ...
    def cancel(self, backend_id: int) -> None: ...
    def poll(self, timeout_s: float) -> list: ...
    def shutdown(self) -> None: ...


class RequestInvalid(Exception):
    pass


@dataclass
class _Run:
    """One prompt of one request, as one engine request."""

    req: "_Request"
    index: int
    backend_id: int
    detok: IncrementalDetokenizer
    prompt_tokens: int
    enqueued_at: float
    stop_ids: frozenset = frozenset()
    first_token_at: Optional[float] = None
    completion_tokens: int = 0
    unreported: int = 0
    unreported_logprobs: list = field(default_factory=list)
    finished: bool = False
    engine_done: bool = False


@dataclass
class _Request:
    id: str
    received_at: float
    queue_ms: float = 0.0
    vision_ms: float = 0.0
    want_logprobs: bool = False
    runs: list = field(default_factory=list)
    table: Any = None  # kept alive until every prompt is done


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000.0, 3)


class Worker:
    def __init__(self, backend: Backend, send: Callable[..., None], clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self._send = send
        self._clock = clock
        self.requests: dict[str, _Request] = {}
        self._runs: dict[int, _Run] = {}

    # --- output -------------------------------------------------------------------------------------

    def send(self, body: dict, payload: bytes = b"") -> None:
        self._send(body, payload)

    def log(self, level: str, message: str) -> None:
        self.send({"type": "log", "level": level, "message": message})

    def _error(self, req_id: Optional[str], code: str, message: str, retryable: bool, prompt: Optional[int] = None) -> None:
        body: dict = {"type": "error", "code": code, "message": message, "retryable": retryable}
        if req_id is not None:
            body["id"] = req_id
        if prompt is not None:
            body["prompt"] = prompt
        self.send(body)

    def ready_message(self) -> dict:
        b = self.backend
        return {
            "type": "ready",
            "engine": b.engine,
            "version": b.version,
            "capacity": b.capacity,
            "vocab_size": b.vocab_size,
            "variant": b.variant,
            "max_input_len": b.max_input_len,
            "max_seq_len": b.max_seq_len,
            "protocol": PROTOCOL,
        }

    # --- input --------------------------------------------------------------------------------------

    def handle(self, body: dict, payload: bytes = b"") -> bool:
        """One message from the agent. Returns False when the worker should stop."""
        kind = body.get("type")
        if kind == "hello":
            if body.get("protocol", PROTOCOL) != PROTOCOL:
                self._error(None, "internal_error", f"agent speaks protocol {body.get('protocol')}, worker {PROTOCOL}", False)
                return False
            self.send(self.ready_message())
        elif kind == "generate":
            req_id = body.get("id")
            try:
                self._generate(body, payload)
            except RequestInvalid as exc:
                self._error(req_id if isinstance(req_id, str) else None, "invalid_frame", str(exc), False)
        elif kind == "cancel":
            self.cancel(body.get("id"))
        elif kind == "shutdown":
            for req_id in list(self.requests):
                self.cancel(req_id)
            return False
        else:
            self.log("warn", f"unknown message type {kind!r} ignored")
        return True

    def cancel(self, req_id: Any) -> None:
        req = self.requests.get(req_id) if isinstance(req_id, str) else None
        if req is None:
            return
        for run in req.runs:
            if not run.finished and not run.engine_done:
                self._cancel_backend(run)

    def _cancel_backend(self, run: _Run) -> None:
        try:
            self.backend.cancel(run.backend_id)
        except Exception as exc:  # the request ends with the engine's final response or the worker's restart
            self.log("warn", f"cancel of {run.req.id}/{run.index} failed: {exc}")

    def _generate(self, body: dict, payload: bytes) -> None:
        received = self._clock()
        req_id = body.get("id")
        if not isinstance(req_id, str) or not req_id or len(req_id) > MAX_ID_CHARS:
            raise RequestInvalid("generate needs a string id")
        if req_id in self.requests:
            raise RequestInvalid(f"request {req_id} is already running")
        header = body.get("header")
        if not isinstance(header, dict):
            raise RequestInvalid("generate needs a header object")
        variant = header.get("variant")
        if variant not in VARIANTS:
            raise RequestInvalid(f"unknown model variant {variant!r}")
        if self.backend.variant is not None and variant != self.backend.variant:
            raise RequestInvalid(f"this node serves {self.backend.variant}, not {variant}")
        images = _images(header.get("images", []), payload)
        prompts = header.get("prompts")
        if not isinstance(prompts, list) or not prompts:
            raise RequestInvalid("header.prompts must be a non-empty list")
        sampling = header.get("sampling") or {}
        if not isinstance(sampling, dict):
            raise RequestInvalid("header.sampling must be an object")
        stop = sampling.get("stop") or []
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestInvalid("sampling.stop must be a list of strings")
        want_max = sampling.get("max_tokens", 256)
        if isinstance(want_max, bool) or not isinstance(want_max, int) or want_max < 1:
            raise RequestInvalid("sampling.max_tokens must be a positive integer")
        logprobs = sampling.get("logprobs")

        b = self.backend
        if len(images) * IMAGE_SLOTS > b.max_table_rows:
            raise RequestInvalid(
                f"{len(images)} images need {len(images) * IMAGE_SLOTS} prompt-table rows; this engine takes {b.max_table_rows}"
            )
        inputs = []
        for p, segments in enumerate(prompts):
            try:
                ids = assemble_prompt(segments, b.vocab, b.vocab_size, len(images))
            except PromptError as exc:
                raise RequestInvalid(f"prompt {p}: {exc}") from None
            if len(ids) > b.max_input_len:
                raise RequestInvalid(f"prompt {p} is {len(ids)} tokens; this engine takes at most {b.max_input_len}")
            max_tokens = min(want_max, b.max_seq_len - len(ids))
            if max_tokens < 1:
                raise RequestInvalid(f"prompt {p} leaves no room to generate (max_seq_len {b.max_seq_len})")
            inputs.append((ids, max_tokens))

        req = _Request(req_id, received, want_logprobs=logprobs is not None)
        vision_start = self._clock()
        req.queue_ms = _ms(vision_start - received)
        if images:
            try:
                req.table = b.encode_images(images)
            except Exception as exc:
                self._error(req_id, "engine_failed", f"vision encoder failed: {exc}", True)
                return
        req.vision_ms = _ms(self._clock() - vision_start)

        end_id, stop_ids = b.vocab.stop_token_ids(variant)
        pad_id = b.vocab.stop_token_ids("qwen-vl")[0]
        self.requests[req_id] = req
        for p, (ids, max_tokens) in enumerate(inputs):
            args = EnqueueArgs(ids, max_tokens, sampling, end_id, pad_id, stop_ids, req.table, req.want_logprobs)
            try:
                backend_id = b.enqueue(args)
            except Exception as exc:
                for run in req.runs:
                    self._cancel_backend(run)
                    run.finished = True
                del self.requests[req_id]
                self._error(req_id, "engine_failed", f"engine refused prompt {p}: {exc}", True)
                return
            detok = IncrementalDetokenizer(b.vocab.token_bytes, stop)
            run = _Run(req, p, backend_id, detok, len(ids), self._clock(), frozenset((end_id, *stop_ids)))
            req.runs.append(run)
            self._runs[backend_id] = run

    # --- engine responses ---------------------------------------------------------------------------

    def on_responses(self, responses: Sequence[BackendResponse]) -> None:
        for r in responses:
            run = self._runs.get(r.backend_id)
            if run is None:
                continue
            if r.final or r.error:
                run.engine_done = True
                self._runs.pop(r.backend_id, None)
            req = run.req
            if run.finished or req.id not in self.requests:
                continue
            if r.error:
                self._fail_request(req, run.index, r.error)
                continue
            self._tokens(run, list(r.tokens), list(r.logprobs) if r.logprobs is not None else None)
            if not run.finished and r.final:
                self._finish(run, _FINISH.get((r.finish_reason or "").lower(), "stop"))

    def _tokens(self, run: _Run, tokens: list, logprobs: Optional[list]) -> None:
        if not tokens:
            return
        if run.first_token_at is None:
            run.first_token_at = self._clock()
        if logprobs is not None and len(logprobs) > len(tokens):
            logprobs = logprobs[-len(tokens) :]
        stop_at = next((i for i, t in enumerate(tokens) if t in run.stop_ids), None)
        kept = tokens if stop_at is None else tokens[:stop_at]
        run.completion_tokens += len(kept)
        run.unreported += len(kept)
        if run.req.want_logprobs and logprobs is not None:
            vocab = self.backend.vocab
            for t, lp in zip(kept, logprobs):
                run.unreported_logprobs.append(
                    {"token": vocab.token_bytes(t).decode("utf-8", errors="replace"), "logprob": float(lp)}
                )
        text = run.detok.push(kept)
        if run.detok.stopped or stop_at is not None:
            self._emit_tokens(run, text)
            self._finish(run, "stop")
        elif text:
            self._emit_tokens(run, text)

    def _emit_tokens(self, run: _Run, text: str) -> None:
        if not text and not run.unreported:
            return
        body: dict = {"type": "token", "id": run.req.id, "prompt": run.index, "text": text, "tokens": run.unreported}
        if run.req.want_logprobs:
            body["logprobs"] = run.unreported_logprobs
        self.send(body)
        run.unreported = 0
        run.unreported_logprobs = []

    def _finish(self, run: _Run, reason: str) -> None:
        self._emit_tokens(run, run.detok.finish())
        run.finished = True
        if not run.engine_done:
            # Stopped by us (stop string or stop token) while the engine may still be generating.
            self._cancel_backend(run)
        now = self._clock()
        first = run.first_token_at if run.first_token_at is not None else now
        self.send(
            {
                "type": "done",
                "id": run.req.id,
                "prompt": run.index,
                "finish_reason": reason,
                "usage": {"prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens},
                "timings": {
                    "queue_ms": run.req.queue_ms,
                    "vision_ms": run.req.vision_ms,
                    "prefill_ms": _ms(first - run.enqueued_at),
                    "decode_ms": _ms(now - first),
                },
            }
        )
        req = run.req
        if all(r.finished for r in req.runs):
            self.requests.pop(req.id, None)

    def _fail_request(self, req: _Request, prompt: int, message: str) -> None:
        for run in req.runs:
            if not run.finished:
                run.finished = True
                if not run.engine_done:
                    self._cancel_backend(run)
        self.requests.pop(req.id, None)
        self._error(req.id, "engine_failed", f"prompt {prompt}: {message}", True, prompt=prompt)

    def fail_all(self, message: str) -> None:
        """The engine itself failed: every request ends, the agent restarts the worker."""
        for req in list(self.requests.values()):
            for run in req.runs:
                run.finished = True
            self.requests.pop(req.id, None)
        self._runs.clear()
        self._error(None, "engine_failed", message, True)


def _images(descriptors: Any, payload: bytes) -> list:
    if not isinstance(descriptors, list):
        raise RequestInvalid("header.images must be a list")
    view = memoryview(payload)
    out = []
    spans = []
    for i, d in enumerate(descriptors):
        if not isinstance(d, dict):
            raise RequestInvalid(f"image {i} is not an object")
        dtype, offset, length = d.get("dtype"), d.get("offset"), d.get("length")
        if dtype not in IMAGE_BYTES:
            raise RequestInvalid(f"image {i}: dtype must be f16 or u8")
        if list(d.get("shape") or IMAGE_SHAPES[dtype]) != IMAGE_SHAPES[dtype]:
            raise RequestInvalid(f"image {i}: shape must be {IMAGE_SHAPES[dtype]} for {dtype}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (offset, length)) or offset < 0:
            raise RequestInvalid(f"image {i}: offset and length must be integers")
        if length != IMAGE_BYTES[dtype]:
            raise RequestInvalid(f"image {i}: {dtype} tensors are {IMAGE_BYTES[dtype]} bytes, not {length}")
        if offset + length > len(payload):
            raise RequestInvalid(f"image {i}: bytes {offset}..{offset + length} lie outside the {len(payload)}-byte payload")
        spans.append((offset, offset + length))
        out.append(ImageInput(dtype, view[offset : offset + length]))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise RequestInvalid("image tensors overlap in the payload")
    return out
