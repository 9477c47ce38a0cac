"""Expected latency of a student on each target, from a side-by-side timing with MobileNetV2 here.

We cannot time a Raspberry Pi here. So the student (at 640x480) and MobileNetV2 1.0-224 INT8 are
timed on the same LiteRT interpreter settings and threads, in interleaved rounds, and the student's
time is scaled by MobileNetV2's latency on the target (``targets/<name>.json``, ``reference``):

    expected_ms = student_ms_here * mobilenet_ms_on_target / mobilenet_ms_here

The achieved MACs per second of both say how far that scaling holds: it assumes the student uses
the hardware as well as MobileNetV2 does.

    python benchmarks/expected_latency.py --student student.tflite --threads 4 [--targets rpi4 rpi5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.reference import (MOBILENET_V2_SHAPE, expected_ms, host_cpu, mobilenet_v2_tflite,  # noqa: E402
                                  tflite_macs, time_side_by_side)
from targets import available_targets, load_target  # noqa: E402

FRAME = (480, 640)  # (height, width): the frame every target's latency budget is for


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", required=True, type=Path, help="the student's .tflite (free or 480x640 input)")
    parser.add_argument("--threads", type=int, default=4, help="LiteRT threads for both models")
    parser.add_argument("--targets", nargs="+", default=available_targets(), choices=available_targets())
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    args = parser.parse_args(argv)

    mobilenet = mobilenet_v2_tflite()
    h, w = FRAME
    timing = time_side_by_side({"student": (args.student, (1, h, w, 3)), "mobilenet_v2": (mobilenet, MOBILENET_V2_SHAPE)},
                               threads=args.threads, rounds=args.rounds)
    macs = {"student": tflite_macs(args.student, h, w), "mobilenet_v2": tflite_macs(mobilenet, *MOBILENET_V2_SHAPE[1:3])}
    ms = timing.medians_ms

    print(f"Host: {host_cpu()}, LiteRT, {args.threads} threads, median of {timing.rounds} interleaved rounds\n")
    print("| model | input | MACs | median ms here | achieved GMAC/s |")
    print("|---|---|---:|---:|---:|")
    inputs = {"student": f"{w}x{h}", "mobilenet_v2": f"{MOBILENET_V2_SHAPE[2]}x{MOBILENET_V2_SHAPE[1]}"}
    for name in ("student", "mobilenet_v2"):
        print(f"| {name} | {inputs[name]} | {macs[name] / 1e6:,.0f}M | {ms[name]:.2f} | {macs[name] / ms[name] / 1e6:.1f} |")
    efficiency = (macs["student"] / ms["student"]) / (macs["mobilenet_v2"] / ms["mobilenet_v2"])
    print(f"\nThe student reaches {efficiency:.0%} of MobileNetV2's MAC rate here.\n")

    print("| target | precision | MobileNetV2 ms there | basis | expected student ms | budget ms | fits | student MACs / mac_budget |")
    print("|---|---|---:|---|---:|---:|---|---:|")
    rows = {}
    for name in args.targets:
        target = load_target(name)
        ref = target.reference
        expected = expected_ms(ms["student"], ms["mobilenet_v2"], ref.mobilenet_ms)
        rows[name] = expected
        print(f"| {name} | {target.precision} | {ref.mobilenet_ms:g} | {ref.mobilenet_kind} | {expected:.1f} | "
              f"{target.latency_budget_ms:.1f} | {'yes' if expected <= target.latency_budget_ms else 'no'} | "
              f"{macs['student'] / target.mac_budget:.2f} |")
    print("\nSources and assumptions of the MobileNetV2 figures: targets/<name>.json, 'reference'.")
    return {"here_ms": ms, "macs": macs, "expected_ms": rows}


if __name__ == "__main__":
    main()
