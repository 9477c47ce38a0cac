"""The value range a teacher expects, stated (``--input-range``, a sidecar) or detected.

A convention is an affine map per channel from RGB in [0, 1] to the model's values,
``model = scale * x + offset``: ``0-1`` (1, 0), ``0-255`` (255, 0), ``-1-1`` (2, -1, i.e.
x / 127.5 - 1 on 8-bit values), or ``MEAN,STD`` ((x - MEAN) / STD, one pair or one per channel).
The teacher's output is read back through the same map.

Detection (``detect_value_range``) runs the teacher on real blurred validation crops under each
named convention and judges how plausible each output is *as a deblurred image of its input*, not
only how close it comes to the sharp crop: a weak teacher may restore little, and a residual network
fed a range it does not expect often returns its input almost unchanged, which can then be "closer
to the ground truth" than the right answer. So each convention's output, read back into [0, 1], is

1. *not an image of the input* when it is not finite, saturates (more than ``SATURATED`` of its
   values beyond [-0.05, 1.05]), shifts the mean by more than ``MEAN_SHIFT`` or moves pixels by more
   than ``CHANGE_MAX`` (root mean square): a deblurrer corrects its input, it does not replace it;
2. *inactive* when it changes the input by less than ``ACTIVE`` (half a grey level, rms): the
   teacher does nothing under that convention;
3. otherwise *an active image*, ranked by its PSNR gain over the input against the sharp crops.

The convention that ranks first (class, then gain) is chosen. The margin is what separates it from
the runner-up: dB of gain when both are active images (ambiguous under ``AMBIGUOUS_DB``), the ratio
of their changes when the runner-up is inactive (ambiguous under ``AMBIGUOUS_RATIO``), or a
runner-up that is not an image (clear). An ambiguous detection is reported with a request to state
the range; a teacher that is inactive under every convention is ambiguous by nature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edge_deblur.errors import ModelError

# The named conventions, as (scale, offset): model_value = scale * x + offset.
VALUE_RANGES: dict[str, tuple[float, float]] = {"0-1": (1.0, 0.0), "0-255": (255.0, 0.0), "-1-1": (2.0, -1.0)}

SATURATED = 0.01  # fraction of values beyond [-0.05, 1.05]: a deblurrer's overshoot at edges stays far below
MEAN_SHIFT = 0.05  # a deblurrer keeps the mean brightness; a wrong range moves it by a large fraction
CHANGE_MAX = 0.25  # rms change: a quarter of the range is a new image, not a correction
ACTIVE = 0.5 / 255  # rms change below half a grey level: the teacher does nothing
AMBIGUOUS_DB = 0.1  # two active conventions closer than this in gain are not told apart reliably
AMBIGUOUS_RATIO = 4.0  # an "inactive" runner-up changing the input within 4x of the chosen one is not clearly inactive


@dataclass(frozen=True)
class InputRange:
    """An affine map per channel from [0, 1] RGB to the model's values, with its name."""

    name: str
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]

    def to_model(self, x: np.ndarray) -> np.ndarray:
        return (x * np.asarray(self.scale, np.float32) + np.asarray(self.offset, np.float32)).astype(np.float32)

    def from_model(self, y: np.ndarray) -> np.ndarray:
        return ((y - np.asarray(self.offset, np.float32)) / np.asarray(self.scale, np.float32)).astype(np.float32)

    def fingerprint(self) -> list:
        return [self.name, [round(v, 9) for v in self.scale], [round(v, 9) for v in self.offset]]


def named_range(name: str) -> InputRange:
    scale, offset = VALUE_RANGES[name]
    return InputRange(name, (scale,) * 3, (offset,) * 3)


def parse_input_range(text: str) -> InputRange:
    """``0-1``, ``0-255``, ``-1-1``, ``MEAN,STD`` (model = (x - MEAN) / STD on x in [0, 1]) or
    ``M1,M2,M3,S1,S2,S3`` (per channel). Raises ``ModelError`` naming the problem."""
    text = str(text).strip()
    if text in VALUE_RANGES:
        return named_range(text)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 6) or not all(math.isfinite(v) for v in values):
        raise ModelError(f"--input-range {text!r}: expected 0-1, 0-255, -1-1, MEAN,STD or M1,M2,M3,S1,S2,S3 "
                         "(MEAN and STD of [0, 1] values, e.g. 0.5,0.5 for x/127.5-1)")
    mean, std = (values[:1] * 3, values[1:] * 3) if len(values) == 2 else (values[:3], values[3:])
    if any(s <= 0 for s in std):
        raise ModelError(f"--input-range {text!r}: STD must be positive")
    return InputRange(",".join(f"{v:g}" for v in values), tuple(1.0 / s for s in std), tuple(-m / s for m, s in zip(mean, std)))


def range_from_sidecar(value) -> InputRange:
    """A sidecar's ``input_range``: ``[lo, hi]`` (the model values of black and white) or any
    ``--input-range`` text."""
    if isinstance(value, str):
        return parse_input_range(value)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ModelError(f"sidecar input_range {value!r}: expected [lo, hi] or a text like '-1-1'") from e
    if not hi > lo:
        raise ModelError(f"sidecar input_range {value!r}: white must map above black")
    name = next((k for k, (s, o) in VALUE_RANGES.items() if (o, s + o) == (lo, hi)), f"{lo:g}..{hi:g}")
    return InputRange(name, (hi - lo,) * 3, (lo,) * 3)


@dataclass(frozen=True)
class Candidate:
    """One convention's output on the probe crops, read back into [0, 1]."""

    name: str
    verdict: str  # "active image" | "inactive" | "not an image: <why>"
    gain_db: float  # PSNR gain over the input against the sharp crops (clipped output)
    change_rms: float
    saturated: float
    mean_shift: float

    @property
    def rank(self) -> int:
        return 2 if self.verdict == "active image" else 1 if self.verdict == "inactive" else 0


@dataclass(frozen=True)
class Detection:
    chosen: str
    runner_up: str
    margin: float | None  # dB of gain, or a ratio of changes; None when the runner-up is not an image
    margin_kind: str  # "dB" | "x change" | "runner-up not an image"
    ambiguous: bool
    summary: str
    candidates: tuple[Candidate, ...]

    def as_dict(self) -> dict:
        return {**asdict(self), "candidates": [asdict(c) for c in self.candidates]}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def judge(name: str, out: np.ndarray, blurred: np.ndarray, sharp: np.ndarray) -> Candidate:
    """How plausible ``out`` (read back into [0, 1]) is as a deblurred image of ``blurred``."""
    if not np.all(np.isfinite(out)):
        return Candidate(name, "not an image: not finite", -math.inf, math.inf, 1.0, math.inf)
    saturated = float(np.mean((out < -0.05) | (out > 1.05)))
    mean_shift = float(abs(out.mean() - blurred.mean()))
    change = float(np.sqrt(np.mean((out - blurred) ** 2)))
    gain = _psnr(np.clip(out, 0, 1), sharp) - _psnr(blurred, sharp)
    if saturated > SATURATED:
        verdict = f"not an image: {saturated:.0%} of values saturated"
    elif mean_shift > MEAN_SHIFT:
        verdict = f"not an image: mean moved by {mean_shift:.2f}"
    elif change > CHANGE_MAX:
        verdict = f"not an image: pixels moved by {change:.2f} rms"
    elif change < ACTIVE:
        verdict = "inactive"
    else:
        verdict = "active image"
    return Candidate(name, verdict, round(gain, 4), round(change, 6), round(saturated, 4), round(mean_shift, 4))


def decide(candidates: list[Candidate]) -> Detection:
    """The convention ranking first (class, then gain), its margin over the runner-up, and
    whether that margin is too thin to trust (see the module docstring)."""
    order = sorted(candidates, key=lambda c: (c.rank, c.gain_db, -list(VALUE_RANGES).index(c.name)
                                              if c.name in VALUE_RANGES else 0), reverse=True)
    best, second = order[0], order[1]
    if best.rank < 2:
        why = ("changes its input by less than half a grey level under every convention" if best.rank == 1
               else "gives no image of its input under any convention")
        return Detection(best.name, second.name, None, "none", True, f"the teacher {why}; {best.name} assumed",
                         tuple(candidates))
    if second.rank == 2:
        margin, kind = best.gain_db - second.gain_db, "dB"
        ambiguous = margin < AMBIGUOUS_DB
        text = f"{margin:+.2f} dB of gain over {second.name}"
    elif second.rank == 1:
        margin, kind = best.change_rms / max(second.change_rms, 1e-9), "x change"
        ambiguous = margin < AMBIGUOUS_RATIO
        text = f"{second.name} does nearly nothing ({second.change_rms * 255:.2f} grey levels rms, {margin:.0f}x less)"
    else:
        margin, kind, ambiguous = None, "runner-up not an image", False
        text = f"{second.name} gives no image ({second.verdict.split(': ', 1)[-1]})"
    gain = f"gain {best.gain_db:+.2f} dB, change {best.change_rms * 255:.1f} grey levels rms"
    return Detection(best.name, second.name, None if margin is None else round(margin, 3), kind, ambiguous,
                     f"{best.name} ({gain}); {text}", tuple(candidates))


def detect_value_range(run_model: Callable[[np.ndarray], np.ndarray],
                       probe: tuple[np.ndarray, np.ndarray]) -> Detection:
    """Run ``run_model`` (model-space NHWC in and out, any size) on the probe's blurred crops under
    each named convention and decide which one it expects (module docstring)."""
    blurred, sharp = probe
    candidates = []
    for name in VALUE_RANGES:
        convention = named_range(name)
        out = convention.from_model(np.asarray(run_model(convention.to_model(blurred)), np.float32))
        candidates.append(judge(name, out, blurred, sharp))
    return decide(candidates)
