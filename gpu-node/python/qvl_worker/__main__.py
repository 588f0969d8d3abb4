"""``python3 -m qvl_worker --engine-dir DIR``: the TensorRT-LLM worker that gpu-node's trtllm engine spawns.

Speaks the framed protocol of framing.py on stdin/stdout (see core.py for the messages). Exit codes:
0 after ``shutdown`` or end of input, 1 when the engine failed while serving, 2 on a protocol error,
3 when the engine could not be loaded. Everything it logs goes to stderr or as ``log`` messages.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


def parse_args(argv: list) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m qvl_worker", description=__doc__.splitlines()[0])
    p.add_argument("--engine-dir", required=True, help="output of `gpu-node build` (vision/, llm/, tokenizer/)")
    p.add_argument("--tokenizer-dir", help="the checkpoint's tokenizer (default: ENGINE_DIR/tokenizer)")
    p.add_argument("--capacity", type=int, help="in-flight batch size (default and maximum: the engine's max batch)")
    p.add_argument("--kv-cache-fraction", type=float, default=0.85, help="share of free GPU memory for the KV cache")
    return p.parse_args(argv)


def main(argv: list) -> NoReturn:
    args = parse_args(argv)
    from .server import main_with

    def load(log):
        from .trtllm_backend import load as load_trtllm  # imports torch/tensorrt_llm: GPU hosts only

        return load_trtllm(
            args.engine_dir,
            tokenizer_dir=args.tokenizer_dir,
            capacity=args.capacity,
            kv_cache_free_gpu_memory_fraction=args.kv_cache_fraction,
            log=log,
        )

    main_with(load)


if __name__ == "__main__":
    main(sys.argv[1:])
