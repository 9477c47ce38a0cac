"""Runtime overheads, measured side by side in one run on one real 640x480 frame.

1. Tiling: a frame cut into overlapping windows against one pass over the same pixels.
2. Python around ``invoke()``: the whole ``Deblurrer.__call__`` against the time spent inside the
   interpreter's ``invoke`` (quantization, layout, padding, blending and dtype conversion are the rest).

    python benchmarks/runtime_overhead.py --model teacher --threads 2 --repeats 15
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from edge_deblur import Deblurrer, read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def frame_640x480() -> np.ndarray:
    image = read_image(DATA / "photos" / "kodak24" / "kodim05.png")  # 500x500
    return cv2.resize(image, (640, 480), interpolation=cv2.INTER_CUBIC)


def timed_invokes(deblurrer: Deblurrer) -> list[float]:
    """Wrap the interpreter's invoke to collect its durations."""
    interp = deblurrer.runner.interp
    inner, spent = interp.invoke, []

    def invoke():
        t = time.perf_counter()
        inner()
        spent.append(time.perf_counter() - t)

    interp.invoke = invoke
    return spent


def median_call(fn, repeats: int) -> float:
    fn(), fn()  # warm-up: allocation, XNNPACK packing
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--tiles", type=int, nargs="+", default=[512, 256], help="tile sides to compare with one pass")
    args = ap.parse_args()
    frame = frame_640x480()
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads; model {args.model}; frame 640x480")

    one_pass = Deblurrer.load(args.model, threads=args.threads, tile=640)
    assert one_pass.plan(480, 640).count == 1
    rounds = {"one pass": one_pass}
    for tile in args.tiles:
        rounds[f"tile {tile}"] = Deblurrer.load(args.model, threads=args.threads, tile=tile, overlap=32)

    # interleave the configurations so that machine noise hits them alike
    times = {name: [] for name in rounds}
    invokes = {name: timed_invokes(d) for name, d in rounds.items()}
    for _ in range(3):
        for name, d in rounds.items():
            times[name].append(median_call(lambda: d(frame), max(1, args.repeats // 3)))
    base = statistics.median(times["one pass"])
    print("\n| configuration | windows | pixels processed / frame | median ms | vs one pass | Python around invoke |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, d in rounds.items():
        plan = d.plan(480, 640)
        total = statistics.median(times[name])
        per_frame_invoke = statistics.median(invokes[name][-plan.count * 5 :]) * plan.count
        python_share = (total - per_frame_invoke) / total
        print(f"| {name} | {plan.count} | {plan.pixels_processed / (640 * 480):.3f} | {1000 * total:.1f} | "
              f"{total / base - 1:+.1%} | {python_share:.1%} |")


if __name__ == "__main__":
    main()
