"""qvl_worker: the Python side of gpu-node's `trtllm` engine (Qwen-VL on TensorRT-LLM).

Modules: framing (stdio IPC), prompt (segments -> ids), detok (incremental UTF-8 text), core (request
state machine), server (process loop), trtllm_backend (the GPU engine; imports TensorRT-LLM lazily),
build_vit (steps of `gpu-node build`), check_gpu (a GPU-host check of the image conversion). Only
trtllm_backend, build_vit and check_gpu need more than the standard library, and only when their
functions run.
"""
