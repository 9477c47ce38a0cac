"""Validation by blur class: held-out photos, held-out kernels, one score and one verdict per class.

A student validated on one kernel family is not validated (issue 14): a mean over Kodak24 x Levin
hides classes where the teacher mostly denoises or removes a small blur and the student does not.
So the held-out photos (Kodak24) are blurred by each of six classes, at each of two noise levels,
and the "keeps >= 90% of the teacher's gain" check is applied to every (class, noise) cell:

    small shake    trajectory kernels (converters.blur.trajectory_kernel), 11-15 px, centred
    medium shake   the same, 17-23 px
    large shake    the same, 25-31 px
    defocus        disks (edge_deblur.classical.defocus_psf), radius 1.5-4 px
    mild gaussian  Gaussian PSFs, sigma 0.7-1.5 px
    noise only     no blur (a sharp frame with sensor noise)

each at noise sigma 1/255 and 3/255 on the sRGB values (the evaluation forward model,
``converters.data.blur_photo``: blur in linear light, Gaussian noise on sRGB, 8-bit).

*Held-out kernels*: training draws kernels of the same families from its own generators
(``converters.blur.random_kernel``, seeded by the conversion's seed and step); these are drawn from
``CLASS_SEED``'s generator, a stream no training step uses, from continuous distributions, so no
training kernel is repeated here. The families overlap training's on purpose: they are what
cameras do.

The rule for a cell where the teacher has (almost) nothing to keep: below ``MIN_TEACHER_GAIN_DB``
(0.1 dB) 90% of the teacher's gain is smaller than the cell's own measurement noise (a mean over a
few crops), and a ratio of two numbers near zero says nothing (it can be negative or huge). There
the check asks instead that the student do no harm the teacher does not: its PSNR may be at most
``SMALL_GAIN_LOSS_DB`` (0.1 dB) below the better of the teacher and the input. (At exactly 0.1 dB of
teacher gain the two rules differ, 0.01 against 0.1 dB allowed loss: the second rule is looser by
what a 4-crop mean cannot resolve anyway.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from converters.report import by_class_check, by_class_table, markdown_table  # noqa: F401 (this module's API too)

GAIN_KEPT = 0.9  # DESIGN.md: the student keeps 90% of the teacher's PSNR gain
MIN_TEACHER_GAIN_DB = 0.1  # below this, the no-harm rule (module docstring)
SMALL_GAIN_LOSS_DB = 0.1  # ... the student at most this far below max(teacher, input)
CLASS_SEED = 14_2026  # the held-out kernels' and noise's generator: no training step uses it
NOISE_LEVELS = (1 / 255, 3 / 255)


@dataclass(frozen=True)
class BlurClass:
    """One blur class: a kernel family and the range its parameter is drawn from."""

    name: str
    kind: str  # "shake", "defocus", "gaussian" or "none"
    low: float = 0.0  # shake: smallest kernel side (odd); defocus: radius; gaussian: sigma
    high: float = 0.0

    def kernel(self, rng: np.random.Generator) -> np.ndarray:
        """One kernel of this class from ``rng``."""
        from converters.blur import center_kernel, trajectory_kernel
        from edge_deblur.classical import defocus_psf, gaussian_psf

        if self.kind == "shake":
            size = int(rng.choice(np.arange(int(self.low), int(self.high) + 1, 2)))
            return center_kernel(trajectory_kernel(rng, size=size))
        if self.kind == "defocus":
            return defocus_psf(rng.uniform(self.low, self.high))
        if self.kind == "gaussian":
            return gaussian_psf(rng.uniform(self.low, self.high))
        if self.kind == "none":
            return np.ones((1, 1))
        raise ValueError(f"unknown blur class kind {self.kind!r}")


BLUR_CLASSES = (
    BlurClass("small shake", "shake", 11, 15),
    BlurClass("medium shake", "shake", 17, 23),
    BlurClass("large shake", "shake", 25, 31),
    BlurClass("defocus", "defocus", 1.5, 4.0),
    BlurClass("mild gaussian", "gaussian", 0.7, 1.5),
    BlurClass("noise only", "none"),
)


@dataclass(frozen=True)
class ClassCell:
    """The pairs of one (class, noise) cell: ``(photo name, blurred, sharp)`` uint8 crops."""

    blur: str
    noise_sigma: float
    pairs: tuple[tuple[str, np.ndarray, np.ndarray], ...]


def class_cells(photos_per_cell: int = 4, crop: int = 256, seed: int = CLASS_SEED,
                photos: Sequence[tuple[str, np.ndarray]] | None = None,
                classes: Sequence[BlurClass] = BLUR_CLASSES,
                noise_levels: Sequence[float] = NOISE_LEVELS) -> list[ClassCell]:
    """The held-out pairs by (class, noise): cell ``k`` takes photos ``k * n .. k * n + n - 1`` of
    the held-out list (``n = photos_per_cell``, wrapping round), so with 12 cells of 4 every Kodak
    photo appears exactly twice and no cell's score rests on one kind of scene. Each photo is
    blurred over a margin of half the kernel around its centre ``crop`` (the crop sees real pixels,
    as over the full frame), noised and cropped; deterministic in ``seed``."""
    from converters.data import blur_photo, heldout_photos

    if photos_per_cell < 1:
        raise ValueError(f"photos_per_cell must be at least 1, got {photos_per_cell}")
    photos = list(photos) if photos is not None else heldout_photos()
    rng = np.random.default_rng(seed)
    cells, k = [], 0
    for blur in classes:
        for sigma in noise_levels:
            pairs = []
            for j in range(photos_per_cell):
                name, sharp = photos[(k * photos_per_cell + j) % len(photos)]
                kernel = blur.kernel(rng)
                h, w = sharp.shape[:2]
                if min(h, w) < crop:
                    raise ValueError(f"{name}: photo of {w}x{h} is smaller than the {crop}-pixel crop")
                pad = kernel.shape[0] // 2 + 1
                y, x = (h - crop) // 2, (w - crop) // 2
                y0, x0 = max(y - pad, 0), max(x - pad, 0)
                region = sharp[y0 : y + crop + pad, x0 : x + crop + pad]
                blurred = blur_photo(region, kernel, sigma, rng)[y - y0 : y - y0 + crop, x - x0 : x - x0 + crop]
                pairs.append((name.rsplit("/", 1)[-1].rsplit(".", 1)[0], np.ascontiguousarray(blurred),
                              np.ascontiguousarray(sharp[y : y + crop, x : x + crop])))
            cells.append(ClassCell(blur.name, sigma, tuple(pairs)))
            k += 1
    return cells


def cell_scores(cell: ClassCell, outputs: Sequence[np.ndarray]) -> dict:
    """Mean PSNR and SSIM (uint8, peak 255) of ``outputs`` against the cell's sharp crops."""
    from edge_deblur.metrics import psnr, ssim

    sharp = [s for _, _, s in cell.pairs]
    return {"psnr": round(float(np.mean([psnr(s, o) for s, o in zip(sharp, outputs)])), 3),
            "ssim": round(float(np.mean([ssim(s, o) for s, o in zip(sharp, outputs)])), 4)}


def verdict(blurred_psnr: float, teacher_psnr: float, student_psnr: float) -> dict:
    """Gain kept and pass/fail for one cell, by the rule of the module docstring."""
    teacher_gain, student_gain = teacher_psnr - blurred_psnr, student_psnr - blurred_psnr
    if teacher_gain >= MIN_TEACHER_GAIN_DB:
        return {"teacher_gain_db": round(teacher_gain, 3), "student_gain_db": round(student_gain, 3),
                "gain_kept": round(student_gain / teacher_gain, 3), "rule": f">= {GAIN_KEPT:.0%} of the teacher's gain",
                "passed": bool(student_gain >= GAIN_KEPT * teacher_gain)}
    floor = max(teacher_psnr, blurred_psnr) - SMALL_GAIN_LOSS_DB
    return {"teacher_gain_db": round(teacher_gain, 3), "student_gain_db": round(student_gain, 3), "gain_kept": None,
            "rule": f"teacher gains < {MIN_TEACHER_GAIN_DB} dB: at most {SMALL_GAIN_LOSS_DB} dB below max(teacher, input)",
            "passed": bool(student_psnr >= floor)}


Method = Callable[[np.ndarray], np.ndarray]  # uint8 HxWx3 in, uint8 HxWx3 out


def score_by_class(cells: Sequence[ClassCell], methods: dict[str, Method]) -> list[dict]:
    """One row per cell: the input's and every method's mean PSNR/SSIM. ``methods`` maps a label
    to a uint8 -> uint8 function; each runs once per pair."""
    rows = []
    for cell in cells:
        scores = {"blurred": cell_scores(cell, [b for _, b, _ in cell.pairs])}
        for label, method in methods.items():
            scores[label] = cell_scores(cell, [method(b) for _, b, _ in cell.pairs])
        rows.append({"class": cell.blur, "noise_sigma": round(cell.noise_sigma * 255, 3), "pairs": len(cell.pairs),
                     "scores": scores})
    return rows


def with_verdicts(rows: Sequence[dict], teacher: str, student: str) -> list[dict]:
    """``score_by_class`` rows with the student's gain kept and verdict against the teacher."""
    out = []
    for r in rows:
        if teacher not in r["scores"] or student not in r["scores"]:
            raise ValueError(f"rows must score the teacher {teacher!r} and the student {student!r}")
        s = r["scores"]
        out.append({**r, **verdict(s["blurred"]["psnr"], s[teacher]["psnr"], s[student]["psnr"])})
    return out


def evaluate_by_class(cells: Sequence[ClassCell], methods: dict[str, Method], teacher: str, student: str) -> list[dict]:
    """``score_by_class`` and ``with_verdicts`` in one."""
    return with_verdicts(score_by_class(cells, methods), teacher, student)


def by_class_summary(rows: Sequence[dict], teacher: str, student: str, photos_per_cell: int, crop: int,
                     seed: int = CLASS_SEED) -> dict:
    """The card's ``quality.by_class``: the set in words, the rule, the rows and the check."""
    failed = [f"{r['class']} at {r['noise_sigma']:g}/255" for r in rows if not r["passed"]]
    noises = ", ".join(f"{n:g}/255" for n in sorted({r["noise_sigma"] for r in rows}))
    summary = {
        "dataset": (f"held-out Kodak24 photos x held-out kernels (seed {seed}): {len({r['class'] for r in rows})} blur "
                    f"classes x noise {noises}, "
                    f"{photos_per_cell} photo(s) per cell, {crop}px centre crops"),
        "classes": [{"name": c.name, "kind": c.kind, "range": [c.low, c.high]} for c in BLUR_CLASSES],
        "photos_per_cell": photos_per_cell, "crop": crop, "seed": seed,
        "teacher": teacher, "student": student,
        "rule": (f"per (class, noise) cell: the student keeps >= {GAIN_KEPT:.0%} of the teacher's PSNR gain; where the "
                 f"teacher gains < {MIN_TEACHER_GAIN_DB} dB (90% of it is below a few crops' noise), the student may be "
                 f"at most {SMALL_GAIN_LOSS_DB} dB below max(teacher, input)"),
        "gain_kept_required": GAIN_KEPT, "rows": list(rows), "passed": not failed, "failed": failed,
    }
    summary["teacher_harms"] = teacher_harms(summary)
    return summary


def teacher_harms(summary: dict) -> list[str]:
    """Warnings for the cells where the teacher itself makes the frame worse by more than
    ``SMALL_GAIN_LOSS_DB``: there the no-harm rule asks the student to beat its teacher, which
    distillation from that teacher alone cannot do."""
    teacher = summary["teacher"]
    return [f"the teacher makes {r['class']} frames at noise {r['noise_sigma']:g}/255 worse "
            f"({r['scores']['blurred']['psnr']:.2f} -> {r['scores'][teacher]['psnr']:.2f} dB): a student distilled "
            "from it cannot pass that class's no-harm rule"
            for r in summary["rows"] if r["teacher_gain_db"] < -SMALL_GAIN_LOSS_DB]
