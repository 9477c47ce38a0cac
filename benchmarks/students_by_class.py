"""The shipped students and the teacher by blur class (issue 14): held-out Kodak24 crops x held-out
kernels of six classes at two noise levels (``converters.blur_classes``), the check "keeps >= 90% of
the teacher's gain" applied to every (class, noise) cell. Prints one Markdown table per student.

    python benchmarks/students_by_class.py --threads 1 [--photos 4] [--crop 256] [--json out.json]
    python benchmarks/students_by_class.py --cards [CARD.json ...]   # the tables the cards hold
    python benchmarks/students_by_class.py --threads 1 --models A.tflite B.tflite --side-by-side
        # also one table of every model's PSNR and gain kept per cell, and their means over the
        # blurred cells (a student before and after, scored in one run on the same crops)

The teacher is the bundled float ``teacher.tflite`` run by the runtime (``edge-deblur convert``
runs it through its own source instead); every model sees the same uint8 crops, one pass each.
With ``--cards`` nothing is run: the ``quality.by_class`` sections ``edge-deblur convert`` writes
(default: every bundled card that has one) are printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.blur_classes import (  # noqa: E402
    by_class_check, by_class_summary, by_class_table, class_cells, markdown_table, score_by_class, with_verdicts,
)

STUDENTS = ("student-rpi5", "student-rpi4", "student-jetson-orin")


def print_summary(name: str, summary: dict) -> None:
    check = by_class_check(summary)
    print(f"\n{name} ({summary['dataset']}); {'pass' if check['passed'] else 'FAIL'}: {check['detail']}\n")
    print(markdown_table(by_class_table(summary)))


def from_cards(paths: list[str]) -> int:
    cards = [Path(p) for p in paths] or sorted((ROOT / "edge_deblur" / "models").glob("*.card.json"))
    shown = 0
    for path in cards:
        card = json.loads(path.read_text())
        summary = (card.get("quality") or {}).get("by_class")
        if summary is None:
            print(f"{path.name}: no quality.by_class (made before issue 14's validation; run this without --cards)")
            continue
        print_summary(card["name"], summary)
        shown += 1
    return 0 if shown or not paths else 1


def side_by_side(summaries: dict[str, dict]) -> str:
    """One Markdown table: per (class, noise) cell the input's and teacher's PSNR, then each model's
    PSNR, gain kept and verdict; a last row with the means over the cells where the teacher gains."""
    names = list(summaries)
    first = summaries[names[0]]
    head = ["class", "noise", "input PSNR", "teacher PSNR"]
    for name in names:
        head += [f"{Path(name).stem} PSNR", f"{Path(name).stem} kept", f"{Path(name).stem} verdict"]
    table = [head]
    for i, r in enumerate(first["rows"]):
        row = [r["class"], f"{r['noise_sigma']:g}/255", f"{r['scores']['blurred']['psnr']:.2f}",
               f"{r['scores'][first['teacher']]['psnr']:.2f}"]
        for name in names:
            mine = summaries[name]["rows"][i]
            kept = "—" if mine["gain_kept"] is None else f"{mine['gain_kept']:.0%}"
            row += [f"{mine['scores'][name]['psnr']:.2f}", kept, "pass" if mine["passed"] else "FAIL"]
        table.append(row)
    gaining = [i for i, r in enumerate(first["rows"]) if r["gain_kept"] is not None]
    teacher_gain = sum(first["rows"][i]["teacher_gain_db"] for i in gaining) / max(len(gaining), 1)
    mean = [f"mean of the {len(gaining)} cells with a gain", "", "", f"{teacher_gain:+.2f} dB gain"]
    for name in names:
        gain = sum(summaries[name]["rows"][i]["student_gain_db"] for i in gaining) / max(len(gaining), 1)
        passed = sum(r["passed"] for r in summaries[name]["rows"])
        mean += [f"{gain:+.2f} dB gain", f"{gain / teacher_gain:.0%}" if teacher_gain > 0 else "—",
                 f"{passed} of {len(first['rows'])} pass"]
    table.append(mean)
    return markdown_table(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--photos", type=int, default=4, help="photos per (class, noise) cell")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--models", nargs="+", default=list(STUDENTS), help="bundled students (or model files)")
    ap.add_argument("--teacher", default="teacher")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--side-by-side", action="store_true", help="also one table of all models, cell by cell")
    ap.add_argument("--cards", nargs="*", help="print the tables of these cards (none named: the bundled ones)")
    args = ap.parse_args(argv)
    if args.cards is not None:
        return from_cards(args.cards)

    from edge_deblur import Deblurrer

    started = time.monotonic()
    cells = class_cells(args.photos, args.crop)
    methods = {"teacher": Deblurrer.load(args.teacher, threads=args.threads)}
    methods.update({m: Deblurrer.load(m, threads=args.threads) for m in args.models})
    rows = score_by_class(cells, methods)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {args.threads} thread(s); "
          f"{sum(len(c.pairs) for c in cells)} pairs x {len(methods)} models in {time.monotonic() - started:.0f} s")
    summaries = {}
    for m in args.models:
        summaries[m] = by_class_summary(with_verdicts(rows, "teacher", m), "teacher", m, args.photos, args.crop)
        print_summary(Path(m).stem, summaries[m])
    if args.side_by_side:
        print("\nside by side (mean kept: the mean student gain over the mean teacher gain)\n")
        print(side_by_side(summaries))
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
