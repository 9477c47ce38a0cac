"""Per-frame choice between the board's own method and the remote modes, from what each has cost lately.

Each mode's frame time is tracked as an exponentially weighted moving average, per frame size (a
mode's cost depends on the pixels; Neurosurgeon fits regressions offline, here the stream itself is
the measurement). A frame goes to the mode with the lowest expected time; each mode is measured
twice first, ``local`` first, and the first run is not kept: it pays the cold start (a connection,
the interpreter's allocation for a new size) that later frames do not. A mode not chosen for
``reprobe_every`` frames is run once so its estimate follows a changing link (and a server that
came back); each re-probe that finds it still losing doubles its interval (to 64x). A mode whose
expected time passes the frame deadline is skipped while one that meets it exists; when none does,
the least late one runs. Every choice and its reason are counted (``PlannerSummary``) and logged at
debug level.

On a slow link a measurement of a remote mode is a slow frame (4 s for a 230 kB frame each way at
1 Mbit/s), so by default (``background=True`` from ``partitioned_method``) remote modes are
measured *off the frame path*: a copy of the frame goes to the mode's ``probe`` (the remote path
alone, no local fallback) in a background thread, one probe at a time, while the frame itself goes
to the best mode measured so far (at first, ``local``). A probe that fails marks the mode
unavailable until its next re-probe. A :class:`LinkMonitor` pings the server's health endpoint
(a few hundred bytes) every ``ping_every_s`` on its own connection: the round trip's moving
average, and each remote measurement's bytes and the throughput they imply (bytes / (time - round
trip)), are kept per mode; between measurements, a remote mode's expected time follows the round
trip's change since it was measured (``expected = measured + rtt_now - rtt_then``), so a link whose
latency jumps prices its modes out at the next frame, before any re-probe.

An offload that falls back (a miss, a refusal) finishes locally inside ``Offload`` and its wall
time, deadline included, is what the estimate learns: a bad link prices itself out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .client import V2Client

log = logging.getLogger(__name__)
Method = Callable[[np.ndarray], np.ndarray]
UNAVAILABLE = float("inf")


@dataclass(frozen=True)
class PlannerConfig:
    deadline_s: float | None = None  # the frame budget; None: just the fastest
    alpha: float = 0.3  # weight of the newest measurement in the moving average
    reprobe_every: int = 20  # frames before a mode not chosen is measured again
    background: bool = False  # measure remote modes on frame copies off the frame path (their ``probe``)
    ping_every_s: float = 2.0  # the link monitor's round-trip probes


class LinkMonitor:
    """The link's round trip, from ``GET /v2/health/ready`` on a connection of its own (the first
    ping, which pays the TCP handshake, is not kept); a moving average with weight ``alpha``."""

    def __init__(self, url: str, token: str | None = None, alpha: float = 0.3, timeout_s: float = 2.0,
                 client: V2Client | None = None):
        self.client = client or V2Client(url, token)
        self.alpha, self.timeout_s = alpha, timeout_s
        self.rtt: float | None = None
        self.pings = 0
        self.failed = 0
        self._warm = False

    def ping(self) -> float | None:
        start = time.perf_counter()
        try:
            response, _ = self.client._request("GET", "/v2/health/ready", None, {}, self.timeout_s)
        except Exception:  # noqa: BLE001 - a dead link is a measurement too
            self.failed += 1
            self._warm = False
            return None
        seconds = time.perf_counter() - start
        if response.status != 200:
            self.failed += 1
            return None
        if not self._warm:  # that one paid the handshake: measure again on the open connection
            self._warm = True
            return self.ping()
        self.pings += 1
        self.rtt = seconds if self.rtt is None else (1 - self.alpha) * self.rtt + self.alpha * seconds
        return seconds

    def close(self) -> None:
        self.client.close()


@dataclass
class PlannerSummary:
    frames: Counter = field(default_factory=Counter)  # mode -> frames
    reasons: Counter = field(default_factory=Counter)  # (mode, reason) -> frames
    probes: Counter = field(default_factory=Counter)  # (mode, outcome) -> background measurements
    link: str = ""  # the link monitor's figures, at the end
    estimates: str = ""  # each mode's expected frame time, at the end

    def __str__(self) -> str:
        modes = ", ".join(f"{n} {m}" for m, n in sorted(self.frames.items()))
        why = "; ".join(f"{m} {r}: {n}" for (m, r), n in self.reasons.most_common())
        text = f"{sum(self.frames.values())} frame(s): {modes} ({why})"
        if self.probes:
            text += "; background probes: " + ", ".join(f"{m} {o}: {n}" for (m, o), n in sorted(self.probes.items()))
        if self.estimates:
            text += f"; expected {self.estimates}"
        if self.link:
            text += f"; link {self.link}"
        return text


def _bytes(method) -> int:
    """Bytes a remote mode has put on the wire so far (its summary's up + down), 0 when it keeps none."""
    s = getattr(method, "summary", None)
    return int(getattr(s, "bytes_up", 0) + getattr(s, "bytes_down", 0)) if s is not None else 0


class Planner:
    """``Planner({"local": deblur, "offload": Offload(...)})(frame)``: a method like the others."""

    def __init__(self, modes: dict[str, Method], config: PlannerConfig = PlannerConfig(), clock=time.perf_counter,
                 link: LinkMonitor | None = None):
        if "local" not in modes:
            raise ValueError("the planner needs a 'local' mode: the board must be able to finish every frame")
        self.modes, self.config, self._clock, self.link = dict(modes), config, clock, link
        self.estimates: dict[tuple[str, tuple], float] = {}  # (mode, frame shape) -> seconds
        self._rtt_then: dict[tuple[str, tuple], float] = {}  # the round trip when the estimate was made
        self._last_run: dict[tuple[str, tuple], int] = {}
        self._runs: Counter = Counter()  # (mode, frame shape) -> frames measured
        self._reprobe: dict[tuple[str, tuple], int] = {}  # frames between re-probes, doubled while a mode keeps losing
        self.wire: dict[str, tuple[float, float]] = {}  # mode -> (bytes per frame, implied bytes/s), moving averages
        self._frame = 0
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._ping: threading.Thread | None = None
        self._last_ping = -float("inf")
        self.summary = PlannerSummary()

    # -- estimates -------------------------------------------------------------------------------
    def expected(self, mode: str, shape: tuple) -> float:
        """The mode's expected frame time: its moving average, moved by the round trip's change
        since it was measured (remote modes, when the link monitor has figures)."""
        t = self.estimates[(mode, shape)]
        then = self._rtt_then.get((mode, shape))
        if mode != "local" and then is not None and self.link is not None and self.link.rtt is not None and t != UNAVAILABLE:
            t = max(0.0, t + self.link.rtt - then)
        return t

    def _learn(self, mode: str, shape: tuple, seconds: float, wire_bytes: int = 0) -> None:
        key = (mode, shape)
        previous = self.estimates.get(key) if self._runs[key] >= 2 and self.estimates.get(key) != UNAVAILABLE else None
        alpha = self.config.alpha
        self.estimates[key] = seconds if previous is None else (1 - alpha) * previous + alpha * seconds
        self._runs[key] += 1
        if self.link is not None and self.link.rtt is not None:
            self._rtt_then[key] = self.link.rtt
        if wire_bytes and seconds != UNAVAILABLE:
            transfer = max(seconds - (self.link.rtt if self.link is not None and self.link.rtt else 0.0), 1e-3)
            b, rate = self.wire.get(mode, (wire_bytes, wire_bytes / transfer))
            self.wire[mode] = ((1 - alpha) * b + alpha * wire_bytes, (1 - alpha) * rate + alpha * wire_bytes / transfer)

    def _measured(self, mode: str, shape: tuple) -> bool:
        return self._runs[(mode, shape)] >= 2

    def _stale(self, mode: str, shape: tuple) -> bool:
        key = (mode, shape)
        return self._frame - self._last_run.get(key, -10**9) >= self._reprobe.get(key, self.config.reprobe_every)

    def _after_reprobe(self, mode: str, shape: tuple) -> None:
        """A mode that still loses (or failed) is probed half as often: probes cost frames or bytes."""
        key = (mode, shape)
        others = [t for (m, sh), t in self.estimates.items() if sh == shape and m != mode]
        still_loses = bool(others) and self.estimates[key] > min(others)
        interval = self._reprobe.get(key, self.config.reprobe_every)
        self._reprobe[key] = min(interval * 2, 64 * self.config.reprobe_every) if still_loses else self.config.reprobe_every

    # -- choosing ----------------------------------------------------------------------------------
    def _best(self, candidates: list[str], shape: tuple) -> tuple[str, str]:
        expected = {m: self.expected(m, shape) for m in candidates}
        deadline = self.config.deadline_s
        meeting = {m: t for m, t in expected.items() if deadline is None or t <= deadline}
        if not meeting:  # every mode is late: the least late one
            best = min(expected, key=expected.get)
            return best, f"none meets the deadline, fastest expected ({1000 * expected[best]:.0f} ms)"
        best = min(meeting, key=meeting.get)
        if len(meeting) > 1:
            return best, f"fastest expected ({1000 * meeting[best]:.0f} ms)"
        if len(candidates) == 1:
            return best, "only mode measured"
        return best, "only mode within the deadline"

    def choose(self, shape: tuple) -> tuple[str, str]:
        """(mode, reason) for the next frame of ``shape`` (foreground measurement)."""
        unmeasured = [m for m in self.modes if not self._measured(m, shape)]
        if unmeasured:
            return unmeasured[0], "first measurement"
        stale = [m for m in self.modes if self._stale(m, shape)]
        if stale:
            return stale[0], "re-probe"
        return self._best(list(self.modes), shape)

    def _choose_background(self, shape: tuple) -> tuple[str, str, str | None]:
        """(mode, reason, mode to probe in the background or None): remote modes are measured off the
        frame path; the frame goes to the best measured mode (``local`` is measured on frames)."""
        if not self._measured("local", shape):
            return "local", "first measurement", None
        remote = [m for m in self.modes if m != "local"]  # probed in this order: put the fewest bytes first
        probe = next((m for m in remote if not self._measured(m, shape)), None) or next(
            (m for m in remote if self._stale(m, shape)), None)
        measured = [m for m in self.modes if self._measured(m, shape) and self.estimates[(m, shape)] != UNAVAILABLE]
        if self._stale("local", shape) and len(measured) > 1 and self._best(measured, shape)[0] != "local":
            return "local", "re-probe", probe
        mode, reason = self._best(measured, shape)
        return mode, reason, probe

    # -- running -----------------------------------------------------------------------------------
    def _start_probe(self, mode: str, frame: np.ndarray, shape: tuple) -> None:
        if self._probe is not None and self._probe.is_alive():
            return
        method = self.modes[mode]
        probe = getattr(method, "probe", None)
        if probe is None:
            return
        key = (mode, shape)
        first = not self._measured(mode, shape)
        self._last_run[key] = self._frame  # not asked for again while this one runs
        copy = frame.copy()

        def work():
            for _ in range(2 - self._runs[key] if first else 1):  # the cold first run is not kept
                before = _bytes(method)
                start = self._clock()
                outcome = probe(copy)
                seconds = self._clock() - start
                with self._lock:
                    if outcome is True:
                        self._learn(mode, shape, seconds, _bytes(method) - before)
                        self.summary.probes[(mode, "measured")] += 1
                    else:
                        self.estimates[key] = UNAVAILABLE
                        self._runs[key] = max(self._runs[key], 2)
                        self.summary.probes[(mode, f"failed: {outcome}")] += 1
                        log.info("probe of %s failed: %s", mode, outcome)
                    if not first:
                        self._after_reprobe(mode, shape)
                    self._last_run[key] = self._frame
                if outcome is not True:
                    return

        self._probe = threading.Thread(target=work, name=f"edge-deblur-probe-{mode}", daemon=True)
        self._probe.start()

    def _maybe_ping(self) -> None:
        if self.link is None or (self._ping is not None and self._ping.is_alive()):
            return
        now = time.monotonic()
        if now - self._last_ping < self.config.ping_every_s:
            return
        self._last_ping = now
        self._ping = threading.Thread(target=self.link.ping, name="edge-deblur-ping", daemon=True)
        self._ping.start()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        shape = tuple(np.shape(frame))
        self._maybe_ping()
        with self._lock:
            if self.config.background:
                mode, reason, probe = self._choose_background(shape)
            else:
                (mode, reason), probe = self.choose(shape), None
        if probe is not None:
            self._start_probe(probe, np.asarray(frame), shape)
        method = self.modes[mode]
        before = _bytes(method)
        start = self._clock()
        result = method(frame)
        seconds = self._clock() - start
        with self._lock:
            self._learn(mode, shape, seconds, _bytes(method) - before)
            if reason == "re-probe":
                self._after_reprobe(mode, shape)
            self._last_run[(mode, shape)] = self._frame
            self._frame += 1
            self.summary.frames[mode] += 1
            self.summary.reasons[(mode, reason.split(" (")[0].split(",")[0])] += 1
        log.debug("frame %d: %s (%s), %.1f ms", self._frame, mode, reason, 1000 * seconds)
        return result

    def close(self, timeout_s: float = 30.0) -> None:
        """``finish``, and the link monitor's connection closed."""
        self.finish(timeout_s)
        if self.link is not None:
            self.link.close()

    def finish(self, timeout_s: float = 30.0) -> None:
        """Wait for a probe in flight (its client may be about to close), and write the end figures
        into the summary."""
        for thread in (self._probe, self._ping):
            if thread is not None:
                thread.join(timeout_s)
        with self._lock:
            parts = []
            for (mode, shape), t in sorted(self.estimates.items()):
                size = f"{shape[1]}x{shape[0]}" if len(shape) >= 2 else str(shape)
                parts.append(f"{mode} {'unavailable' if t == UNAVAILABLE else f'{1000 * t:.0f} ms'} at {size}")
            self.summary.estimates = ", ".join(parts)
            wire = ", ".join(f"{m} {b / 1e3:.0f} kB/frame at {8 * r / 1e6:.1f} Mbit/s" for m, (b, r) in sorted(self.wire.items()))
            if self.link is not None:
                rtt = f"round trip {1000 * self.link.rtt:.0f} ms ({self.link.pings} pings)" if self.link.rtt is not None else \
                    f"round trip unmeasured ({self.link.failed} failed pings)"
                self.summary.link = rtt + (f"; {wire}" if wire else "")
            elif wire:
                self.summary.link = wire
