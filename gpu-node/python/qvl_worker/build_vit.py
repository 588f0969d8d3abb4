"""Steps of `gpu-node build` for Qwen-VL's vision encoder: ViT -> ONNX -> FP16 TensorRT plan, and a check.

    python3 -m qvl_worker.build_vit onnx    --checkpoint DIR --out FILE.onnx
    python3 -m qvl_worker.build_vit plan    --onnx FILE.onnx --plan FILE.plan [--min-batch 1 --opt-batch 1 --max-batch 8]
    python3 -m qvl_worker.build_vit inspect --plan FILE.plan      (prints the plan's I/O as JSON; exit 1 if wrong)

Modelled on NVIDIA/TensorRT-LLM examples/models/core/qwenvl/vit_onnx_trt.py (read at main, version.py
1.2.0rc2): the model is loaded with ``AutoModelForCausalLM.from_pretrained(..., fp16=True,
trust_remote_code=True)``, ``model.transformer.visual`` is exported with opset 17, input ``input`` (FP32
[B,3,448,448], dynamic batch), output ``output`` ([B,256,4096]), ``dynamo=False``; the plan is built with
``BuilderFlag.FP16`` and one optimization profile over the batch. Differences, on purpose:

- the export traces a fixed tensor instead of a demo picture (the graph does not depend on pixel values,
  and a build must not fetch anything);
- the ONNX model is parsed with ``parse_from_file`` so its external weight files (ViT-bigG in FP16 is over
  the 2 GB protobuf limit) are found next to it, and a parse or build failure exits non-zero instead of
  printing and going on;
- outputs are written to a temporary name and renamed, so an interrupted step leaves nothing that looks
  finished.

torch, tensorrt and transformers are imported inside the functions: the module imports anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

SIDE = 448
SLOTS = 256


def export_onnx(checkpoint: str, out: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = os.path.dirname(os.path.abspath(out))
    tmp_dir = out_dir + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, device_map="cuda", torch_dtype=torch.float16, fp16=True, trust_remote_code=True
    ).eval()
    visual = model.transformer.visual.eval()
    del model
    # Any FP32 tensor of the right shape traces the same graph; Qwen-VL's visual.py casts it to FP16 itself.
    sample = torch.linspace(-1.5, 1.5, 3 * SIDE * SIDE, dtype=torch.float32, device="cuda").view(1, 3, SIDE, SIDE)
    kwargs = dict(
        opset_version=17, input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "batch"}}
    )
    target = os.path.join(tmp_dir, os.path.basename(out))
    with torch.no_grad():
        try:
            # torch >= 2.9 defaults to the dynamo exporter, which does not do opset 17 (vit_onnx_trt.py).
            torch.onnx.export(visual, sample, target, dynamo=False, **kwargs)
        except TypeError:  # torch without the dynamo argument
            torch.onnx.export(visual, sample, target, **kwargs)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp_dir, out_dir)
    print(f"ONNX written to {out}", file=sys.stderr)


def build_plan(onnx: str, plan: str, min_batch: int, opt_batch: int, max_batch: int) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    try:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    except AttributeError:  # TensorRT 10: every network is explicit-batch
        flags = 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SystemExit(f"failed to parse {onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    if inp.name != "input":
        raise SystemExit(f"ONNX input is {inp.name!r}, expected 'input'")
    inp.shape = [-1, 3, SIDE, SIDE]
    profile.set_shape(inp.name, [min_batch, 3, SIDE, SIDE], [opt_batch, 3, SIDE, SIDE], [max_batch, 3, SIDE, SIDE])
    config.add_optimization_profile(profile)
    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SystemExit(f"TensorRT failed to build {plan}")
    os.makedirs(os.path.dirname(os.path.abspath(plan)), exist_ok=True)
    tmp = plan + ".tmp"
    with open(tmp, "wb") as f:
        f.write(serialized)
    os.replace(tmp, plan)
    print(f"plan written to {plan} in {time.time() - t0:.0f} s", file=sys.stderr)


def inspect_plan(plan: str, hidden: int) -> int:
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    with open(plan, "rb") as f:
        engine = runtime.deserialize_cuda_engine(f.read())
    if engine is None:
        print(json.dumps({"ok": False, "error": "plan does not deserialize"}))
        return 1
    tensors = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        tensors[name] = {
            "mode": str(engine.get_tensor_mode(name)).split(".")[-1],
            "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1],
            "shape": list(engine.get_tensor_shape(name)),
        }
    profile = [list(s) for s in engine.get_tensor_profile_shape("input", 0)] if "input" in tensors else None
    ok = (
        tensors.get("input", {}).get("dtype") == "FLOAT"
        and tensors.get("input", {}).get("shape", [])[1:] == [3, SIDE, SIDE]
        and tensors.get("output", {}).get("shape", [])[1:] == [SLOTS, hidden]
    )
    print(json.dumps({"ok": ok, "tensors": tensors, "profile": profile}))
    return 0 if ok else 1


def main(argv: list) -> int:
    p = argparse.ArgumentParser(prog="python3 -m qvl_worker.build_vit")
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("onnx")
    o.add_argument("--checkpoint", required=True)
    o.add_argument("--out", required=True)
    b = sub.add_parser("plan")
    b.add_argument("--onnx", required=True)
    b.add_argument("--plan", required=True)
    b.add_argument("--min-batch", type=int, default=1)
    b.add_argument("--opt-batch", type=int, default=1)
    b.add_argument("--max-batch", type=int, default=8)
    i = sub.add_parser("inspect")
    i.add_argument("--plan", required=True)
    i.add_argument("--hidden", type=int, default=4096)
    args = p.parse_args(argv)
    if args.cmd == "onnx":
        export_onnx(args.checkpoint, args.out)
    elif args.cmd == "plan":
        build_plan(args.onnx, args.plan, args.min_batch, args.opt_batch, args.max_batch)
    else:
        return inspect_plan(args.plan, args.hidden)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
