"""Pillow's side of `npm run bench:preprocess`: Qwen-VL's reference preprocessing, timed.

usage: /usr/bin/python3 bench/pillow_preprocess.py FILE RUNS [RGB_OUT] [--mode exact|draft|decode]
  exact (default): Qwen-VL's reference, `Image.open(p).convert("RGB").resize((448, 448), Image.BICUBIC)`,
         then the float32 normalization to float16.
  draft: the same after `im.draft("RGB", (672, 672))` (JPEG only): libjpeg-turbo's DCT-scaled decode at
         the 1/N Pillow picks, then the same resize and normalization. Its f16 sha256 is our fast mode's
         (`quality=fast` decodes at that same 1/N). The JSON adds "dct_scale": N.
  decode: `Image.open(p).load()` only: the full-size decode, no convert, no resize, no tensor ("sha256": null).
Prints one JSON line: {"median_ms", "times_ms", "peak_rss_growth_bytes", "sha256"} (+ "dct_scale" in draft
mode). With RGB_OUT (exact or draft mode), also writes the 448x448x3 uint8 image there (the reference for
files without a fixture .rgb).
One process per file and mode, so peak RSS growth is this file's alone.
"""
import argparse
import hashlib
import json
import statistics
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)
DRAFT_SIZE = (672, 672)  # 1.5 x 448, what our fast mode asks for too


def normalize(im):
    rgb = np.asarray(im, dtype=np.uint8)
    x = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return ((x - MEAN) / STD).astype(np.float16), rgb


def preprocess(path):
    im = Image.open(path).convert("RGB").resize((448, 448), Image.BICUBIC)
    return normalize(im) + (None,)


def preprocess_draft(path):
    im = Image.open(path)
    width = im.size[0]
    # draft() returns (mode, box) with box = the original size / N, or None when it does nothing (not a
    # single-tile JPEG). N from the box, not width // im.size[0]: the drafted size is rounded up, so that
    # quotient can come out one short (8065 // 1009 = 7 at N = 8).
    drafted = im.draft("RGB", DRAFT_SIZE)
    scale = round(width / drafted[1][2]) if drafted else 1
    im = im.convert("RGB").resize((448, 448), Image.BICUBIC)
    return normalize(im) + (scale,)


def decode(path):
    Image.open(path).load()
    return None, None, None


MODES = {"exact": preprocess, "draft": preprocess_draft, "decode": decode}


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def current_rss_bytes():
    return status_kib("VmRSS") * 1024


def peak_rss_bytes():
    # VmHWM: the process's RSS high-water mark (ru_maxrss would also include the import phase's peak).
    return status_kib("VmHWM") * 1024


def main():
    parser = argparse.ArgumentParser(description="Pillow's side of npm run bench:preprocess")
    parser.add_argument("file")
    parser.add_argument("runs", type=int)
    parser.add_argument("rgb_out", nargs="?")
    parser.add_argument("--mode", choices=sorted(MODES), default="exact")
    args = parser.parse_args()
    if args.rgb_out and args.mode == "decode":
        parser.error("RGB_OUT needs a resized image: not with --mode decode")
    run = MODES[args.mode]
    base = current_rss_bytes()
    times = []
    tensor = rgb = scale = None
    for _ in range(args.runs):
        t = time.perf_counter()
        tensor, rgb, scale = run(args.file)
        times.append((time.perf_counter() - t) * 1000)
    if args.rgb_out:
        with open(args.rgb_out, "wb") as f:
            f.write(rgb.tobytes())
    out = {
        "median_ms": statistics.median(times),
        "times_ms": times,
        "peak_rss_growth_bytes": max(0, peak_rss_bytes() - base),
        "sha256": None if tensor is None else hashlib.sha256(tensor.astype("<f2").tobytes()).hexdigest(),
    }
    if args.mode == "draft":
        out["dct_scale"] = scale
    print(json.dumps(out))


if __name__ == "__main__":
    main()
