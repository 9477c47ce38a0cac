"""The shipped INT8 students against the same students with their output on the input's grid
(``converters.output_grid``: output scale 1/255, zero point -128, nothing retrained), side by side
in one run: quality on Kodak24 x Levin and by blur class (``converters.blur_classes``), and the
frame path's Python share and tiling cost at 640x480 (``benchmarks/runtime_overhead.py``'s clock).

    python benchmarks/output_grid.py --threads 2 --rounds 30 [--out build/grid]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from converters.blur_classes import class_cells, score_by_class, with_verdicts  # noqa: E402
from converters.output_grid import output_on_input_grid  # noqa: E402
from edge_deblur import Deblurrer, psnr  # noqa: E402
from runtime_overhead import InvokeClock, frame_640x480, timed_call  # noqa: E402

MODELS_DIR = ROOT / "edge_deblur" / "models"


def levin_pairs(crop: int = 256):
    from converters.data import make_eval_pairs
    from edge_deblur.pipeline import read_pairs

    with tempfile.TemporaryDirectory() as folder:
        make_eval_pairs(folder, kernels="levin", crop=crop)
        return [(b, s) for _, b, s, _ in read_pairs(folder)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", nargs="+", default=["student-rpi5", "student-rpi4"])
    ap.add_argument("--out", default=str(ROOT / "build" / "grid"))
    ap.add_argument("--threads", type=int, default=2, help="for the timing; quality runs on 1 thread")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    models = {}
    for name in args.students:
        models[name] = MODELS_DIR / f"{name}.tflite"
        models[f"{name} grid"] = output_on_input_grid(models[name], Path(args.out) / f"{name}.tflite")

    # Quality, one thread: Levin pairs and the blur-class cells, every model on the same crops.
    runners = {"teacher": Deblurrer.load("teacher", threads=1),
               **{label: Deblurrer.load(path, threads=1) for label, path in models.items()}}
    pairs = levin_pairs()
    blurred = float(np.mean([psnr(s, b) for b, s in pairs]))
    levin = {label: float(np.mean([psnr(s, r(b)) for b, s in pairs])) for label, r in runners.items()}
    print(f"Kodak24 x Levin (24 pairs, 256 px): blurred {blurred:.3f} dB, teacher {levin['teacher']:.3f}\n")
    print("| model | Levin PSNR | gain kept | blur-class cells passing | mean gain kept, 10 blurred cells | "
          "noise only 1/255 | noise only 3/255 |\n|---|---:|---:|---:|---:|---:|---:|")
    rows = score_by_class(class_cells(4, 256), runners)
    for label in models:
        verdicts = with_verdicts(rows, "teacher", label)
        kept = [r for r in verdicts if r["gain_kept"] is not None]
        mean_kept = np.mean([r["student_gain_db"] for r in kept]) / np.mean([r["teacher_gain_db"] for r in kept])
        noise = {r["noise_sigma"]: r["scores"][label]["psnr"] for r in verdicts if r["class"] == "noise only"}
        print(f"| {label} | {levin[label]:.3f} | {(levin[label] - blurred) / (levin['teacher'] - blurred):.1%} | "
              f"{sum(r['passed'] for r in verdicts)}/{len(verdicts)} | {mean_kept:.1%} | "
              f"{noise[1.0]:.2f} | {noise[3.0]:.2f} |")

    # Timing: one pass and 512-px tiles, both model forms, interleaved.
    frame = frame_640x480()
    configs = {}
    for label, path in models.items():
        for tile in (640, 512):
            configs[(label, tile)] = Deblurrer.load(path, threads=args.threads, tile=tile, overlap=32)
    clocks = {key: InvokeClock(d) for key, d in configs.items()}
    for key, d in configs.items():
        timed_call(d, clocks[key], frame)
    samples = {key: [] for key in configs}
    for _ in range(args.rounds):
        for key, d in configs.items():
            samples[key] += [timed_call(d, clocks[key], frame) for _ in range(args.repeats)]
    print(f"\n640x480, {args.threads} threads, {args.rounds} interleaved rounds x {args.repeats} calls, medians\n")
    print("| model | tile | median ms | invoke ms | Python ms | Python around invoke | vs one pass |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for (label, tile), s in samples.items():
        total = statistics.median(t for t, _ in s)
        base = statistics.median(t for t, _ in samples[(label, 640)])
        print(f"| {label} | {tile} | {1000 * total:.2f} | {1000 * statistics.median(i for _, i in s):.2f} | "
              f"{1000 * statistics.median(t - i for t, i in s):.2f} | "
              f"{statistics.median((t - i) / t for t, i in s):.1%} | {total / base - 1:+.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
