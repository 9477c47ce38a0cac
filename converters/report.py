"""A human report of one ``edge-deblur convert`` run, rendered from its model card.

The card (a JSON-able dict, see ``converters`` and DESIGN.md) becomes three files in one folder:

* ``report.md``: the verdict, quality, model, output grid (when the card records one), latency, steps
  and checks as Markdown;
* ``report.html``: the same content, self-contained (inline CSS, the plot inlined as SVG);
* ``quality_latency.svg``: PSNR against expected latency on the target, with the latency budget.

Standard library only: the report is written at the end of a long conversion and must not fail
for want of a plotting package. Both renderers share one document model (``_document``), so the
Markdown and the HTML cannot drift apart.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_deblur.images import AtomicFile

PLOT_FILE = "quality_latency.svg"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"

# Plot geometry in SVG user units; the HTML scales it down to the page width.
_WIDTH, _HEIGHT = 760, 460
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 24, 58, 66
_LABEL_GAP = 14  # one line of 12-px text: labels closer than this overlap
_LOG_SPAN = 20.0  # a wider spread of latencies squeezes the fast points into one pixel column
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
_DASH = "—"  # stands in for a missing number in tables and prose

_FILE_NAMES = {"int8_tflite": "INT8 TFLite", "float_tflite": "float TFLite", "onnx": "ONNX"}
_REFERENCE_KINDS = {
    "published": "a published figure",
    "estimate": "an estimate, not a measurement",
    "measured": "measured on the board",
}


# --- numbers -------------------------------------------------------------------------------------


def _finite(value: object) -> bool:
    """Whether ``value`` is a real, finite number (not None, NaN, inf or a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float | None, digits: int, unit: str = "") -> str:
    """``value`` with ``digits`` decimals and an optional unit, or a dash when it is missing."""
    return f"{value:.{digits}f}{unit}" if _finite(value) else _DASH


def _db(value: float | None) -> str:
    """Decibels with two decimals."""
    return _num(value, 2, " dB")


def _ms_value(value: float | None) -> str:
    """Milliseconds with one decimal; two below 1 ms, where one would lose half the figure (a
    Jetson's 0.85 ms MobileNetV2)."""
    return _num(value, 2 if _finite(value) and abs(value) < 1 else 1)


def _ms(value: float | None) -> str:
    """Milliseconds with their unit."""
    return _ms_value(value) + (" ms" if _finite(value) else "")


def _fps(ms: float | None) -> str:
    """Frames per second of a per-frame latency: whole when close (33.3 ms is "30 fps")."""
    if not _finite(ms) or ms <= 0:
        return _DASH
    fps = 1000.0 / ms
    return f"{fps:.0f} fps" if abs(fps - round(fps)) < 0.1 else f"{fps:.1f} fps"


def _macs(value: int | float | None) -> str:
    """Multiply-accumulates in millions ("455.0M") or, from a billion on, billions ("5.88G")."""
    if not _finite(value):
        return _DASH
    return f"{value / 1e9:.2f}G" if value >= 1e9 else f"{value / 1e6:.1f}M"


def _size(n_bytes: int | None) -> str:
    """A file size in KB below a megabyte, else MB (binary units, as file managers show them)."""
    if not _finite(n_bytes):
        return _DASH
    return f"{n_bytes / 1024:.1f} KB" if n_bytes < 1024 * 1024 else f"{n_bytes / 1024 ** 2:.2f} MB"


def _percent(fraction: float | None, digits: int = 0) -> str:
    """A fraction as a percentage."""
    return _num(100.0 * fraction if _finite(fraction) else None, digits, "%")


def _gmacs(per_second: float | None) -> str:
    """A MAC rate in billions per second."""
    return _num(per_second / 1e9 if _finite(per_second) else None, 2, " GMAC/s")


def _ints(values: Sequence[int] | None) -> str:
    """A list of widths or block counts."""
    return ", ".join(map(str, values)) if values else _DASH


def _plain(value: object) -> str:
    """A free-form card value (step details, file lists) in a short readable form."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _mac_budget(card: dict) -> tuple[float | None, str]:
    """The one MAC budget the conversion pruned to and checked against, and where it comes from
    (cards before it was recorded: the target's)."""
    budget, target = card.get("mac_budget") or {}, card["target"]
    if _finite(budget.get("macs")):
        return budget["macs"], str(budget.get("basis", ""))
    pruned_to = (card.get("steps", {}).get("prune") or {}).get("mac_budget")
    if _finite(pruned_to) and _finite(target.get("mac_budget")) and pruned_to < target["mac_budget"]:
        return pruned_to, (f"what pruning aimed at: {target['name']}'s {_macs(target['mac_budget'])}, capped at a "
                           "tenth of the teacher's MACs")
    return target.get("mac_budget"), f"{target['name']}'s budget"


def _smoke_failures(card: dict) -> tuple[list[str], list[str]]:
    """A smoke run's failed checks: (expected there, not expected even there)."""
    failed = [c for c in card.get("checks") or [] if not c.get("passed") and not c.get("within_noise")]
    return ([c["name"] for c in failed if c.get("expected_in_smoke_run")],
            [c["name"] for c in failed if not c.get("expected_in_smoke_run")])


def _budget_ms(card: dict) -> float | None:
    """The target's latency budget; the latency section's copy stands in if the target lacks one."""
    budget = card["target"].get("latency_budget_ms")
    return budget if _finite(budget) else card["latency"].get("budget_ms")


# --- plot ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    """One method on the plot; ``on_host`` when only this host's latency was known for it."""

    method: str
    latency_ms: float
    psnr: float
    on_host: bool


@dataclass(frozen=True)
class _Scale:
    """Maps data values in ``[lo, hi]`` onto pixels in ``[start, end]``, linearly or by log10."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        """The pixel coordinate of ``value``."""
        f = math.log10 if self.log else float
        t = (f(value) - f(self.lo)) / (f(self.hi) - f(self.lo))
        return self.start + t * (self.end - self.start)


def _plot_points(rows: Sequence[dict]) -> tuple[list[_Point], float | None]:
    """The plottable methods and the blurred input's PSNR (a reference line, it has no latency).

    A method is placed at its expected latency on the target, else at this host's latency (marked
    as such); a method with neither is left to the table."""
    points: list[_Point] = []
    blurred = None
    for row in rows:
        psnr, expected, here = row.get("psnr"), row.get("expected_ms"), row.get("latency_ms_here")
        if not _finite(psnr):
            continue
        if _finite(expected):
            points.append(_Point(str(row["method"]), float(expected), float(psnr), False))
        elif _finite(here):
            points.append(_Point(str(row["method"]), float(here), float(psnr), True))
        elif str(row["method"]).strip().lower() == "blurred":
            blurred = float(psnr)
    return points, blurred


def _use_log_axis(latencies: Sequence[float]) -> bool:
    """A log latency axis when the plotted latencies span more than ``_LOG_SPAN`` times."""
    return len(latencies) > 1 and min(latencies) > 0 and max(latencies) / min(latencies) > _LOG_SPAN


def _nice_step(raw: float) -> float:
    """The 1, 2 or 5 times a power of ten nearest above ``raw``: tick steps people read at a glance."""
    exponent = math.floor(math.log10(raw))
    fraction = raw / 10 ** exponent
    nice = next(n for n in (1, 2, 5, 10) if fraction <= n + 1e-9)
    return nice * 10 ** exponent


def _linear_ticks(lo: float, hi: float, count: int = 6) -> tuple[float, float, list[float]]:
    """About ``count`` nice ticks covering ``[lo, hi]``; returns the widened range and the ticks."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    step = _nice_step((hi - lo) / (count - 1))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    # Rounding hides float residue such as 0.30000000000000004 in the labels.
    ticks = [round(i * step, 10) for i in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2 and 5 times each power of ten inside ``[lo, hi]``; only powers of ten when
    that gives too many to read."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = [m * 10.0 ** k for k in decades for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
    if len(ticks) > 9:
        ticks = [t for t in ticks if math.isclose(10 ** round(math.log10(t)), t)]
    return ticks


def _tick_label(value: float, step: float | None) -> str:
    """A tick's text: just enough decimals for a linear step, the shortest form on a log axis."""
    if step is None or step >= 1:
        return f"{value:g}"
    return f"{value:.{-math.floor(math.log10(step) + 1e-9)}f}"


def _x_axis(latencies: Sequence[float], budget: float | None) -> tuple[_Scale, list[float], float | None]:
    """The latency scale (budget included in its range), its ticks and the linear tick step."""
    values = [*latencies, *([budget] if _finite(budget) and budget > 0 else [])] or [1.0]
    start, end = _LEFT, _WIDTH - _RIGHT
    if _use_log_axis(latencies):
        lo, hi = min(values) / 1.5, max(values) * 1.5
        return _Scale(lo, hi, start, end, log=True), _log_ticks(lo, hi), None
    # Zero anchors a linear latency axis, so distances read as ratios.
    lo, hi, ticks = _linear_ticks(0.0, max(values) * 1.08)
    return _Scale(lo, hi, start, end), ticks, ticks[1] - ticks[0]


def _y_axis(psnrs: Sequence[float]) -> tuple[_Scale, list[float], float]:
    """The PSNR scale with some headroom so no point sits on the frame, its ticks and step."""
    lo, hi = (min(psnrs), max(psnrs)) if psnrs else (0.0, 1.0)
    span = hi - lo if hi > lo else 5.0
    # More room above than below: the budget's label runs along the top of the plot.
    lo, hi, ticks = _linear_ticks(lo - 0.08 * span, hi + 0.15 * span)
    return _Scale(lo, hi, _HEIGHT - _BOTTOM, _TOP), ticks, ticks[1] - ticks[0]


def _spread(ys: list[float], top: float, bottom: float) -> list[float]:
    """Label baselines moved apart by at least ``_LABEL_GAP``, kept in ``[top, bottom]``, in order."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = [ys[i] for i in order]
    for k in range(1, len(placed)):
        placed[k] = max(placed[k], placed[k - 1] + _LABEL_GAP)
    # A second pass from the bottom up pulls a column pushed out of the frame back inside it.
    placed[-1:] = [min(placed[-1], bottom)] if placed else []
    for k in range(len(placed) - 2, -1, -1):
        placed[k] = min(placed[k], placed[k + 1] - _LABEL_GAP)
    result = [0.0] * len(ys)
    for k, i in enumerate(order):
        result[i] = max(placed[k], top)
    return result


def _svg_text(x: float, y: float, text: str, **attrs: str) -> str:
    """One escaped ``<text>`` element; ``attrs`` use ``_`` for ``-`` in attribute names."""
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{html.escape(v)}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{html.escape(text)}</text>'


def _svg_axes(x: _Scale, x_ticks: list[float], x_step: float | None, y: _Scale, y_ticks: list[float],
              y_step: float, x_title: str) -> list[str]:
    """Grid lines, tick labels and axis titles."""
    top, bottom, left, right = _TOP, _HEIGHT - _BOTTOM, _LEFT, _WIDTH - _RIGHT
    parts = []
    for tick in x_ticks:
        px = x(tick)
        parts.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" stroke="#e4e4e4"/>')
        parts.append(_svg_text(px, bottom + 18, _tick_label(tick, x_step), text_anchor="middle",
                               class_="x-tick"))
    for tick in y_ticks:
        py = y(tick)
        parts.append(f'<line x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" stroke="#e4e4e4"/>')
        parts.append(_svg_text(left - 8, py + 4, _tick_label(tick, y_step), text_anchor="end",
                               class_="y-tick"))
    parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
                 'fill="none" stroke="#888"/>')
    parts.append(_svg_text((left + right) / 2, _HEIGHT - 22, x_title, text_anchor="middle",
                           class_="axis-title"))
    mid = (top + bottom) / 2
    parts.append(_svg_text(18, mid, "PSNR (dB)", text_anchor="middle", transform=f"rotate(-90 18 {mid:.1f})",
                           class_="axis-title"))
    return parts


def _svg_budget(x: _Scale, budget: float) -> list[str]:
    """The budget as a dashed vertical line, the slower side shaded, and its label."""
    top, bottom, right = _TOP, _HEIGHT - _BOTTOM, _WIDTH - _RIGHT
    px = x(budget)
    near_right = px > _LEFT + 0.75 * (right - _LEFT)
    label = f"budget {budget:.1f} ms ({_fps(budget)})"
    return [
        f'<rect x="{px:.1f}" y="{top}" width="{right - px:.1f}" height="{bottom - top}" fill="#fdecea"/>',
        f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" stroke="#c62828" '
        'stroke-width="1.5" stroke-dasharray="6 4" class="budget-line"/>',
        _svg_text(px - 5 if near_right else px + 5, top + 14, label, fill="#c62828",
                  text_anchor="end" if near_right else "start", class_="budget"),
    ]


def _svg_blurred(y: _Scale, psnr: float) -> list[str]:
    """The blurred input's PSNR as a dashed horizontal reference line with its label."""
    py = y(psnr)
    return [
        f'<line x1="{_LEFT}" y1="{py:.1f}" x2="{_WIDTH - _RIGHT}" y2="{py:.1f}" stroke="#777" '
        'stroke-dasharray="4 4"/>',
        _svg_text(_WIDTH - _RIGHT - 6, py - 5, f"blurred input {psnr:.2f} dB", fill="#555",
                  text_anchor="end", class_="reference"),
    ]


def _svg_points(points: list[_Point], x: _Scale, y: _Scale) -> list[str]:
    """A marker and a label per method; hollow markers are this host's latency, not the target's."""
    parts, label_ys = [], _spread([y(p.psnr) + 4 for p in points], _TOP + 12, _HEIGHT - _BOTTOM - 4)
    for i, (point, label_y) in enumerate(zip(points, label_ys)):
        colour = _PALETTE[i % len(_PALETTE)]
        px, py = x(point.latency_ms), y(point.psnr)
        fill = "white" if point.on_host else colour
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{fill}" stroke="{colour}" '
                     'stroke-width="2"/>')
        text = f"{point.method} {point.psnr:.2f} dB" + (" (latency on this host)" if point.on_host else "")
        # Labels of points in the right part of the plot go to their left so they stay inside.
        leftwards = px > _LEFT + 0.55 * (_WIDTH - _RIGHT - _LEFT)
        parts.append(_svg_text(px - 9 if leftwards else px + 9, label_y, text, fill=colour,
                               text_anchor="end" if leftwards else "start", class_="label"))
    return parts


def quality_latency_svg(card: dict) -> str:
    """The SVG text of PSNR (dB) against expected latency on the target (ms), one labelled point
    per method, the blurred input as a reference line and the latency budget as a dashed line."""
    name = str(card["target"]["name"])
    points, blurred = _plot_points(card["quality"]["rows"])
    budget = _budget_ms(card)
    latencies = [p.latency_ms for p in points]
    x, x_ticks, x_step = _x_axis(latencies, budget)
    y, y_ticks, y_step = _y_axis([p.psnr for p in points] + ([blurred] if blurred is not None else []))
    x_title = f"expected latency on {name} (ms{', log scale' if x.log else ''})"
    title = f"Quality vs latency on {name}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="{_FONT}" font-size="12" role="img" '
        f'aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
    ]
    if _finite(budget) and budget > 0:
        parts += _svg_budget(x, budget)
    parts += _svg_axes(x, x_ticks, x_step, y, y_ticks, y_step, x_title)
    if blurred is not None:
        parts += _svg_blurred(y, blurred)
    parts += _svg_points(points, x, y)
    quality = card["quality"]
    subtitle = (f'{card["target"]["precision"]} on {card["target"]["runtime"]}; '
                f'{quality["dataset"]}, {quality["pairs"]} pairs')
    parts.append(_svg_text(_WIDTH / 2, 24, title, text_anchor="middle", font_size="16",
                           font_weight="bold", class_="title"))
    parts.append(_svg_text(_WIDTH / 2, 42, subtitle, text_anchor="middle", fill="#555"))
    if any(p.on_host for p in points):
        parts.append(_svg_text(_LEFT, _HEIGHT - 6, "hollow marker: latency measured on this host, "
                               "not expected on the target", fill="#555", font_size="11", class_="note"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- the document both renderers share -----------------------------------------------------------


@dataclass(frozen=True)
class _Para:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class _Table:
    """A table; ``numeric`` marks the columns to right-align."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    numeric: Sequence[bool]


@dataclass(frozen=True)
class _Items:
    """A bulleted list of ``(marker, text)``; the marker "FAIL" is emphasised."""

    items: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class _Code:
    """A preformatted block."""

    text: str
    language: str = ""


@dataclass(frozen=True)
class _Figure:
    """The quality-latency plot: a link in Markdown, the SVG itself in HTML."""

    svg: str
    caption: str


_Block = _Para | _Table | _Items | _Code | _Figure
_Section = tuple[str, list[_Block]]


def _signed_db(value: float | None) -> str:
    """Decibels with their sign (a gain can be negative)."""
    return _num(value, 2, " dB") if not _finite(value) else f"{value:+.2f} dB"


def _spread_text(latency: dict) -> str:
    """The expected latency's range over the timing repeats, when it was measured."""
    spread, repeats = latency.get("expected_ms_range"), latency.get("repeats")
    if not spread or not all(_finite(v) for v in spread):
        return ""
    return f"{_ms_value(spread[0])}-{_ms(spread[1])} over {repeats} repeats"


def _verdict(card: dict) -> str:
    """One paragraph: gain kept (or why there is none to keep), MAC reduction, expected speed
    against the budget (within noise when the budget lies inside the timing spread), INT8
    agreement and the checks."""
    quality, student, latency = card["quality"], card["student"], card["latency"]
    budget, expected = _budget_ms(card), latency.get("expected_ms")
    teacher_gain, student_gain = quality.get("teacher_gain_db"), quality.get("student_gain_db")
    macs = (f"{_num(student.get('mac_reduction'), 1, 'x')} fewer MACs ({_macs(student.get('macs'))} vs "
            f"{_macs(card['teacher'].get('macs'))} per 640x480 frame)")
    where = f"on {quality['dataset']}, {quality['pairs']} pairs"
    if _finite(teacher_gain) and teacher_gain > 0 and _finite(quality.get("gain_kept")):
        first = (f"The student keeps {_percent(quality.get('gain_kept'))} of the teacher's gain over the blurred "
                 f"input ({_signed_db(student_gain)} of {_signed_db(teacher_gain)} {where}) with {macs}.")
    else:
        first = (f"The teacher does not improve on the blurred input ({_signed_db(teacher_gain)} {where}), so there "
                 f"is no teacher's gain for the student to keep; the student's own gain is {_signed_db(student_gain)}, "
                 f"with {macs}.")
    sentences = [first]
    by_class = quality.get("by_class")
    if by_class:
        sentences.append(f"By blur class ({len(by_class['rows'])} class and noise cells): "
                         f"{by_class_check(by_class)['detail']}.")
    if _finite(expected) and _finite(budget):
        noise = latency.get("verdict") == "within noise"
        verdict = ("within noise of" if noise else "within" if expected <= budget else f"{expected / budget:.1f}x over")
        spread = _spread_text(latency)
        sentences.append(f"On {card['target']['name']} it is expected to take {_ms(expected)} ({_fps(expected)}"
                         f"{'; ' + spread if spread else ''}), {verdict} the budget of {_ms(budget)} ({_fps(budget)})"
                         + (": the timing noise is larger than the margin, so this host cannot tell." if noise else "."))
    int8 = card.get("int8_vs_float")
    if int8:
        sentences.append(f"INT8 agrees with the float student at {_db(int8.get('psnr_db'))} PSNR, "
                         f"{_percent(int8.get('within_1lsb'), 1)} of pixels within 1 LSB "
                         f"(max abs diff {_plain(int8.get('max_abs_diff'))}).")
    else:
        sentences.append("There is no INT8 model to compare with the float one.")
    checks = card.get("checks") or []
    failed = [c["name"] for c in checks if not c.get("passed") and not c.get("within_noise")]
    noise = [c["name"] for c in checks if c.get("within_noise")]
    if noise:
        sentences.append(f"Within timing noise: {', '.join(map(str, noise))}.")
    if failed and card.get("smoke_run"):
        expected, unexpected = _smoke_failures(card)
        if expected:
            sentences.append(f"{len(expected)} of {len(checks)} checks FAILED as a smoke run's may (too little "
                             f"training or timing to decide them): {', '.join(expected)}.")
        if unexpected:
            sentences.append(f"{len(unexpected)} of {len(checks)} checks FAILED that must pass even in a smoke run: "
                             f"{', '.join(unexpected)}.")
    elif failed:
        sentences.append(f"{len(failed)} of {len(checks)} checks FAILED: {', '.join(map(str, failed))}.")
    elif checks and not noise:
        sentences.append(f"All {len(checks)} checks passed.")
    return " ".join(sentences)


def _teacher_text(teacher: dict) -> str:
    """The teacher's form, layout, input size and value range, and how the range was decided."""
    parts = [f"Teacher: {teacher['source']} ({teacher['kind']})"]
    if teacher.get("layout"):
        parts.append(f"layout {teacher['layout']}")
    fixed = teacher.get("fixed_size")
    if fixed:
        parts.append(f"fixed input {fixed[0]}x{fixed[1]}, run on windows of that size overlapping by "
                     f"{teacher.get('overlap', 0)} px")
    elif "fixed_size" in teacher:
        parts.append("any input size")
    if teacher.get("value_range"):
        decided = str(teacher.get("range_decided", "detected"))
        text = f"values {teacher['value_range']} ({decided}"
        detection = teacher.get("detection")
        if detection:
            text += f": {detection.get('summary', '')}"
            if detection.get("ambiguous"):
                text += "; AMBIGUOUS, state it with --input-range"
        parts.append(text + ")")
    return ", ".join(parts) + "."


def _warnings(card: dict) -> list[_Block]:
    """What must be read first: a teacher that does nothing or harm, an ambiguous value range."""
    teacher = card["teacher"]
    items = [("warning", str(w)) for w in teacher.get("warnings") or []]
    detection = teacher.get("detection") or {}
    if detection.get("ambiguous"):
        items.append(("warning", f"the teacher's value range is ambiguous ({detection.get('summary', '')}); "
                                 "state it with --input-range"))
    return [_Items(items)] if items else []


def _summary(card: dict) -> list[_Block]:
    """When, for which board, from which teacher; first of all, whether this was only a smoke run."""
    target, teacher = card["target"], card["teacher"]
    macs, basis = _mac_budget(card)
    smoke = [_Para(f"SMOKE RUN. This is a {card['smoke_run']}.")] if card.get("smoke_run") else []
    return smoke + [_Para(
        f"Created {card['created']}. Target {target['name']}: {target['cpu']}; {target['runtime']}, "
        f"{target['precision']}, {target['threads']} threads; budget {_ms(_budget_ms(card))} "
        f"({_fps(_budget_ms(card))}), {_macs(macs)} MACs ({basis}). "

        + _teacher_text(teacher)
    )]


def _quality(card: dict, svg: str) -> list[_Block]:
    """The quality table and the plot."""
    quality, name = card["quality"], card["target"]["name"]
    rows = [[str(r["method"]), _num(r.get("psnr"), 2), _num(r.get("ssim"), 3), _num(r.get("psnr_vs_teacher"), 2),
             _ms_value(r.get("latency_ms_here")), _ms_value(r.get("expected_ms"))] for r in quality["rows"]]
    headers = ["method", "PSNR (dB)", "SSIM", "PSNR vs teacher (dB)", "latency here (ms)",
               f"expected on {name} (ms)"]
    return [
        _Para(f"{quality['dataset']}, {quality['pairs']} pairs. Gain over the blurred input: teacher "
              f"{_signed_db(quality.get('teacher_gain_db'))}, student {_signed_db(quality.get('student_gain_db'))} "
              + (f"({_percent(quality.get('gain_kept'))} kept)." if _finite(quality.get("gain_kept"))
                 else "(no teacher's gain to keep).")
              + (f" The teacher's output is {_db(card['teacher']['psnr_vs_input'])} PSNR from its input."
                 if _finite(card["teacher"].get("psnr_vs_input")) else "")
              + (f" Teacher latency: {card['teacher']['timing']}." if card["teacher"].get("timing") else "")),
        _Table(headers, rows, [False] + [True] * 5),
        _Figure(svg, f"PSNR against expected latency on {name}"),
    ]


def _by_class(card: dict) -> list[_Block]:
    """Quality by blur class (``converters.blur_classes``): one row per (class, noise) cell, each
    with its own 90% verdict; absent from cards made before issue 14."""
    summary = card["quality"].get("by_class")
    if not summary:
        return [_Para("No validation by blur class in this card (it predates it).")]
    head, *rows = by_class_table(summary)
    check = by_class_check(summary)
    return [_Para(f"{summary['dataset']}. Rule: {summary['rule']}. "
                  f"{'pass' if check['passed'] else 'FAIL'}: {check['detail']}."),
            _Table(head, rows, [False, False] + [True] * (len(head) - 3) + [False]),
            *([_Items([("note", n) for n in summary["teacher_harms"]])] if summary.get("teacher_harms") else [])]


def _scale(value: float | None) -> str:
    """A quantization scale, with its 1/n form when it is one (1/255: the input's 8-bit grid)."""
    if not _finite(value) or value <= 0:
        return _DASH
    n = round(1.0 / value)
    return f"{value:.8f}" + (f" (1/{n})" if abs(value * n - 1.0) < 1e-6 else "")


def _output_grid(card: dict) -> list[_Block]:
    """The INT8 output put on the input's grid (``converters/output_grid.py``): what was changed, the
    output quantization and file before and after, the card's figures against the pre-rewrite file's,
    and how far the outputs moved. Cards that record no such rewrite have no section (``_document``)."""
    grid = card.get("output_grid")
    if not isinstance(grid, dict):
        return [_Para("The INT8 output was put on the input's 8-bit grid during conversion (config "
                      "output_grid), before validation: every figure in this report is the shipped file's.")]
    pre = grid.get("pre_rewrite") or {}
    now_q, pre_q = grid.get("output_quantization") or {}, pre.get("output_quantization") or {}
    int8 = (card.get("files") or {}).get("int8_tflite") or {}
    text = str(grid.get("what", "The INT8 output's quantization was rewritten after conversion.")).rstrip(".") + "."
    if grid.get("tool") or grid.get("applied"):
        text += f" Applied {grid.get('applied', _DASH)} with {grid.get('tool', _DASH)}."
    if pre.get("note"):
        text += f" Before: {pre['note']}"
        text += "." if not str(pre["note"]).endswith(".") else ""
    if _finite(pre.get("bytes_changed_by_the_rewrite")):
        text += f" Bytes changed by the rewrite: {pre['bytes_changed_by_the_rewrite']}."
    sha = lambda entry: str(entry.get("sha256", ""))[:16] or _DASH
    _count = lambda n: f"{n:,}" if _finite(n) else _DASH
    _gain = lambda db: f"{db:+.3f}" if _finite(db) else _DASH
    rows = [
        ["output scale", _scale(pre_q.get("scale")), _scale(now_q.get("scale"))],
        ["output zero point", _plain(pre_q.get("zero_point", _DASH)), _plain(now_q.get("zero_point", _DASH))],
        ["INT8 file size (bytes)", _count(pre.get("bytes")), _count(int8.get("bytes"))],
        ["INT8 file sha256 (first 16)", sha(pre), sha(int8)],
    ]
    figures = grid.get("pre_rewrite_figures") or {}
    if figures:
        quality = card.get("quality") or {}
        int8_row = next((r for r in quality.get("rows") or [] if r.get("method") == "student (INT8)"), {})
        rows += [
            ["PSNR, student (INT8) (dB)", _num(figures.get("psnr"), 3), _num(int8_row.get("psnr"), 3)],
            ["SSIM, student (INT8)", _num(figures.get("ssim"), 4), _num(int8_row.get("ssim"), 4)],
            ["PSNR vs teacher (dB)", _num(figures.get("psnr_vs_teacher"), 3), _num(int8_row.get("psnr_vs_teacher"), 3)],
            ["student gain (dB)", _gain(figures.get("student_gain_db")), _gain(quality.get("student_gain_db"))],
            ["gain kept", _percent(figures.get("gain_kept"), 1), _percent(quality.get("gain_kept"), 1)],
        ]
    blocks: list[_Block] = [_Para(text), _Table(["", "before the rewrite", "shipped"], rows, [False, True, True])]
    shift, notes = grid.get("shift_vs_pre_rewrite") or {}, []
    if shift:
        levels = shift.get("max_abs_diff_levels", _DASH)
        notes.append(("shift:", f"against the pre-rewrite file's outputs on {shift.get('on', _DASH)}, at most "
                                f"{_plain(levels)} {'level' if levels == 1 else 'levels'} apart, "
                                f"{_percent(shift.get('values_differing'), 1)} of values differ"))
    if grid.get("remeasured"):
        notes.append(("re-measured:", str(grid["remeasured"])))
    if grid.get("measured_on_pre_rewrite"):
        notes.append(("kept from the pre-rewrite file:", str(grid["measured_on_pre_rewrite"])))
    return blocks + ([_Items(notes)] if notes else [])


def _model(card: dict) -> list[_Block]:
    """The student before and after pruning, and the files written."""
    student, base = card["student"], card["student"]["base"]
    params = student.get("params")
    rows = [
        ["widths", _ints(base.get("widths")), _ints(student.get("widths"))],
        ["blocks", _ints(base.get("blocks")), _ints(student.get("blocks"))],
        ["middle", str(base.get("middle", _DASH)), str(student.get("middle", _DASH))],
        ["attention levels", str(base.get("attention", 0)), str(student.get("attention", 0))],
        ["MACs (640x480)", _macs(base.get("macs")), _macs(student.get("macs"))],
        ["params", _DASH, f"{params:,}" if _finite(params) else _DASH],
    ]
    files = []
    for key, label in _FILE_NAMES.items():
        entry = card["files"].get(key)
        files.append([label, str(entry["path"]), _size(entry.get("bytes")), str(entry.get("sha256", ""))[:16]]
                     if entry else [label, "not written", _DASH, _DASH])
    return [
        _Para(f"Teacher {_macs(card['teacher'].get('macs'))} MACs per frame; the student has "
              f"{_num(student.get('mac_reduction'), 1, 'x')} fewer, against a budget of "
              f"{_macs(_mac_budget(card)[0])} ({_mac_budget(card)[1]})."),
        _Table(["", "before pruning", "after pruning"], rows, [False, True, True]),
        _Table(["file", "path", "size", "sha256 (first 16)"], files, [False, False, True, False]),
    ]


def _latency(card: dict) -> list[_Block]:
    """How the expected latency was estimated, and how far to trust it."""
    lat, name = card["latency"], card["target"]["name"]
    kind = str(lat.get("mobilenet_kind"))
    text = (
        f"The target cannot be timed here, so the student and MobileNetV2-224 INT8 were timed side by side "
        f"on this host ({lat['host']}, {lat['threads']} threads): student {_ms(lat.get('student_ms'))}, "
        f"MobileNetV2 {_ms(lat.get('mobilenet_ms'))}. Scaled by MobileNetV2's latency on {name}, "
        f"{_ms(lat.get('mobilenet_target_ms'))} ({_REFERENCE_KINDS.get(kind, kind)}), the student is expected "
        f"to take {_ms(lat.get('expected_ms'))} ({_fps(lat.get('expected_ms'))}) against a budget of "
        f"{_ms(lat.get('budget_ms'))}. Basis: {str(lat['basis']).rstrip('.')}."
    )
    if _spread_text(lat):
        text += (f" Timing noise: the side-by-side timing was repeated {lat.get('repeats')} times "
                 f"({lat.get('rounds_per_repeat')} interleaved rounds each); the expected latency ranged over "
                 f"{_spread_text(lat)} (median {_ms(lat.get('expected_ms'))})"
                 + (", and the budget lies inside that range: the check reads \"within noise\"."
                    if lat.get("verdict") == "within noise" else "."))
    caveat = (
        f"Achieved MAC rates here: student {_gmacs(lat.get('student_macs_per_s'))}, MobileNetV2 "
        f"{_gmacs(lat.get('mobilenet_macs_per_s'))}, ratio {_num(lat.get('mac_rate_ratio'), 2)}. The scaling "
        f"assumes this ratio is the same on {name}; full-resolution element-wise work gains less from INT8 "
        "than MobileNetV2's convolutions, so the further the ratio is from 1, the rougher the estimate."
    )
    rows = [
        ["student, this host", _ms_value(lat.get("student_ms"))],
        ["MobileNetV2-224 INT8, this host", _ms_value(lat.get("mobilenet_ms"))],
        [f"MobileNetV2-224 on {name} ({kind})", _ms_value(lat.get("mobilenet_target_ms"))],
        [f"student expected on {name}", _ms_value(lat.get("expected_ms"))],
        *([[f"student expected on {name}, range over repeats",
            f"{_ms_value(lat['expected_ms_range'][0])}-{_ms_value(lat['expected_ms_range'][1])}"]]
          if _spread_text(lat) else []),
        [f"budget on {name}", _ms_value(lat.get("budget_ms"))],
    ]
    return [_Para(text), _Table(["", "ms"], rows, [False, True]), _Para(caveat)]


def _steps(card: dict) -> list[_Block]:
    """Each conversion step's wall time and whatever else it recorded."""
    rows, total = [], 0.0
    steps = dict(card["steps"])
    recorded_total = steps.pop("total", None)  # the card's own total: one "total" row, not a second sum
    for step, info in steps.items():
        seconds = info.get("seconds")
        total += seconds if _finite(seconds) else 0.0
        details = "; ".join(f"{k} {_plain(v)}" for k, v in info.items() if k != "seconds")
        rows.append([str(step), _num(seconds, 1), details])
    if not rows:
        return [_Para("No steps were recorded.")]
    if recorded_total:
        this_run = recorded_total.get("this_run_seconds")
        resumed = _finite(this_run) and _finite(recorded_total.get("seconds")) and this_run < 0.9 * recorded_total["seconds"]
        rows.append(["total", _num(recorded_total.get("seconds"), 1),
                     f"this run {_num(this_run, 1)} s" + (", the rest by the earlier runs it resumed" if resumed else "")
                     if _finite(this_run) else ""])
    else:
        rows.append(["total", _num(total, 1), ""])
    return [_Table(["step", "seconds", "details"], rows, [False, True, False])]


def _checks(card: dict) -> list[_Block]:
    """The acceptance checks, failures marked."""
    items = [("noise" if c.get("within_noise") else "pass" if c.get("passed") else "FAIL",
              f"{c['name']}: {c.get('detail', '')}"
              + (" (expected in a smoke run)" if c.get("expected_in_smoke_run") and not c.get("passed")
                 and not c.get("within_noise") else "")) for c in card.get("checks") or []]
    return [_Items(items) if items else _Para("No checks were run.")]


def _config(card: dict) -> list[_Block]:
    """The run's configuration, verbatim, so the run can be repeated."""
    return [_Code(json.dumps(card.get("config") or {}, indent=2, sort_keys=True, default=str), "json")]


def _document(card: dict, svg: str) -> tuple[str, list[_Section]]:
    """The report's title and sections, independent of the output format."""
    return f"edge-deblur convert: {card['name']}", [
        ("", _summary(card)),
        *([("Warnings", _warnings(card))] if _warnings(card) else []),
        ("Verdict", [_Para(_verdict(card))]),
        ("Quality", _quality(card, svg)),
        ("Quality by blur class", _by_class(card)),
        ("Model", _model(card)),
        *([("Output grid", _output_grid(card))]
          if isinstance(card.get("output_grid"), dict) or (card.get("config") or {}).get("output_grid") is True else []),
        ("Latency", _latency(card)),
        ("Steps", _steps(card)),
        ("Checks", _checks(card)),
        ("Configuration", _config(card)),
    ]


# --- quality by blur class (converters.blur_classes) ---------------------------------------------


def by_class_check(summary: dict) -> dict:
    """The card's check: every cell passes."""
    rows = summary["rows"]
    kept = [r["gain_kept"] for r in rows if r["gain_kept"] is not None]
    worst = f"; least kept {min(kept):.0%}" if kept else ""
    detail = (f"{len(rows) - len(summary['failed'])} of {len(rows)} cells pass{worst}"
              + (f"; failing: {', '.join(summary['failed'])}" if summary["failed"] else ""))
    return {"name": f"keeps >= {summary.get('gain_kept_required', 0.9):.0%} of the teacher's PSNR gain on every blur class",
            "passed": bool(summary["passed"]), "detail": detail, "kind": "gain"}


def _fmt(value: float | None, spec: str) -> str:
    return _DASH if value is None else format(value, spec)


def by_class_table(summary: dict, student_label: str | None = None) -> list[list[str]]:
    """The per-cell table rows (header first) for Markdown and the report."""
    student = student_label or summary["student"]
    teacher = summary["teacher"]
    table = [["class", "noise", "input PSNR / SSIM", "teacher PSNR / SSIM", f"{student} PSNR / SSIM",
              "teacher gain (dB)", "student gain (dB)", "gain kept", "verdict"]]
    for r in summary["rows"]:
        s = r["scores"]
        table.append([r["class"], f"{r['noise_sigma']:g}/255",
                      f"{s['blurred']['psnr']:.2f} / {s['blurred']['ssim']:.3f}",
                      f"{s[teacher]['psnr']:.2f} / {s[teacher]['ssim']:.3f}",
                      f"{s[summary['student']]['psnr']:.2f} / {s[summary['student']]['ssim']:.3f}",
                      f"{r['teacher_gain_db']:+.2f}", f"{r['student_gain_db']:+.2f}", _fmt(r["gain_kept"], ".0%"),
                      ("pass" if r["passed"] else "FAIL") + ("" if r["gain_kept"] is not None else " (no-harm rule)")])
    return table


def markdown_table(table: list[list[str]]) -> str:
    """A header-first list of rows as a Markdown table, numbers right-aligned."""
    head, *body = table
    align = ["---"] * 2 + ["---:"] * (len(head) - 3) + ["---"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
                     + ["| " + " | ".join(row) + " |" for row in body])


# --- Markdown ------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    """A table cell: a pipe or a line break would end the cell or the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_block(block: _Block) -> str:
    """One block as Markdown."""
    match block:
        case _Para(text):
            return text
        case _Table(headers, rows, numeric):
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                     "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            return "\n".join(lines)
        case _Items(items):
            return "\n".join(f"- **{m}** {t}" if m in ("FAIL", "warning") else f"- {m} {t}" for m, t in items)
        case _Code(text, language):
            # A fence longer than any backtick run in the text cannot be closed early by it.
            fence = "`" * max(3, _longest_backticks(text) + 1)
            return f"{fence}{language}\n{text}\n{fence}"
        case _Figure(_, caption):
            return f"![quality vs latency]({PLOT_FILE})\n\n*{caption}*"
    raise TypeError(f"unknown block {block!r}")


def _longest_backticks(text: str) -> int:
    """The longest run of consecutive backticks in ``text``."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest


def report_markdown(card: dict) -> str:
    """The report as Markdown; the plot is linked as ``quality_latency.svg`` next to it."""
    title, sections = _document(card, "")
    parts = [f"# {title}"]
    for heading, blocks in sections:
        if heading:
            parts.append(f"## {heading}")
        parts += [_md_block(b) for b in blocks]
    return "\n\n".join(parts) + "\n"


# --- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.8rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem}
th{background:#f3f3f3}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}svg{max-width:100%;height:auto}figcaption{color:#555;font-style:italic}
li.fail{color:#b71c1c}strong.fail{color:#b71c1c}pre{background:#f6f6f6;padding:.8rem;overflow:auto}
""".strip()


def _html_block(block: _Block) -> str:
    """One block as HTML, every card-provided string escaped."""
    e = html.escape
    match block:
        case _Para(text):
            return f"<p>{e(text)}</p>"
        case _Table(headers, rows, numeric):
            def cells(tag: str, values: Sequence[str]) -> str:
                """One row's cells, numeric columns right-aligned."""
                opens = [f'<{tag} class="num">' if n else f"<{tag}>" for n in numeric]
                return "".join(f"{o}{e(v)}</{tag}>" for o, v in zip(opens, values))
            body = "\n".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
            return f"<table>\n<thead><tr>{cells('th', headers)}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
        case _Items(items):
            lines = [f'<li class="fail"><strong class="fail">{e(m)}</strong> {e(t)}</li>' if m in ("FAIL", "warning")
                     else f"<li>{e(m)} {e(t)}</li>" for m, t in items]
            return "<ul>\n" + "\n".join(lines) + "\n</ul>"
        case _Code(text, _):
            return f"<pre><code>{e(text)}</code></pre>"
        case _Figure(svg, caption):
            return f"<figure>\n{svg}<figcaption>{e(caption)}</figcaption>\n</figure>"
    raise TypeError(f"unknown block {block!r}")


def report_html(card: dict) -> str:
    """The report as one self-contained HTML page: inline CSS, the plot inlined as SVG, no
    external assets, every string from the card escaped."""
    title, sections = _document(card, quality_latency_svg(card))
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, blocks in sections:
        if heading:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts += [_html_block(b) for b in blocks]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# --- files ---------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees half a file (``AtomicFile``)."""
    with AtomicFile(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_report(card: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``quality_latency.svg`` into ``out_dir`` (created if
    needed), each atomically; returns their paths as ``{"markdown", "html", "plot"}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Render everything before writing anything: a card that cannot be rendered leaves no files.
    texts: dict[str, tuple[Path, str]] = {
        "markdown": (out / MARKDOWN_FILE, report_markdown(card)),
        "html": (out / HTML_FILE, report_html(card)),
        "plot": (out / PLOT_FILE, quality_latency_svg(card)),
    }
    for path, text in texts.values():
        _write_atomic(path, text)
    return {key: path for key, (path, _) in texts.items()}
