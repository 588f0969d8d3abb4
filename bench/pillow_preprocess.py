"""Pillow's side of `npm run bench:preprocess`: Qwen-VL's reference preprocessing, timed.

usage: /usr/bin/python3 bench/pillow_preprocess.py FILE RUNS [RGB_OUT]
Prints one JSON line: {"median_ms", "times_ms", "peak_rss_growth_bytes", "sha256"}. With RGB_OUT, also
writes the 448x448x3 uint8 image there (the reference for files without a fixture .rgb).
One process per file, so peak RSS growth is this file's alone.
"""
import hashlib
import json
import statistics
import sys
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def preprocess(path):
    im = Image.open(path).convert("RGB").resize((448, 448), Image.BICUBIC)
    rgb = np.asarray(im, dtype=np.uint8)
    x = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return ((x - MEAN) / STD).astype(np.float16), rgb


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
    path, runs = sys.argv[1], int(sys.argv[2])
    base = current_rss_bytes()
    times = []
    tensor = None
    for _ in range(runs):
        t = time.perf_counter()
        tensor, rgb = preprocess(path)
        times.append((time.perf_counter() - t) * 1000)
    if len(sys.argv) > 3:
        with open(sys.argv[3], "wb") as f:
            f.write(rgb.tobytes())
    print(json.dumps({
        "median_ms": statistics.median(times),
        "times_ms": times,
        "peak_rss_growth_bytes": max(0, peak_rss_bytes() - base),
        "sha256": hashlib.sha256(tensor.astype("<f2").tobytes()).hexdigest(),
    }))


if __name__ == "__main__":
    main()
