"""GPU-host self-check of the worker's image conversion: ``python3 -m qvl_worker.check_gpu FIXTURES_DIR``.

FIXTURES_DIR holds 448x448 RGB images as raw ``<name>.rgb`` (u8 HWC, Pillow's resize output) and a
``MANIFEST.json`` whose ``items`` give each ``file`` and its ``reference_f16_sha256`` (the sha256 of
float16(the reference float32 tensor)), as the repository's shared image fixtures do. For each image the
u8 path of trtllm_backend (copy to the GPU, /255, CLIP mean/std, in float32) is rounded to float16 and its
sha256 compared with the reference; the f16 path must give back exactly the values it was sent.
Needs torch with CUDA only (no TensorRT, no weights). Exit 0 when every image matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

from .core import ImageInput
from .trtllm_backend import CLIP_MEAN, CLIP_STD, TrtllmBackend


def main(argv: list) -> int:
    import torch

    if len(argv) != 1:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 64
    fixtures = argv[0]
    dev = torch.device("cuda")
    backend = TrtllmBackend(
        torch=torch,
        device=dev,
        scale=torch.full((3, 1, 1), 255.0, dtype=torch.float32, device=dev),
        mean=torch.tensor(CLIP_MEAN, dtype=torch.float32, device=dev).view(3, 1, 1),
        std=torch.tensor(CLIP_STD, dtype=torch.float32, device=dev).view(3, 1, 1),
    )
    with open(os.path.join(fixtures, "MANIFEST.json"), encoding="utf-8") as f:
        items = json.load(f)["items"]
    failures = checked = 0
    for item in items:
        path = os.path.join(fixtures, f"{item['file']}.rgb")
        if not item.get("reference_f16_sha256") or not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != 448 * 448 * 3:
            continue
        x = backend._to_input(ImageInput("u8", memoryview(data)))
        f16 = x.half().contiguous().cpu().view(torch.uint8).numpy().tobytes()
        u8_ok = hashlib.sha256(f16).hexdigest() == item["reference_f16_sha256"]
        back = backend._to_input(ImageInput("f16", memoryview(f16)))
        f16_ok = bool((back == x.half().float()).all())
        checked += 1
        failures += not (u8_ok and f16_ok)
        print(f"{item['file']}: u8 -> f16 {'matches the reference' if u8_ok else 'DIFFERS'}; f16 path {'exact' if f16_ok else 'WRONG'}")
    print(f"{checked} images, {failures} failed")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
