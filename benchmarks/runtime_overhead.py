"""Runtime overheads, measured side by side in one run on one real 640x480 frame.

1. Tiling: a frame cut into overlapping windows against one pass over the same pixels.
2. Python around ``invoke()``: the whole ``Deblurrer.__call__`` against the time spent inside the
   interpreter's ``invoke`` during that call (quantization, layout, padding, blending and dtype
   conversion are the rest).

For an INT8 model both frame paths run side by side, interleaved (``--paths both``, the default):
``fused`` (``edge_deblur.framepath``, what ``Deblurrer`` does) and ``plain`` (``Deblurrer.fused =
False``: the lookups, float blend and conversions before issue 14). Each configuration has its own
interpreter. "vs one pass" compares with the same path's one pass.

    python benchmarks/runtime_overhead.py --model teacher --threads 2 --rounds 5 --repeats 3
    python benchmarks/runtime_overhead.py --model student-rpi5 --threads 2 --rounds 20 --repeats 3
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


class InvokeClock:
    """Wraps a LiteRT interpreter's ``invoke`` and accumulates the seconds spent inside it."""

    def __init__(self, deblurrer: Deblurrer):
        interp = deblurrer.runner.interp
        self.inner, self.seconds = interp.invoke, 0.0
        interp.invoke = self

    def __call__(self):
        t = time.perf_counter()
        self.inner()
        self.seconds += time.perf_counter() - t


def timed_call(deblurrer: Deblurrer, clock: InvokeClock, frame: np.ndarray) -> tuple[float, float]:
    """(seconds for the whole call, seconds of it inside invoke)."""
    clock.seconds = 0.0
    t = time.perf_counter()
    deblurrer(frame)
    return time.perf_counter() - t, clock.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all configurations")
    ap.add_argument("--repeats", type=int, default=3, help="calls per configuration per round")
    ap.add_argument("--tiles", type=int, nargs="+", default=[512, 256], help="tile sides to compare with one pass")
    ap.add_argument("--paths", choices=("both", "fused", "plain"), default="both",
                    help="frame paths to compare for an INT8 model (a float model has only the plain one)")
    ap.add_argument("--python-only", action="store_true",
                    help="also time each call with invoke() stubbed out: the Python alone, less sensitive to a "
                         "busy host than its share of a frame")
    args = ap.parse_args()
    frame = frame_640x480()
    print(f"machine: {platform.machine()} {platform.processor()}, {args.threads} threads; model {args.model}; frame 640x480; "
          f"{args.rounds} interleaved rounds x {args.repeats} calls, medians")

    fusable = Deblurrer.load(args.model, threads=1)._fused is not None
    paths = (["fused", "plain"] if args.paths == "both" else [args.paths]) if fusable else ["plain"]
    configs, bases = {}, {}
    for path in paths:
        suffix = f" ({path})" if fusable else ""
        for tile in [640, *args.tiles]:
            name = ("one pass" if tile == 640 else f"tile {tile}, overlap 32") + suffix
            d = configs[name] = Deblurrer.load(args.model, threads=args.threads, tile=tile, overlap=32)
            d.fused = path == "fused"
            bases[name] = "one pass" + suffix
        assert configs["one pass" + suffix].plan(480, 640).count == 1
    reference = {name: configs[name](frame) for name in configs}
    if len(paths) == 2:  # the paths agree bit for bit on this frame
        for name in configs:
            if name.endswith("(fused)"):
                twin = name.replace("(fused)", "(plain)")
                assert np.array_equal(reference[name], reference[twin]), f"{name} differs from {twin}"
        print("fused and plain outputs are bit-identical on this frame, in every configuration")
    clocks = {name: InvokeClock(d) for name, d in configs.items()}
    for name, d in configs.items():  # warm-up: allocation, XNNPACK weight packing
        timed_call(d, clocks[name], frame)

    samples = {name: [] for name in configs}
    for _ in range(args.rounds):  # interleaved, so machine noise hits every configuration alike
        for name, d in configs.items():
            samples[name] += [timed_call(d, clocks[name], frame) for _ in range(args.repeats)]

    medians = {name: statistics.median(t for t, _ in samples[name]) for name in configs}
    print("\n| configuration | windows | pixels processed / frame | median ms | invoke ms | Python ms | vs one pass | "
          "Python around invoke |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in configs.items():
        plan = d.plan(480, 640)
        total = medians[name]
        invoke = statistics.median(inv for _, inv in samples[name])
        python_ms = 1000 * statistics.median(t - inv for t, inv in samples[name])
        python_share = statistics.median((t - inv) / t for t, inv in samples[name])
        print(f"| {name} | {plan.count} | {plan.pixels_processed / (640 * 480):.3f} | {1000 * total:.2f} | "
              f"{1000 * invoke:.2f} | {python_ms:.2f} | {total / medians[bases[name]] - 1:+.1%} | {python_share:.1%} |")

    if args.python_only:
        for clock in clocks.values():
            clock.inner = lambda: None  # the interpreter's output stays the last real one's
        python = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, d in configs.items():
                python[name] += [timed_call(d, clocks[name], frame)[0] for _ in range(args.repeats)]
        print("\n| configuration | Python alone, invoke stubbed (median ms) |\n|---|---:|")
        for name in configs:
            print(f"| {name} | {1000 * statistics.median(python[name]):.2f} |")


if __name__ == "__main__":
    main()
