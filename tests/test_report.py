"""The convert report (converters/report.py): three files written atomically, a valid SVG plot with
one label per plotted method and the budget, Markdown and HTML carrying the card's numbers, HTML
escaping, the log/linear axis choice, and cards with missing optional parts."""

from __future__ import annotations

import copy
import math
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from converters.report import (_linear_ticks, _log_ticks, quality_latency_svg, report_html, report_markdown,
                               write_report)

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def card() -> dict:
    """A plausible card for a Raspberry Pi 5 run (numbers in the range a real run gives)."""
    return {
        "name": "rpi5",
        "created": "2026-11-26T01:23:45Z",
        "target": {"name": "rpi5", "cpu": "Broadcom BCM2712, 4x Cortex-A76 @ 2.4 GHz", "runtime": "litert",
                   "precision": "int8", "threads": 4, "latency_budget_ms": 66.7, "mac_budget": 1_020_000_000},
        "teacher": {"source": "bundled:teacher-v1", "kind": "bundled", "macs": 5_610_000_000},
        "student": {"base": {"widths": [16, 32, 64, 96], "blocks": [1, 2, 2, 2], "middle": 2, "macs": 1_240_000_000},
                    "widths": [16, 24, 48, 80], "blocks": [1, 2, 2, 2], "middle": 2, "macs": 455_000_000,
                    "params": 118_304, "mac_reduction": 12.33},
        "files": {
            "int8_tflite": {"path": "out/rpi5/student_int8.tflite", "bytes": 176_640, "sha256": "ab" * 32},
            "float_tflite": {"path": "out/rpi5/student_float.tflite", "bytes": 498_112, "sha256": "cd" * 32},
            "onnx": {"path": "out/rpi5/student.onnx", "bytes": 1_612_800, "sha256": "ef" * 32},
        },
        "steps": {"distill": {"seconds": 1843.2, "epochs": 12, "loss": 0.01234},
                  "prune": {"seconds": 61.5, "rounds": 3},
                  "finetune": {"seconds": 402.0, "epochs": 4},
                  "ptq": {"seconds": 38.9, "calibration_crops": 64}},
        "quality": {"dataset": "Kodak24 + CBSD68, synthetic motion blur", "pairs": 92,
                    "rows": [
                        {"method": "blurred", "psnr": 24.317, "ssim": 0.7021, "psnr_vs_teacher": None,
                         "latency_ms_here": None, "expected_ms": None},
                        {"method": "teacher", "psnr": 27.128, "ssim": 0.8154, "psnr_vs_teacher": None,
                         "latency_ms_here": 412.3, "expected_ms": None},
                        {"method": "student (float)", "psnr": 26.731, "ssim": 0.8019, "psnr_vs_teacher": 35.42,
                         "latency_ms_here": 38.6, "expected_ms": 71.4},
                        {"method": "student (INT8)", "psnr": 26.652, "ssim": 0.7988, "psnr_vs_teacher": 34.87,
                         "latency_ms_here": 14.2, "expected_ms": 48.3},
                    ],
                    "teacher_gain_db": 2.811, "student_gain_db": 2.335, "gain_kept": 0.8307},
        "int8_vs_float": {"psnr_db": 44.12, "max_abs_diff": 0.0196, "within_1lsb": 0.9912},
        "latency": {"host": "x86_64, AMD EPYC 7B13", "threads": 4, "student_ms": 14.2, "mobilenet_ms": 2.9,
                    "expected_ms": 48.3, "expected_fps": 20.7, "budget_ms": 66.7, "mobilenet_target_ms": 9.86,
                    "mobilenet_kind": "published", "basis": "XNNPACK QS8 MobileNetV2 on a Pi 5, 4 threads",
                    "student_macs_per_s": 32.0e9, "mobilenet_macs_per_s": 103.4e9, "mac_rate_ratio": 0.31},
        "checks": [{"name": "int8 agrees with float", "passed": True, "detail": "44.12 dB >= 35 dB"},
                   {"name": "within latency budget", "passed": True, "detail": "48.3 ms <= 66.7 ms"},
                   {"name": "keeps 90% of the teacher's gain", "passed": False, "detail": "83% < 90%"}],
        "config": {"target": "rpi5", "epochs": 12, "seed": 0, "data": "../shared/data"},
    }


def _texts(svg: str, cls: str | None = None) -> list[str]:
    """The text content of the SVG's <text> elements, optionally only those of one class."""
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter(f"{SVG_NS}text") if cls is None or t.get("class") == cls]


def _x_axis_title(svg: str) -> str:
    """The x axis' title."""
    return next(t for t in _texts(svg, "axis-title") if "latency" in t)


def _with_latencies(card: dict, expected: dict[str, float | None]) -> dict:
    """A copy of ``card`` with the given methods' expected latencies (and no host latencies)."""
    changed = copy.deepcopy(card)
    for row in changed["quality"]["rows"]:
        if row["method"] in expected:
            row["expected_ms"], row["latency_ms_here"] = expected[row["method"]], None
    return changed


class _TagBalance(HTMLParser):
    """Checks that every opened (non-void) tag is closed, in order."""

    VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_write_report_writes_exactly_three_files(card, tmp_path):
    out = tmp_path / "report"  # does not exist yet: write_report creates it
    paths = write_report(card, out)
    assert set(paths) == {"markdown", "html", "plot"}
    assert sorted(os.listdir(out)) == ["quality_latency.svg", "report.html", "report.md"]
    assert {p.name for p in paths.values()} == set(os.listdir(out)) and all(p.parent == out for p in paths.values())
    assert paths["plot"].read_text(encoding="utf-8") == quality_latency_svg(card)
    assert paths["markdown"].read_text(encoding="utf-8") == report_markdown(card)
    # Writing again over an existing report replaces it, still without leftovers.
    write_report(card, out)
    assert len(os.listdir(out)) == 3


def test_a_failed_write_leaves_no_temporary_file(card, tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_report(card, tmp_path)
    assert os.listdir(tmp_path) == []


def test_svg_is_xml_with_a_label_per_plotted_method_and_the_budget(card):
    svg = quality_latency_svg(card)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    labels = _texts(svg, "label")
    plotted = ["teacher", "student (float)", "student (INT8)"]
    assert len(labels) == len(plotted) == len(list(root.iter(f"{SVG_NS}circle")))
    for method in plotted:
        assert sum(label.startswith(method + " ") for label in labels) == 1
    assert "student (INT8) 26.65 dB" in labels
    # Only the teacher lacks an expected latency: it is drawn at this host's and says so.
    assert [label for label in labels if "this host" in label] == ["teacher 27.13 dB (latency on this host)"]
    assert _texts(svg, "budget") == ["budget 66.7 ms (15 fps)"]
    assert len([line for line in root.iter(f"{SVG_NS}line") if line.get("class") == "budget-line"]) == 1
    assert _texts(svg, "reference") == ["blurred input 24.32 dB"]
    assert any("rpi5" in t for t in _texts(svg, "title"))
    assert "PSNR (dB)" in _texts(svg, "axis-title")


def _is_nice_step(step: float) -> bool:
    """Whether ``step`` is 1, 2 or 5 times a power of ten."""
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    return any(math.isclose(mantissa, m) for m in (1, 2, 5))


def test_axis_ticks_are_nice_numbers_and_cover_the_budget(card):
    svg = quality_latency_svg(_with_latencies(card, {"teacher": 90.0}))
    for axis in ("x-tick", "y-tick"):
        ticks = [float(t) for t in _texts(svg, axis)]
        assert 4 <= len(ticks) <= 10, (axis, ticks)
        steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
        assert len(steps) == 1 and _is_nice_step(steps.pop()), (axis, ticks)
        assert all(math.isclose(t / (ticks[1] - ticks[0]), round(t / (ticks[1] - ticks[0]))) for t in ticks)
    x_ticks = [float(t) for t in _texts(svg, "x-tick")]
    assert x_ticks[0] == 0 and x_ticks[-1] >= 90.0
    y_ticks = [float(t) for t in _texts(svg, "y-tick")]
    assert y_ticks[0] <= 24.317 and y_ticks[-1] >= 27.128  # the blurred line and the best point
    assert _linear_ticks(0.0, 72.0) == (0.0, 80.0, [0.0, 20.0, 40.0, 60.0, 80.0])
    assert _linear_ticks(24.1, 27.4)[2] == [24.0, 25.0, 26.0, 27.0, 28.0]
    assert _log_ticks(3.0, 700.0) == [5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]


def test_log_axis_only_when_latencies_span_more_than_20x(card):
    narrow = _with_latencies(card, {"teacher": 95.0, "student (float)": 71.4, "student (INT8)": 48.3})
    assert "log scale" not in _x_axis_title(quality_latency_svg(narrow))
    wide = _with_latencies(card, {"teacher": 2400.0, "student (float)": 71.4, "student (INT8)": 48.3})
    title = _x_axis_title(quality_latency_svg(wide))
    assert "log scale" in title and "rpi5" in title
    # The budget is not a plotted latency: it widens the range but does not force a log axis.
    low_budget = copy.deepcopy(narrow)
    low_budget["target"]["latency_budget_ms"] = 2.0
    svg = quality_latency_svg(low_budget)
    assert "log scale" not in _x_axis_title(svg) and _texts(svg, "budget") == ["budget 2.0 ms (500 fps)"]


def test_markdown_carries_methods_numbers_and_failures(card):
    md = report_markdown(card)
    assert md.startswith("# edge-deblur convert: rpi5\n")
    for row in card["quality"]["rows"]:
        assert row["method"] in md
    for psnr in ("24.32", "27.13", "26.73", "26.65"):
        assert f"| {psnr} |" in md
    assert "| 0.799 |" in md  # SSIM, 3 decimals
    assert "83% of the teacher's gain" in md and "12.3x fewer MACs" in md
    assert "48.3 ms (20.7 fps)" in md and "within the budget of 66.7 ms (15 fps)" in md
    assert "99.1% of pixels within 1 LSB" in md
    assert "455.0M" in md and "5.61G" in md and "1.24G" in md
    assert "172.5 KB" in md and "1.54 MB" in md
    assert "MobileNetV2-224 INT8" in md and "a published figure" in md and card["latency"]["basis"] in md
    assert "ratio 0.31" in md
    for step in card["steps"]:
        assert f"| {step} |" in md
    assert "| distill | 1843.2 |" in md
    assert "- **FAIL** keeps 90% of the teacher's gain: 83% < 90%" in md
    assert "- pass within latency budget" in md
    assert "1 of 3 checks FAILED" in md
    assert "![quality vs latency](quality_latency.svg)" in md


def test_html_balances_inlines_the_svg_and_escapes_card_strings(card):
    card["quality"]["rows"][3]["method"] = "<script>alert(1)</script>"
    card["checks"][0]["detail"] = 'a "quoted" & <b>bold</b> detail'
    page = report_html(card)
    checker = _TagBalance()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<table>" in page and "<style>" in page
    assert not re.search(r"""(src|href)\s*=|<link\b|@import|url\(""", page)  # self-contained
    svg = page[page.index("<svg"):page.index("</svg>") + len("</svg>")]
    assert "<script>alert(1)</script> 26.65 dB" in _texts(svg, "label")
    for row in card["quality"]["rows"][:3]:
        assert row["method"] in page


def test_missing_int8_comparison_and_onnx_still_render(card, tmp_path):
    card["int8_vs_float"] = None
    card["files"]["onnx"] = None
    paths = write_report(card, tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "no INT8 model to compare" in md and "| ONNX | not written |" in md
    ET.fromstring(paths["plot"].read_text(encoding="utf-8"))
    assert "not written" in paths["html"].read_text(encoding="utf-8")


def test_methods_without_latency_are_tabled_but_not_plotted(card):
    card["quality"]["rows"].append({"method": "classical (Wiener)", "psnr": 25.01, "ssim": 0.741,
                                    "psnr_vs_teacher": 28.3, "latency_ms_here": None, "expected_ms": None})
    assert not any("Wiener" in t for t in _texts(quality_latency_svg(card)))
    assert "| classical (Wiener) | 25.01 | 0.741 |" in report_markdown(card)


# --- issue 16: how the teacher was read, a teacher without gain, timing noise ---------------------


def _foreign_teacher(card: dict) -> dict:
    """The card of a fixed-size tf2onnx teacher whose range was detected."""
    card["teacher"] = {
        "source": "mobile_deblur.onnx", "kind": "onnx", "macs": 5_610_000_000, "layout": "NHWC",
        "fixed_size": [256, 256], "overlap": 128, "multiple": 16, "value_range": "-1-1", "range_decided": "detected",
        "detection": {"chosen": "-1-1", "runner_up": "0-1", "margin": 0.84, "margin_kind": "dB", "ambiguous": False,
                      "summary": "-1-1 (gain +1.10 dB, change 6.0 grey levels rms); +0.84 dB of gain over 0-1",
                      "candidates": []},
        "psnr_vs_input": 31.2, "warnings": [], "timing": "onnx runtime on this host"}
    return card


def test_report_shows_the_teachers_layout_size_and_range_with_its_margin(card):
    md = report_markdown(_foreign_teacher(card))
    assert "Teacher: mobile_deblur.onnx (onnx), layout NHWC, fixed input 256x256, run on windows of that size " \
           "overlapping by 128 px, values -1-1 (detected: -1-1 (gain +1.10 dB" in md
    assert "+0.84 dB of gain over 0-1" in md and "AMBIGUOUS" not in md and "## Warnings" not in md
    card["teacher"]["range_decided"], card["teacher"]["detection"] = "stated (--input-range)", None
    assert "values -1-1 (stated (--input-range))" in report_markdown(card)


def test_an_ambiguous_range_and_a_teacher_that_does_nothing_are_warned(card):
    card = _foreign_teacher(card)
    card["teacher"]["detection"]["ambiguous"] = True
    card["teacher"]["warnings"] = ["the teacher does not change its input (79.0 dB PSNR from the blurred input): "
                                   "is its value range right (--input-range)?"]
    md = report_markdown(card)
    assert "## Warnings" in md and "- **warning** the teacher does not change its input (79.0 dB" in md
    assert "- **warning** the teacher's value range is ambiguous" in md and "AMBIGUOUS, state it with --input-range" in md
    assert md.index("## Warnings") < md.index("## Verdict")
    assert '<strong class="fail">warning</strong>' in report_html(card)


@pytest.mark.parametrize("teacher_gain", [0.0, -0.35])
def test_verdict_reads_right_when_the_teacher_has_no_gain(card, teacher_gain):
    card["quality"].update(teacher_gain_db=teacher_gain, student_gain_db=-0.12, gain_kept=None)
    md = report_markdown(card)
    verdict = md.split("## Verdict\n\n")[1].split("\n")[0]
    assert f"The teacher does not improve on the blurred input ({teacher_gain:+.2f} dB" in verdict
    assert "no teacher's gain for the student to keep; the student's own gain is -0.12 dB" in verdict
    assert "The student keeps" not in verdict and "—" not in verdict  # no "keeps — of the teacher's gain"
    assert "(no teacher's gain to keep)" in md


def test_the_teacher_is_on_the_plot(card):
    """At its latency on this host (hollow) when only that is known, like any method."""
    labels = _texts(quality_latency_svg(card), "label")
    assert "teacher 27.13 dB (latency on this host)" in labels


def test_latency_within_noise_is_said_so(card):
    card["latency"].update(expected_ms=66.2, expected_ms_range=[57.9, 67.1], repeats=5, rounds_per_repeat=15,
                           verdict="within noise")
    card["checks"][1] = {"name": "expected latency within the target's budget", "passed": True, "within_noise": True,
                         "detail": "66.2 ms; 57.9-67.1 ms over 5 repeats vs 66.7 ms: within noise"}
    md = report_markdown(card)
    assert "(15.1 fps; 57.9-67.1 ms over 5 repeats), within noise of the budget of 66.7 ms" in md
    assert "the timing noise is larger than the margin" in md
    assert "- noise expected latency within the target's budget" in md
    assert "Within timing noise: expected latency within the target's budget." in md
    assert "repeated 5 times (15 interleaved rounds each); the expected latency ranged over 57.9-67.1 ms" in md
    assert "| student expected on rpi5, range over repeats | 57.9-67.1 |" in md
    assert "1 of 3 checks FAILED" in md  # the gain check; the noisy one is not counted as failed


def test_a_card_without_validation_by_class_says_so(card):
    """Cards made before issue 14 have no quality.by_class: the report says so instead of failing."""
    assert "No validation by blur class in this card" in report_markdown(card)


def test_the_output_grid_rewrite_is_rendered(card):
    """The shipped cards record their output put on the input's grid after conversion (card section
    ``output_grid``, converters/output_grid.py): the report shows what changed, the quantization and
    file before and after, the figures before against the card's, and how far outputs moved."""
    import json

    from edge_deblur.model import MODELS_DIR

    shipped = json.loads((MODELS_DIR / "student-rpi5.card.json").read_text())
    md = report_markdown(shipped)
    section = md[md.index("## Output grid"):md.index("## Latency")]
    assert shipped["output_grid"]["what"] in section and "Bytes changed by the rewrite: 4." in section
    assert "| output scale | 0.00503116 | 0.00392157 (1/255) |" in section
    assert "| output zero point | -81 | -128 |" in section
    assert "| INT8 file size (bytes) | 306,760 | 306,760 |" in section
    assert "| INT8 file sha256 (first 16) | 9e0b2555ce36ef5d | 78345797774e4bd6 |" in section
    assert "| PSNR, student (INT8) (dB) | 22.621 | 22.623 |" in section
    assert "| gain kept | 92.0% | 92.3% |" in section
    assert "at most 1 level apart, 31.7% of values differ" in section
    page = report_html(shipped)
    checker = _TagBalance()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert "<h2>Output grid</h2>" in page and "0.00392157 (1/255)" in page

    # A card from before the option has no such section; a fresh conversion with it says so in a line;
    # a section with only its description still renders.
    assert "Output grid" not in report_markdown(card)
    card["config"]["output_grid"] = True
    assert "put on the input's 8-bit grid during conversion" in report_markdown(card)
    card["output_grid"] = {"what": "Re-quantized."}
    md = report_markdown(card)
    assert "Re-quantized." in md and "| output scale | — | — |" in md
