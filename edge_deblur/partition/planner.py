"""Per-frame choice between the board's own method and offloading, from what each has cost lately.

Each mode's frame time is tracked as an exponentially weighted moving average, per frame size (a
mode's cost depends on the pixels; Neurosurgeon fits regressions offline, here the stream itself is
the measurement). A frame goes to the mode with the lowest expected time; each mode is measured
twice first, ``local`` first, and the first run is not kept: it pays the cold start (a connection,
the interpreter's allocation for a new size) that later frames do not. A mode not chosen for ``reprobe_every`` frames is run once
so its estimate follows a changing link (and a server that came back); each re-probe that finds it
still losing doubles its interval (to 64x), since on a slow link every probe is a slow frame. A mode whose expected time
passes the frame deadline is skipped while one that meets it exists; when none does, the least
late one runs. Every choice and its reason
are counted (``PlannerSummary``) and logged at debug level.

An offload that falls back (a miss, a refusal) finishes locally inside ``Offload`` and its wall
time, deadline included, is what the estimate learns: a bad link prices itself out.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)
Method = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PlannerConfig:
    deadline_s: float | None = None  # the frame budget; None: just the fastest
    alpha: float = 0.3  # weight of the newest measurement in the moving average
    reprobe_every: int = 20  # frames before a mode not chosen is measured again


@dataclass
class PlannerSummary:
    frames: Counter = field(default_factory=Counter)  # mode -> frames
    reasons: Counter = field(default_factory=Counter)  # (mode, reason) -> frames

    def __str__(self) -> str:
        modes = ", ".join(f"{n} {m}" for m, n in sorted(self.frames.items()))
        why = "; ".join(f"{m} {r}: {n}" for (m, r), n in self.reasons.most_common())
        return f"{sum(self.frames.values())} frame(s): {modes} ({why})"


class Planner:
    """``Planner({"local": deblur, "offload": Offload(...)})(frame)``: a method like the others."""

    def __init__(self, modes: dict[str, Method], config: PlannerConfig = PlannerConfig(), clock=time.perf_counter):
        if "local" not in modes:
            raise ValueError("the planner needs a 'local' mode: the board must be able to finish every frame")
        self.modes, self.config, self._clock = dict(modes), config, clock
        self.estimates: dict[tuple[str, tuple], float] = {}  # (mode, frame shape) -> seconds
        self._last_run: dict[tuple[str, tuple], int] = {}
        self._runs: Counter = Counter()  # (mode, frame shape) -> frames measured
        self._reprobe: dict[tuple[str, tuple], int] = {}  # frames between re-probes, doubled while a mode keeps losing
        self._frame = 0
        self.summary = PlannerSummary()

    def choose(self, shape: tuple) -> tuple[str, str]:
        """(mode, reason) for the next frame of ``shape``."""
        unmeasured = [m for m in self.modes if self._runs[(m, shape)] < 2]
        if unmeasured:
            return unmeasured[0], "first measurement"
        stale = [m for m in self.modes if self._frame - self._last_run[(m, shape)] >=
                 self._reprobe.get((m, shape), self.config.reprobe_every)]
        if stale:
            return stale[0], "re-probe"
        expected = {m: self.estimates[(m, shape)] for m in self.modes}
        deadline = self.config.deadline_s
        meeting = {m: t for m, t in expected.items() if deadline is None or t <= deadline}
        if not meeting:  # every mode is late: the least late one
            best = min(expected, key=expected.get)
            return best, f"none meets the deadline, fastest expected ({1000 * expected[best]:.0f} ms)"
        best = min(meeting, key=meeting.get)
        return best, f"fastest expected ({1000 * meeting[best]:.0f} ms)" if len(meeting) > 1 else "only mode within the deadline"

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        shape = tuple(np.shape(frame))
        mode, reason = self.choose(shape)
        start = self._clock()
        result = self.modes[mode](frame)
        seconds = self._clock() - start
        key = (mode, shape)
        previous = self.estimates.get(key) if self._runs[key] >= 2 else None  # the cold first run is replaced
        self.estimates[key] = seconds if previous is None else (1 - self.config.alpha) * previous + self.config.alpha * seconds
        self._runs[key] += 1
        if reason == "re-probe":  # a mode that still loses is probed half as often: probes cost frames
            others = [t for (m, sh), t in self.estimates.items() if sh == shape and m != mode]
            still_loses = bool(others) and self.estimates[key] > min(others)
            interval = self._reprobe.get(key, self.config.reprobe_every)
            self._reprobe[key] = min(interval * 2, 64 * self.config.reprobe_every) if still_loses else self.config.reprobe_every
        self._last_run[key] = self._frame
        self._frame += 1
        self.summary.frames[mode] += 1
        self.summary.reasons[(mode, reason.split(" (")[0].split(",")[0])] += 1
        log.debug("frame %d: %s (%s), %.1f ms", self._frame, mode, reason, 1000 * seconds)
        return result
