"""Validation by blur class (converters/blur_classes.py, issue 14): the held-out cells are what they
say (six classes x two noise levels on Kodak24, balanced photos, kernels of the stated sizes,
deterministic), the per-cell rule (90% of the teacher's gain, or no harm where the teacher gains
< 0.1 dB) decides as written, and a real student scored against a real teacher gets a verdict per
cell that the report prints."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

from converters.blur_classes import (
    BLUR_CLASSES, CLASS_SEED, NOISE_LEVELS, by_class_check, by_class_summary, by_class_table, class_cells,
    evaluate_by_class, markdown_table, verdict,
)
from edge_deblur import Deblurrer, psnr


@pytest.fixture(scope="module")
def cells(data_dir):
    return class_cells(photos_per_cell=4, crop=256)


def test_cells_cover_every_class_and_noise_level_with_balanced_photos(cells):
    assert [(c.blur, c.noise_sigma) for c in cells] == [(b.name, s) for b in BLUR_CLASSES for s in NOISE_LEVELS]
    assert len(cells) == 12 and all(len(c.pairs) == 4 for c in cells)
    counts = Counter(name for c in cells for name, _, _ in c.pairs)
    assert len(counts) == 24 and set(counts.values()) == {2}  # every Kodak photo exactly twice
    assert all(b.shape == s.shape == (256, 256, 3) and b.dtype == np.uint8 for c in cells for _, b, s in c.pairs)


def test_cells_are_deterministic_and_the_seed_changes_them(cells):
    again = class_cells(photos_per_cell=4, crop=256)
    assert all(np.array_equal(a[1], b[1]) for x, y in zip(cells, again) for a, b in zip(x.pairs, y.pairs))
    other = class_cells(photos_per_cell=1, crop=256, seed=CLASS_SEED + 1)
    assert not np.array_equal(other[0].pairs[0][1], cells[0].pairs[0][1])


def test_noise_only_cells_are_sharp_frames_with_the_stated_noise(cells):
    for cell in cells:
        if cell.blur != "noise only":
            continue
        expected = 20 * np.log10(1 / cell.noise_sigma)  # PSNR of Gaussian noise of sigma on [0, 1]
        measured = np.mean([psnr(s, b) for _, b, s in cell.pairs])
        assert abs(measured - expected) < 0.6, (cell.noise_sigma, measured, expected)  # 8-bit rounding, clipping


def test_blur_grows_with_the_class(cells):
    """At the low noise level, the large-shake cell is further from sharp than the small one, and
    every blurred cell is further than the noise-only one (on the same photos at least as hard)."""
    low = {c.blur: np.mean([psnr(s, b) for _, b, s in c.pairs]) for c in cells if c.noise_sigma == NOISE_LEVELS[0]}
    assert all(low[name] < low["noise only"] - 8 for name in low if name != "noise only")
    sizes = {b.name: b for b in BLUR_CLASSES}
    rng = np.random.default_rng(0)
    for name, (lo, hi) in (("small shake", (11, 15)), ("medium shake", (17, 23)), ("large shake", (25, 31))):
        for _ in range(5):
            k = sizes[name].kernel(rng)
            assert lo <= k.shape[0] <= hi + 8 and abs(k.sum() - 1) < 1e-9  # centring may pad a few pixels


def test_verdict_rules():
    keep = verdict(25.0, 27.0, 26.8)  # teacher +2.0, student +1.8: exactly 90%
    assert keep["passed"] and keep["gain_kept"] == pytest.approx(0.9)
    assert not verdict(25.0, 27.0, 26.7)["passed"]
    # The teacher gains < 0.1 dB: no ratio; the student may lose at most 0.1 dB to max(teacher, input).
    small = verdict(30.0, 30.05, 29.96)
    assert small["gain_kept"] is None and small["passed"]
    assert not verdict(30.0, 30.05, 29.9)["passed"]
    # A teacher that harms the frame sets no lower bar: the input is the floor.
    harm = verdict(48.0, 31.0, 31.5)
    assert not harm["passed"] and verdict(48.0, 31.0, 47.95)["passed"]


def test_a_real_student_gets_a_verdict_per_cell_and_the_teacher_passes_against_itself(data_dir):
    small = class_cells(photos_per_cell=1, crop=128)
    student = Deblurrer.load("student-rpi5", threads=1)
    identity = lambda b: b  # noqa: E731
    rows = evaluate_by_class(small, {"teacher": student, "same": student, "identity": identity}, "teacher", "same")
    assert len(rows) == 12
    gains = [r for r in rows if r["gain_kept"] is not None]
    assert gains and all(r["gain_kept"] == pytest.approx(1.0) and r["passed"] for r in gains)  # 100% of its own gain
    for r in rows:  # where the teacher has no gain, a copy of it passes exactly when the teacher does no harm
        if r["gain_kept"] is None:
            assert r["passed"] == (r["scores"]["teacher"]["psnr"] >= r["scores"]["blurred"]["psnr"] - 0.1)
    blind = evaluate_by_class(small, {"teacher": student, "identity": identity}, "teacher", "identity")
    failed = {(r["class"], r["noise_sigma"]) for r in blind if not r["passed"]}
    # The identity keeps none of the student's gain where it has one.
    assert failed == {(r["class"], r["noise_sigma"]) for r in blind if r["gain_kept"] is not None}
    assert failed  # the real student gains on the blurred cells


def test_summary_check_and_table(data_dir):
    rows = [{"class": "small shake", "noise_sigma": 1.0, "pairs": 4,
             "scores": {"blurred": {"psnr": 25.0, "ssim": 0.7}, "teacher": {"psnr": 27.0, "ssim": 0.8},
                        "s": {"psnr": 26.0, "ssim": 0.75}}, **verdict(25.0, 27.0, 26.0)},
            {"class": "noise only", "noise_sigma": 3.0, "pairs": 4,
             "scores": {"blurred": {"psnr": 38.6, "ssim": 0.95}, "teacher": {"psnr": 38.65, "ssim": 0.95},
                        "s": {"psnr": 38.6, "ssim": 0.95}}, **verdict(38.6, 38.65, 38.6)}]
    summary = by_class_summary(rows, "teacher", "s", 4, 256)
    check = by_class_check(summary)
    assert not check["passed"] and check["kind"] == "gain"
    assert check["detail"] == "1 of 2 cells pass; least kept 50%; failing: small shake at 1/255"
    table = markdown_table(by_class_table(summary))
    assert "| small shake | 1/255 | 25.00 / 0.700 | 27.00 / 0.800 | 26.00 / 0.750 | +2.00 | +1.00 | 50% | FAIL |" in table
    assert "| noise only | 3/255 |" in table and "pass (no-harm rule)" in table
    passing = copy.deepcopy(summary)
    passing["rows"] = passing["rows"][1:]
    passing["failed"], passing["passed"] = [], True
    assert by_class_check(passing)["passed"]
    # The teacher itself loses 0.2 dB nowhere here; a teacher that harms a cell is named.
    assert summary["teacher_harms"] == []
    harmful = copy.deepcopy(rows)
    harmful[1]["scores"]["teacher"]["psnr"] = 31.0
    harmful[1].update(verdict(38.6, 31.0, 38.6))
    notes = by_class_summary(harmful, "teacher", "s", 4, 256)["teacher_harms"]
    assert notes == ["the teacher makes noise only frames at noise 3/255 worse (38.60 -> 31.00 dB): a student "
                     "distilled from it cannot pass that class's no-harm rule"]


def test_the_benchmark_prints_one_table_per_student(data_dir, capsys, tmp_path):
    """``benchmarks/students_by_class.py`` on a small subset: a verdict and a 12-row table per
    student, the rows written as JSON, and ``--cards`` prints what a card holds."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import students_by_class

    out = tmp_path / "rows.json"
    assert students_by_class.main(["--photos", "1", "--crop", "128", "--models", "student-rpi5", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("| small shake |") == 2 and "student-rpi5 PSNR / SSIM" in text
    summary = json.loads(out.read_text())["student-rpi5"]
    assert len(summary["rows"]) == 12 and summary["photos_per_cell"] == 1
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "student-x", "quality": {"by_class": summary}}))
    assert students_by_class.main(["--cards", str(card)]) == 0
    assert "student-x (" in capsys.readouterr().out
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"name": "student-y", "quality": {}}))
    assert students_by_class.main(["--cards", str(bare)]) == 1  # a named card without the section



def test_benchmark_side_by_side_table(tmp_path, capsys, data_dir):
    """``--side-by-side``: one table of every model per cell, and a mean row whose kept share is the
    mean student gain over the mean teacher gain of the cells with a gain, as the JSON rows give."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import students_by_class

    out = tmp_path / "rows.json"
    models = ["student-rpi5", "student-rpi4"]
    assert students_by_class.main(["--photos", "1", "--crop", "128", "--models", *models, "--side-by-side",
                                   "--json", str(out)]) == 0
    text = capsys.readouterr().out.split("side by side")[1]
    assert "| student-rpi5 PSNR | student-rpi5 kept | student-rpi5 verdict | student-rpi4 PSNR |" in text
    assert text.count("| small shake |") == 2 and text.count("| noise only |") == 2
    summaries = json.loads(out.read_text())
    mean_row = next(line for line in text.splitlines() if line.startswith("| mean of the"))
    for name in models:
        rows = [r for r in summaries[name]["rows"] if r["gain_kept"] is not None]
        kept = sum(r["student_gain_db"] for r in rows) / sum(r["teacher_gain_db"] for r in rows)
        assert f"| {kept:.0%} |" in mean_row
