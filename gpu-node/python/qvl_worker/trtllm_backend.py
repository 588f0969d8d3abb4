"""The real engine: the Qwen-VL ViT as a TensorRT plan + the Qwen LLM through TensorRT-LLM's Executor API.

Runs only on a GPU host with TensorRT-LLM installed. torch, tensorrt, tensorrt_llm and transformers are
imported inside :func:`load` and the methods below, never at module import, so the rest of the package
(and its tests) needs only the standard library.

Written against NVIDIA/TensorRT-LLM (read at main, tensorrt_llm/version.py 1.2.0rc2; the Qwen-VL example
and the Executor bindings have the same shape since the 1.0 line):

- examples/models/core/qwenvl/run.py: ``vit_process`` (``Session.from_serialized_engine``, ``infer_shapes``
  with ``TensorInfo("input", trt.DataType.FLOAT, shape)``, ``run(inputs, outputs, stream)``, output
  ``"output"`` [B,256,4096]); ``qwen_infer`` (fake prompt ids ``vocab_size + i`` between ``<img>``/``</img>``;
  ``vocab_size`` from the model config); ``get_model`` (end id ``im_end`` for ChatML, ``eos`` for raw).
- examples/models/core/qwenvl/vit_onnx_trt.py: ``Preprocss`` (ToTensor then Normalize with CLIP mean/std).
- tensorrt_llm/runtime/model_runner_cpp.py: ``from_dir`` (``ExecutorConfig``, ``KvCacheConfig``,
  ``Executor(Path(engine_dir), ModelType.DECODER_ONLY, config)``), ``_prepare_ptuning_executor``
  (``PromptTuningConfig(embedding_table=table)`` with a [rows, hidden] table in the model dtype on the GPU),
  ``generate`` (``Request(input_token_ids=..., max_tokens=..., streaming=True, ...)``, ``enqueue_requests``),
  ``_stream`` (``await_responses()``, ``response.result.is_final``), ``_fill_output`` (``has_error()``,
  ``error_msg``, ``output_token_ids[0]``, ``log_probs[0]``).
- cpp/tensorrt_llm/pybind/executor/{executor,request,executorConfig}.cpp: ``await_responses(timeout=)``,
  ``cancel_request(id)``, ``FinishReason`` (END_ID, STOP_WORDS, LENGTH, TIMED_OUT, CANCELLED),
  ``SamplingConfig(beam_width, *, top_k, top_p, seed, temperature, repetition_penalty)``,
  ``OutputConfig(return_log_probs, ..., exclude_input_from_output)``,
  ``KvCacheConfig(enable_block_reuse, ..., free_gpu_memory_fraction)``.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any, Callable, Optional

from .core import IMAGE_SLOTS, TENSOR_SIDE, BackendResponse, EnqueueArgs, ImageInput
from .prompt import IMG_START, QwenVocab

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIT_PLAN = os.path.join("vision", "visual_encoder_fp16.plan")


def engine_layout(engine_dir: str) -> dict:
    """Where `gpu-node build` puts things (see gpu-node/src/commands/build.ts)."""
    return {
        "llm": os.path.join(engine_dir, "llm"),
        "vit_plan": os.path.join(engine_dir, VIT_PLAN),
        "tokenizer": os.path.join(engine_dir, "tokenizer"),
        "manifest": os.path.join(engine_dir, "manifest.json"),
    }


def read_engine_config(engine_dir: str) -> dict:
    """The limits the worker needs, from the LLM engine's config.json (as run.py's ``get_model`` reads it)."""
    layout = engine_layout(engine_dir)
    with open(os.path.join(layout["llm"], "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    pretrained, build = config["pretrained_config"], config["build_config"]
    variant = None
    try:
        with open(layout["manifest"], encoding="utf-8") as f:
            variant = json.load(f).get("checkpoint", {}).get("variant")
    except FileNotFoundError:
        pass
    return {
        "vocab_size": int(pretrained["vocab_size"]),
        "hidden_size": int(pretrained["hidden_size"]),
        "dtype": pretrained.get("dtype", "float16"),
        "max_batch_size": int(build["max_batch_size"]),
        "max_input_len": int(build["max_input_len"]),
        "max_seq_len": int(build["max_seq_len"]),
        "max_table_rows": int(build.get("max_prompt_embedding_table_size", 0)),
        "variant": variant,
    }


class TrtllmBackend:
    engine = "trtllm"

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)

    # --- vision -------------------------------------------------------------------------------------

    def _to_input(self, image: ImageInput) -> Any:
        """One request image -> FP32 [3,448,448] on the GPU, normalized as the reference does it."""
        torch = self.torch
        raw = torch.frombuffer(bytearray(image.data), dtype=torch.uint8).to(self.device)
        if image.dtype == "f16":
            return raw.view(torch.float16).view(3, TENSOR_SIDE, TENSOR_SIDE).to(torch.float32)
        # torchvision ToTensor (HWC -> CHW, float32 / 255) then Normalize (sub mean, div std), in float32.
        # 255 is a device tensor, not a Python scalar: PyTorch's CUDA division by a scalar multiplies by its
        # reciprocal, which is not always the correctly rounded quotient the reference computes.
        x = raw.view(TENSOR_SIDE, TENSOR_SIDE, 3).permute(2, 0, 1).to(torch.float32).div(self.scale)
        return x.sub(self.mean).div(self.std)

    def encode_images(self, images: list) -> Any:
        torch, trt = self.torch, self.trt
        # Everything on the current stream, as run.py's vit_process does, so the conversion kernels, the
        # TensorRT enqueue and the copy out are ordered without extra events.
        stream = torch.cuda.current_stream(self.device)
        x = torch.stack([self._to_input(img) for img in images]).contiguous()
        parts = []
        for start in range(0, x.shape[0], self.vit_max_batch):
            chunk = x[start : start + self.vit_max_batch].contiguous()
            info = self.vit.infer_shapes([self.TensorInfo("input", trt.DataType.FLOAT, tuple(chunk.shape))])
            outputs = {
                t.name: torch.empty(tuple(t.shape), dtype=self.trt_to_torch[t.dtype], device=self.device) for t in info
            }
            if not self.vit.run({"input": chunk}, outputs, stream.cuda_stream):
                raise RuntimeError("TensorRT ViT execution failed")
            parts.append(outputs["output"])
        stream.synchronize()
        emb = torch.cat(parts) if len(parts) > 1 else parts[0]  # [K, 256, hidden]
        if emb.shape[1] != IMAGE_SLOTS or emb.shape[2] != self.hidden_size:
            raise RuntimeError(f"ViT output {tuple(emb.shape)}, expected [K, {IMAGE_SLOTS}, {self.hidden_size}]")
        # One table per request, rows in image order: image i's slot j is row i*256 + j.
        return emb.reshape(-1, emb.shape[-1]).to(self.model_dtype).contiguous()

    # --- LLM ----------------------------------------------------------------------------------------

    def _sampling(self, s: dict) -> Any:
        kw: dict = {}
        temperature = float(s.get("temperature", 0) or 0)
        if temperature <= 0:
            kw["top_k"] = 1  # greedy
        else:
            kw["temperature"] = temperature
            kw["top_p"] = float(s.get("top_p", 1) or 1)
            if int(s.get("top_k", 0) or 0) > 0:
                kw["top_k"] = int(s["top_k"])
        rp = float(s.get("repetition_penalty", 1) or 1)
        if rp != 1:
            kw["repetition_penalty"] = rp
        if s.get("seed") is not None:
            kw["seed"] = int(s["seed"])
        return self.tle.SamplingConfig(1, **kw)

    def enqueue(self, args: EnqueueArgs) -> int:
        tle = self.tle
        request = tle.Request(
            input_token_ids=args.input_ids,
            max_tokens=args.max_tokens,
            streaming=True,
            sampling_config=self._sampling(args.sampling),
            output_config=tle.OutputConfig(return_log_probs=args.logprobs, exclude_input_from_output=True),
            end_id=args.end_id,
            pad_id=args.pad_id,
            stop_words=[[t] for t in args.stop_token_ids] or None,
            prompt_tuning_config=tle.PromptTuningConfig(embedding_table=args.table) if args.table is not None else None,
        )
        return int(self.executor.enqueue_request(request))

    def cancel(self, backend_id: int) -> None:
        self.executor.cancel_request(backend_id)

    def poll(self, timeout_s: float) -> list:
        out = []
        for r in self.executor.await_responses(timeout=timedelta(seconds=timeout_s)):
            if r.has_error():
                out.append(BackendResponse(int(r.request_id), final=True, error=str(r.error_msg)))
                continue
            res = r.result
            tokens = list(res.output_token_ids[0]) if res.output_token_ids else []
            logprobs = list(res.log_probs[0]) if res.log_probs else None
            reason = res.finish_reasons[0].name.lower() if res.is_final and res.finish_reasons else None
            out.append(BackendResponse(int(r.request_id), tokens, logprobs, bool(res.is_final), reason))
        return out

    def shutdown(self) -> None:
        self.executor.shutdown()


def load(
    engine_dir: str,
    *,
    tokenizer_dir: Optional[str] = None,
    capacity: Optional[int] = None,
    kv_cache_free_gpu_memory_fraction: float = 0.85,
    log: Callable[[str, str], None] = lambda level, message: None,
) -> TrtllmBackend:
    import tensorrt as trt
    import tensorrt_llm
    import torch
    from tensorrt_llm.bindings import executor as tle
    from tensorrt_llm.runtime import Session, TensorInfo
    from transformers import AutoTokenizer

    layout = engine_layout(engine_dir)
    cfg = read_engine_config(engine_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or layout["tokenizer"], trust_remote_code=True)
    vocab = QwenVocab(tokenizer)
    log("info", f"tokenizer loaded; <img> is {vocab.id(IMG_START)}; prompt-table ids start at {cfg['vocab_size']}")

    device = torch.device("cuda")
    with open(layout["vit_plan"], "rb") as f:
        vit = Session.from_serialized_engine(f.read())
    try:
        vit_max_batch = int(vit.engine.get_tensor_profile_shape("input", 0)[2][0])
    except Exception:
        vit_max_batch = 1
    log("info", f"ViT plan loaded (max batch {vit_max_batch})")

    max_batch = min(capacity or cfg["max_batch_size"], cfg["max_batch_size"])
    config = tle.ExecutorConfig(
        max_beam_width=1,
        # Block reuse is off: every request's image slots use the same ids (vocab_size + i), so a cached
        # KV block for one image would be reused for another image's prompt.
        kv_cache_config=tle.KvCacheConfig(enable_block_reuse=False, free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction),
        batching_type=tle.BatchingType.INFLIGHT,
        max_batch_size=max_batch,
    )
    executor = tle.Executor(layout["llm"], tle.ModelType.DECODER_ONLY, config)
    log("info", f"LLM engine loaded (TensorRT-LLM {tensorrt_llm.__version__}, max batch {max_batch})")

    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    return TrtllmBackend(
        torch=torch,
        trt=trt,
        tle=tle,
        TensorInfo=TensorInfo,
        trt_to_torch={trt.float16: torch.float16, trt.float32: torch.float32, trt.bfloat16: torch.bfloat16},
        device=device,
        scale=torch.full((3, 1, 1), 255.0, dtype=torch.float32, device=device),
        mean=torch.tensor(CLIP_MEAN, dtype=torch.float32, device=device).view(3, 1, 1),
        std=torch.tensor(CLIP_STD, dtype=torch.float32, device=device).view(3, 1, 1),
        vit=vit,
        vit_max_batch=max(1, vit_max_batch),
        executor=executor,
        vocab=vocab,
        version=str(tensorrt_llm.__version__),
        capacity=max_batch,
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        model_dtype=dtypes.get(cfg["dtype"], torch.float16),
        variant=cfg["variant"],
        max_input_len=cfg["max_input_len"],
        max_seq_len=cfg["max_seq_len"],
        max_table_rows=cfg["max_table_rows"],
    )
