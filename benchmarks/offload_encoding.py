"""What a lossy offload encoding costs in quality and saves in bytes, measured through the server.

Frames: ``--size`` centre crops of held-out Kodak24 photos blurred by Levin et al.'s measured
camera-shake kernels (the evaluation forward model, noise 0.01; the same frames as
benchmarks/partition_links.py). Each goes to ``edge-deblur serve`` (in this process, the teacher,
1 thread) by ``Offload`` with each encoding, up and down. Per encoding: bytes per frame each way,
PSNR of the result against the lossless offload's result (pooled over the frames) (the cost of the encoding alone) and
against the sharp photo (what the user gets), and the median round trip on loopback.

    python benchmarks/offload_encoding.py --frames 8 --size 480x320
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from partition_links import frames_of  # noqa: E402

from edge_deblur.metrics import psnr  # noqa: E402
from edge_deblur.partition import Offload, OffloadConfig  # noqa: E402
from edge_deblur.serve.server import RunningServer, ServeConfig  # noqa: E402

ENCODINGS = ["raw", "png", "jpeg:95", "jpeg:90", "jpeg:75", "jpeg:50", "webp:95", "webp:90", "webp:75"]


def measure(url: str, encoding: str, pairs, lossless: list[np.ndarray] | None):
    offload = Offload(OffloadConfig(url, deadline_s=120, encoding=encoding), local=lambda f: f)
    offload(pairs[0][0])  # the connection and the server's allocation for this size
    offload.summary.bytes_up = offload.summary.bytes_down = offload.summary.offloaded = 0
    outs, times = [], []
    for blurred, _ in pairs:
        start = time.perf_counter()
        outs.append(offload(blurred))
        times.append(1000 * (time.perf_counter() - start))
    offload.close()
    s = offload.summary
    assert s.offloaded == len(pairs), str(s)
    vs_sharp = float(np.mean([psnr(o, sharp) for o, (_, sharp) in zip(outs, pairs)]))
    vs_lossless = None if lossless is None else psnr(np.stack(lossless), np.stack(outs))  # pooled over the frames
    return outs, s.bytes_up / len(pairs), s.bytes_down / len(pairs), vs_sharp, vs_lossless, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="480x320")  # the held-out photos are 500x500
    ap.add_argument("--encodings", nargs="+", default=ENCODINGS)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    pairs = frames_of(args.frames, (w, h))
    print(f"{args.frames} frames of {w}x{h} ({w * h * 3 / 1e3:.0f} kB raw); {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}; blurred {np.mean([psnr(b, s) for b, s in pairs]):.2f} dB\n")
    print("| encoding | up kB/frame | down kB/frame | dB vs lossless offload | dB vs sharp | loopback ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    with RunningServer(ServeConfig(port=0, grpc_port=None, threads=1)) as server:
        url = f"http://{server.http_url}"
        reference, *_ = measure(url, "raw", pairs, None)
        for encoding in args.encodings:
            _, up, down, sharp_db, lossless_db, ms = measure(url, encoding, pairs, reference)
            exact = "identical" if lossless_db == float("inf") else f"{lossless_db:.2f}"
            print(f"| {encoding} | {up / 1e3:.0f} | {down / 1e3:.0f} | {exact} | {sharp_db:.2f} | {ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
