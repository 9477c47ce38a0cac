"""The bundled students side by side, from the model cards ``edge-deblur convert`` wrote (each
conversion measures its own student: quality on the held-out Levin set, MACs, and latency timed here
next to MobileNetV2-224 INT8 and scaled to the board). Prints the Markdown tables in
docs/BENCHMARKS.md.

    python benchmarks/students.py [CARD.json ...]     # default: edge_deblur/models/*.card.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rows(cards: list[dict]) -> str:
    lines = ["| target | widths (pruned from) | MACs 640x480 | vs teacher | model | PSNR (dB) | gain (dB) | "
             "teacher gain kept | INT8 vs float (dB) | here (ms) | MobileNetV2 here (ms) | MAC rate vs MobileNetV2 | "
             "expected on board (ms) | fps | budget (ms) |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for card in cards:
        q, lat, s = card["quality"], card["latency"], card["student"]
        final = q["rows"][-1]
        int8 = card["int8_vs_float"]
        agreement = "-" if int8 is None else f"{int8['psnr_db']:.1f} PSNR, {int8['within_1lsb']:.1%} within 1 LSB"
        model = next(card["files"][k]["path"] for k in ("onnx", "int8_tflite", "float_tflite") if card["files"][k])
        lines.append(
            f"| {card['target']['name']} | {tuple(s['widths'])} ({tuple(s['base']['widths'])}, blocks {tuple(s['blocks'])}"
            f"{', attention ' + str(s['attention']) if s.get('attention') else ''}) "
            f"| {s['macs'] / 1e6:.0f}M | {s['mac_reduction']:.1f}x fewer | `{model}` | {final['psnr']:.2f} "
            f"| +{q['student_gain_db']:.2f} | {q['gain_kept']:.0%} "
            f"| {agreement} "
            f"| {lat['student_ms']:.2f} | {lat['mobilenet_ms']:.2f} | {lat['mac_rate_ratio']:.2f} "
            f"| {lat['expected_ms']:.1f} | {lat['expected_fps']:.1f} | {lat['budget_ms']:.1f} |")
    return "\n".join(lines)


def quality(card: dict) -> str:
    lines = ["| method | PSNR (dB) | SSIM | PSNR vs teacher (dB) |", "|---|---:|---:|---:|"]
    for r in card["quality"]["rows"]:
        vs = "-" if r["psnr_vs_teacher"] is None else f"{r['psnr_vs_teacher']:.2f}"
        lines.append(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {vs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)] or sorted(
        (ROOT / "edge_deblur" / "models").glob("*.card.json"))
    cards = [json.loads(p.read_text()) for p in paths]
    print(rows(cards))
    for card in cards:
        print(f"\n{card['name']} ({card['quality']['dataset']}):\n")
        print(quality(card))


if __name__ == "__main__":
    main()
