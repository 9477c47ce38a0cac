"""The shipped INT8 students against the same students with their output on the input's grid
(``converters.output_grid``: output scale 1/255, zero point -128, nothing retrained), side by side
in one run: quality on Kodak24 x Levin and by blur class (``converters.blur_classes``), and the
frame path's Python share and tiling cost at 640x480 (``benchmarks/runtime_overhead.py``'s clock).

    python benchmarks/output_grid.py --threads 2 --rounds 30 [--out build/grid]

The shipped students are on the grid since issue 14 part 3, so their twins are the same models;
``--before DIR`` compares the shipped files with the pre-rewrite ones in DIR instead (the same names,
each with its ``.json`` sidecar), e.g. taken from git:

    mkdir -p /tmp/before && for m in rpi5 rpi4; do for e in tflite json; do
      git show 0603c4b:edge_deblur/models/student-$m.$e > /tmp/before/student-$m.$e; done; done
    python benchmarks/output_grid.py --threads 2 --rounds 30 --before /tmp/before
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
from edge_deblur.metrics import ssim  # noqa: E402
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
    ap.add_argument("--before", help="a folder of pre-rewrite students (NAME.tflite and NAME.json) to compare "
                                     "the shipped ones with, instead of deriving grid twins of the shipped ones")
    args = ap.parse_args(argv)

    models, twins = {}, []  # twins: (label, label) pairs whose Levin outputs are compared pixel by pixel
    for name in args.students:
        if args.before:
            models[f"{name} before"] = Path(args.before) / f"{name}.tflite"
            models[name] = MODELS_DIR / f"{name}.tflite"
            twins.append((f"{name} before", name))
        else:
            models[name] = MODELS_DIR / f"{name}.tflite"
            models[f"{name} grid"] = output_on_input_grid(models[name], Path(args.out) / f"{name}.tflite")
            twins.append((name, f"{name} grid"))
    for label, path in models.items():
        d = Deblurrer.load(path, threads=1)
        grid = d.info.output_quant == d.info.input_quant
        print(f"{label}: {path}, output quantization {d.info.output_quant}{' (on the input grid)' if grid else ''}")
    print()

    # Quality, one thread: Levin pairs and the blur-class cells, every model on the same crops.
    runners = {"teacher": Deblurrer.load("teacher", threads=1),
               **{label: Deblurrer.load(path, threads=1) for label, path in models.items()}}
    pairs = levin_pairs()
    blurred = float(np.mean([psnr(s, b) for b, s in pairs]))
    outputs = {label: [r(b) for b, _ in pairs] for label, r in runners.items()}
    levin = {label: float(np.mean([psnr(s, o) for (_, s), o in zip(pairs, out)])) for label, out in outputs.items()}
    levin_ssim = {label: float(np.mean([ssim(s, o) for (_, s), o in zip(pairs, out)])) for label, out in outputs.items()}
    vs_teacher = {label: float(np.mean([psnr(t, o) for t, o in zip(outputs["teacher"], out)]))
                  for label, out in outputs.items()}
    print(f"Kodak24 x Levin (24 pairs, 256 px): blurred {blurred:.3f} dB (SSIM "
          f"{np.mean([ssim(s, b) for b, s in pairs]):.4f}), teacher {levin['teacher']:.3f} (SSIM "
          f"{levin_ssim['teacher']:.4f})\n")
    for a, b in twins:
        diff = np.concatenate([np.abs(x.astype(np.int16) - y).ravel() for x, y in zip(outputs[a], outputs[b])])
        print(f"{b} against {a} on those pairs: at most {diff.max()} level(s) apart, {np.mean(diff > 0):.1%} of the "
              f"values differ")
    print("\n| model | Levin PSNR | SSIM | PSNR vs teacher | gain kept | blur-class cells passing | "
          "mean gain kept, 10 blurred cells | noise only 1/255 | noise only 3/255 |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = score_by_class(class_cells(4, 256), runners)
    for label in models:
        verdicts = with_verdicts(rows, "teacher", label)
        kept = [r for r in verdicts if r["gain_kept"] is not None]
        mean_kept = np.mean([r["student_gain_db"] for r in kept]) / np.mean([r["teacher_gain_db"] for r in kept])
        noise = {r["noise_sigma"]: r["scores"][label]["psnr"] for r in verdicts if r["class"] == "noise only"}
        print(f"| {label} | {levin[label]:.3f} | {levin_ssim[label]:.4f} | {vs_teacher[label]:.3f} | {(levin[label] - blurred) / (levin['teacher'] - blurred):.1%} | "
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
