"""How noisy the expected-latency check is: the side-by-side timing of ``edge-deblur convert``
(student at 640x480 and MobileNetV2 1.0-224 INT8, interleaved; ``converters.reference``) run as the
conversion runs it (``--repeats`` repeats of ``--rounds`` rounds), several times over, on this host.

Each run prints its median expected latency on the target and the range of its repeats'
estimates; across runs, the spread of the medians is the noise a single check has to live with.
A check whose margin (budget minus estimate) is inside its own repeats' range reads "within noise".

    python benchmarks/latency_noise.py --student edge_deblur/models/student-rpi5.tflite --target rpi5 --runs 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.convert import latency_verdict  # noqa: E402
from converters.reference import expected_ms, host_cpu, mobilenet_v2_tflite, time_side_by_side  # noqa: E402
from targets import load_target  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", required=True, type=Path)
    parser.add_argument("--target", default="rpi5")
    parser.add_argument("--threads", type=int, default=None, help="default: the target's, at most this host's cores")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per repeat (convert's timing_rounds)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per run (convert's timing_repeats)")
    parser.add_argument("--runs", type=int, default=4, help="independent runs of the whole timing")
    args = parser.parse_args(argv)

    import os

    target = load_target(args.target)
    threads = args.threads or min(target.threads, os.cpu_count() or 1)
    frame = (1, target.frame[1], target.frame[0], 3)
    budget, reference = target.latency_budget_ms, target.reference.mobilenet_ms
    print(f"Host: {host_cpu()}, LiteRT, {threads} threads; {args.runs} runs of {args.repeats} repeats x "
          f"{args.rounds} rounds; budget {budget} ms on {args.target}\n")
    print("| run | expected ms (median) | range over repeats (ms) | verdict |")
    print("|---:|---:|---:|---|")
    medians = []
    for run in range(args.runs):
        side = time_side_by_side({"student": (args.student, frame), "mobilenet": (mobilenet_v2_tflite(), None)},
                                 threads=threads, rounds=args.rounds, repeats=args.repeats)
        median = expected_ms(side.medians_ms["student"], side.medians_ms["mobilenet"], reference)
        repeats = [expected_ms(s, m, reference) for s, m in zip(side.repeat_ms["student"], side.repeat_ms["mobilenet"])]
        spread = [min(repeats), max(repeats)]
        medians.append(median)
        print(f"| {run + 1} | {median:.1f} | {spread[0]:.1f}-{spread[1]:.1f} | {latency_verdict(median, spread, budget)} |")
    print(f"\nAcross runs: median {np.median(medians):.1f} ms, {min(medians):.1f}-{max(medians):.1f} ms "
          f"(spread {max(medians) - min(medians):.1f} ms, {100 * (max(medians) - min(medians)) / np.median(medians):.0f}%); "
          f"margin to the budget {budget - np.median(medians):+.1f} ms")
    return {"medians": medians}


if __name__ == "__main__":
    main()
