"""Per-frame choice between the board's own method and the remote modes, from a cost model of each.

A remote mode's frame time is modelled as its parts:

    expected = fixed + round trip + bytes / throughput

``bytes`` is what the mode puts on the wire for a frame (up and down), ``fixed`` everything else: the
board's stages (coding the frame, the split mode's head and tail parts) and the server's compute
(its queue included). The link's two figures come from a :class:`LinkMonitor` on a connection of
its own: the round trip from ``GET /v2/health/ready`` every ``ping_every_s``, the throughput from a
*sized ping* (two 8x8 PNGs through the ``teacher`` model, one padded with 64 kB the decoder skips:
the difference of their times is the transfer of those bytes, without the server's compute) every
``sized_ping_every`` pings; both are moving averages, and neither moves a frame's worth of bytes.
The sized ping's 64 kB pass tc's bucket and the queues faster than a frame's hundreds of kB, so
above 1 Mbit/s it overestimates the rate (2-5x on a 10 Mbit/s link); once a frame or a probe has
moved a large answer, the throughput is learned from the real transfers instead: the answer's body
after its first 16 kB over the time it took to arrive (``V2Client.timed_bytes``), which has no round
trip and no server compute in it, as a moving average (``LinkMonitor.observe_transfer``). A lower
bound still takes the higher of that and the sized pings' figure, so it never blocks a probe that
the sized pings would let through. A ping that overlaps a transfer measures it and is dropped, so a
due ping starts between frames (after one, and before the next), and a remote frame waits for the
ping in flight (at most one round trip, once per ``ping_every_s``): while every frame goes to the
server the round trip is still re-measured (the time to a response's first bytes is not used for
it: it holds the upload and the server's compute).
Each measured frame of a mode (a frame it did, or a background probe) updates its ``fixed`` part
(``seconds - round trip - bytes / throughput`` at that moment), and its bytes per frame, as moving
averages per frame size (a mode's cost depends on the pixels; Neurosurgeon fits regressions
offline, here the stream itself is the measurement). Between measurements a remote mode's expected
time follows the link: a round trip that jumps or a throughput that halves prices it out at the
next frame, without a slow frame to find out. Without a link monitor (or before its figures) the
expected time is the moving average of the measured times.

Hysteresis: once frames go to a mode, another takes them only when it is expected
``switch_margin`` (1.05) times faster, or the current one misses the deadline the other meets, or
fails; near ties (split 255 ms against local 283) then go one way consistently, instead of
flipping on each frame's noise, and the current mode's frames keep its estimate current. A frame's
time is learned as the median of the mode's last ``spike_window`` (3) frames (a fallback as it is),
so one slow frame (this host's other jobs, a ping beside it) moves no estimate; a lasting change
does from its second frame.

The board finishes every frame it is not sure a remote mode does faster: frames go to the mode
measured fastest, ``local`` (measured on the frames themselves, twice, the first one not kept: it
pays the interpreter's allocation) from the first frame. Remote modes are measured *off the frame
path* (``background=True``, what ``partitioned_method`` uses): a copy of the frame goes to the mode's
``probe`` (the remote path alone, no local fallback) in a background thread, one probe at a time,
twice for the first measurement (the cold run is dropped). A probe moves a frame's bytes, so it is
made only for a mode that can win: its *lower bound* (round trip + its fewest plausible bytes /
throughput, from ``wire_estimate``, no compute at all) must be under ``probe_margin`` x the best
measured expected time (or the frame deadline); unmeasured modes are probed lowest bound first. A
mode that cannot win is not probed at all, and the link figures keep its bound current, so it is
probed when the link gets better. A measured remote mode not chosen for ``reprobe_every`` frames
is probed again only when its modelled time is within ``probe_margin`` of the best (each such
re-probe that finds it still losing doubles its interval, to 64x); ``local`` is re-run on a frame
when it is losing and stale. A probe runs beside a frame (on a one-core board the split mode's
head and tail share the core with it), so it can measure a mode slower than it is: a mode last
measured by a probe and expected within ``trial_margin`` (1.15x) of the best gets one frame of its
own (reason ``trial``, once per ``reprobe_every`` frames), and a frame's time always replaces an
estimate that probes made (frames then average among themselves). Probes share the server with
frames: one is started only on a frame that stays on the board (when the best mode is ``local``),
a probe overlapped by a remote frame is dropped, and a remote frame beside a probe is not learned
from (each measured the other's queue). While the frames go to a remote mode, the mode due for a
probe (the same rules: unmeasured, or stale and within ``probe_margin``) gets a frame of its own
instead (reason ``first measurement``, twice, or ``re-probe``), so a mode not in use is still
measured and re-measured; a re-probe's frame is learned as it is, not as the median with the
mode's frames from before. A probe that fails marks the mode unavailable until its
next re-probe.

Offload encodings: a mode whose ``quality_loss_db`` (the measured loss of its encoding,
``encoding.QUALITY_LOSS_DB``) exceeds ``PlannerConfig.max_quality_loss_db`` is refused when the
planner is made: trading quality for latency is the user's explicit statement, never a default (0:
lossless only). An offload encoding that is not yet measured is modelled from a measured offload of
the same server model: its ``fixed`` less that one's coding time plus its own (timed by coding the
frame here once), and its own bytes; so only an encoding that the model says can win is probed.

A mode whose expected time passes the frame deadline is skipped while one that meets it exists;
when none does, the least late one runs. Every choice and its reason are counted
(``PlannerSummary``) and logged at debug level; so are probes made and probes not made.

An offload that falls back (a miss, a refusal) finishes locally inside ``Offload`` and its wall
time, deadline included, is what the estimate learns: a bad link prices itself out.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .client import V2Client
from .offload import ServerModel

log = logging.getLogger(__name__)
Method = Callable[[np.ndarray], np.ndarray]
UNAVAILABLE = float("inf")
MAX_THROUGHPUT = 1.25e9  # bytes/s (10 Gbit/s): two sized pings closer than a clock's jitter say no more


@dataclass(frozen=True)
class PlannerConfig:
    deadline_s: float | None = None  # the frame budget; None: just the fastest
    alpha: float = 0.3  # weight of the newest measurement in the moving averages
    reprobe_every: int = 20  # frames before a mode not chosen may be measured again
    background: bool = False  # measure remote modes on frame copies off the frame path (their ``probe``)
    ping_every_s: float = 2.0  # the link monitor's round-trip pings
    sized_ping_every: int = 5  # every n-th ping (and the first) is followed by a sized ping (throughput)
    probe_margin: float = 1.5  # probe a remote mode only when its bound (or model) is under this x the best
    trial_margin: float = 1.15  # a probed mode this close to the best gets a frame of its own (``_trial``); 1: never
    max_quality_loss_db: float = 0.0  # lossy offload encodings allowed up to this measured loss; 0: lossless only
    # hysteresis: once frames go to a mode, another measured mode takes them only when it is expected
    # this many times faster (1.05: 5% faster); a mode that misses the deadline, fails or is
    # unavailable is left at once. 1: always the fastest expected (flips on every noisy frame)
    switch_margin: float = 1.05
    # a frame's time is learned as the median of the mode's last ``spike_window`` frames (a frame the
    # mode finished on the board, a fallback, is learned as it is): one frame slowed by this host's
    # other jobs or a ping beside it (+40% here, one in six) does not move the estimate, a lasting
    # change does from its second frame. 1: each frame as it is
    spike_window: int = 3

    def __post_init__(self):
        if not self.max_quality_loss_db >= 0:
            raise ValueError(f"max_quality_loss_db {self.max_quality_loss_db!r}: expected a number of dB >= 0")
        if self.probe_margin < 1:
            raise ValueError(f"probe_margin {self.probe_margin!r}: expected >= 1")
        if self.trial_margin < 1:
            raise ValueError(f"trial_margin {self.trial_margin!r}: expected >= 1")
        if not self.switch_margin >= 1:
            raise ValueError(f"switch_margin {self.switch_margin!r}: expected >= 1")
        if self.spike_window < 1:
            raise ValueError(f"spike_window {self.spike_window!r}: expected >= 1")


def _png_chunk(kind: bytes, data: bytes) -> np.ndarray:
    """A PNG chunk: length, type, data, CRC-32 of type and data."""
    body = kind + data
    raw = len(data).to_bytes(4, "big") + body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big")
    return np.frombuffer(raw, np.uint8)


class LinkMonitor:
    """The link's round trip and throughput, on a connection of its own (its first ping, which pays
    the TCP handshake, is not kept): ``ping`` (``GET /v2/health/ready``, a few hundred bytes) for the
    round trip, ``sized_ping`` (two 8x8 PNGs through the server's ``teacher`` model, one carrying
    ``bytes_each_way`` more) for the throughput. Moving averages with weight ``alpha``. A ping that
    overlapped a frame's or a probe's transfer (``busy()`` true before or after it, or a transfer
    begun meanwhile: ``generation()`` moved) is dropped: it measured the other's queue."""

    def __init__(self, url: str, token: str | None = None, alpha: float = 0.3, timeout_s: float = 2.0,
                 client: V2Client | None = None, model: str | ServerModel = "teacher", bytes_each_way: int = 64_000):
        self.client = client or V2Client(url, token)
        self.alpha, self.timeout_s = alpha, timeout_s
        # the model as the server names it: an old server's `deblur` where it has no `teacher`
        # (ServerModel; shared with the offload modes by partitioned_method)
        self.server_model = model if isinstance(model, ServerModel) else ServerModel(model, url)
        self.bytes_each_way = bytes_each_way
        self.rtt: float | None = None
        self.seconds_per_byte: float | None = None  # the throughput's inverse, moving average
        self.pings = self.sized = self.failed = self.dropped = 0
        self.sized_failed: str | None = None  # why the last sized ping gave nothing
        self.recent: list[float] = []  # the last sized pings' figures
        self.transfer_seconds_per_byte: float | None = None  # real transfers' (observe_transfer), moving average
        self.transfers = 0
        self._warm = False
        self.busy: Callable[[], bool] = lambda: False
        self.generation: Callable[[], int] = lambda: 0

    def _quiet(self, fn):
        """``fn()``'s (seconds, result) when no other transfer overlapped it, else None."""
        if self.busy():
            self.dropped += 1
            return None
        before = self.generation()
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        if self.busy() or self.generation() != before:
            self.dropped += 1
            return None
        return seconds, result

    def _average(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.alpha) * old + self.alpha * new

    def ping(self) -> float | None:
        def call():
            return self.client._request("GET", "/v2/health/ready", None, {}, self.timeout_s)[0].status
        try:
            measured = self._quiet(call)
        except Exception:  # noqa: BLE001 - a dead link is a measurement too
            self.failed += 1
            self._warm = False
            return None
        if measured is None:
            return None
        seconds, status = measured
        if status != 200:
            self.failed += 1
            return None
        if not self._warm:  # that one paid the handshake: measure again on the open connection
            self._warm = True
            return self.ping()
        self.pings += 1
        self.rtt = self._average(self.rtt, seconds)
        return seconds

    @property
    def model(self) -> str:
        """The server's model that sized pings go to."""
        return self.server_model.name

    def _timed_infer(self, png: np.ndarray):
        if self.server_model.missing:
            raise LookupError(self.server_model.missing)
        return self._quiet(lambda: self.server_model.infer(self.client, "image", png, max(self.timeout_s, 10.0),
                                                           {"encoding": "png"}))

    def sized_ping(self) -> float | None:
        """One throughput measurement (bytes/s), or None (``sized_failed`` says why).

        Two requests to the server's ``teacher`` model (the feed-forward network: the same
        compute for both, tens of ms; ``deblur``'s auto engine would take a path of its own) that differ only in their bytes: an 8x8 gray
        PNG, and the same PNG carrying ``bytes_each_way`` more in a private ancillary chunk (which
        decoders skip). The server decodes and deblurs the same 8 x 8 pixels for both, so the
        difference of their times is the extra bytes' transfer time, without the server's compute
        (tens of milliseconds per request here, whatever the size) in it: throughput = extra bytes
        / (seconds padded - seconds plain). It is the upstream's, taken for both directions. A
        server that takes no PNG (Triton's exported model takes raw frames) gives no figure, and the
        planner goes on with measured times and the round trip alone. The very first pair is sent
        twice: the first pays the server's allocation for the size."""
        if self.rtt is None:
            return None
        from .encoding import Encoding, encode

        plain = encode(np.zeros((8, 8, 3), np.uint8), Encoding("png"))
        padded = np.concatenate([plain[:33], _png_chunk(b"edGe", bytes(self.bytes_each_way)), plain[33:]])
        try:
            for _ in range(1 if self.sized else 2):
                small = self._timed_infer(plain)
                large = self._timed_infer(padded)
        except Exception as e:  # noqa: BLE001 - no such model, no PNG, a refusal, a dead link: no figure
            self.sized_failed = f"{type(e).__name__}: {e}"[:120]
            return None
        if small is None or large is None:
            return None
        extra = large[1].bytes_up + large[1].bytes_down - small[1].bytes_up - small[1].bytes_down
        # averaged as seconds per byte: the noise is in the times (the server's jitter, a few ms),
        # and a difference that comes out negative is a sample of it, kept, not clipped
        per_byte = (large[0] - small[0]) / extra
        self.sized += 1
        self.sized_failed = None
        self.seconds_per_byte = self._average(self.seconds_per_byte, per_byte)
        self.recent = (self.recent + [per_byte])[-5:]
        return 1 / max(per_byte, 1 / MAX_THROUGHPUT)

    def observe_transfer(self, nbytes: int, seconds: float) -> None:
        """A real transfer's figure: ``nbytes`` of a frame's (or a probe's) response body that took
        ``seconds`` to arrive after its first bytes (``V2Client.timed_bytes``/``timed_seconds``):
        no round trip and no server compute in it. Moving average as seconds per byte."""
        if nbytes <= 0 or seconds <= 0:
            return
        per_byte = max(seconds / nbytes, 1 / MAX_THROUGHPUT)
        self.transfer_seconds_per_byte = self._average(self.transfer_seconds_per_byte, per_byte)
        self.transfers += 1

    @property
    def sized_throughput(self) -> float | None:
        """Bytes/s, the sized pings' moving average."""
        return None if self.seconds_per_byte is None else 1 / max(self.seconds_per_byte, 1 / MAX_THROUGHPUT)

    @property
    def transfer_throughput(self) -> float | None:
        """Bytes/s, the real transfers' moving average (``observe_transfer``), None before one."""
        return None if self.transfer_seconds_per_byte is None else 1 / self.transfer_seconds_per_byte

    @property
    def throughput(self) -> float | None:
        """Bytes/s for the cost model: the real transfers' figure once there is one, else the sized
        pings'. A sized ping's 64 kB (upstream) pass tc's bucket and the queues faster than a
        frame's hundreds of kB do: above 1 Mbit/s it read 2-5x the rate of a 10 Mbit/s link
        (docs/BENCHMARKS.md); a frame's own transfer is the rate frames get."""
        real = self.transfer_throughput
        return real if real is not None else self.sized_throughput

    @property
    def throughput_high(self) -> float | None:
        """What a lower bound of a transfer may assume: the highest of the last five sized pings (a
        sized ping's noise, the server's few milliseconds of jitter, only ever slows one down), or
        the transfers' figure where that is higher. Never below the sized pings' alone, so the
        transfers' figure never blocks a probe that the sized pings would let through."""
        high = 1 / max(min(self.recent), 1 / MAX_THROUGHPUT) if self.recent else None
        real = self.transfer_throughput
        return real if high is None else high if real is None else max(high, real)

    def close(self) -> None:
        self.client.close()


@dataclass
class PlannerSummary:
    frames: Counter = field(default_factory=Counter)  # mode -> frames
    reasons: Counter = field(default_factory=Counter)  # (mode, reason) -> frames
    probes: Counter = field(default_factory=Counter)  # (mode, outcome) -> background measurements
    not_probed: dict = field(default_factory=dict)  # mode -> why no probe was made (the latest reason)
    link: str = ""  # the link monitor's figures, at the end
    estimates: str = ""  # each mode's expected frame time, at the end

    def __str__(self) -> str:
        modes = ", ".join(f"{n} {m}" for m, n in sorted(self.frames.items()))
        why = "; ".join(f"{m} {r}: {n}" for (m, r), n in self.reasons.most_common())
        text = f"{sum(self.frames.values())} frame(s): {modes} ({why})"
        if self.probes:
            text += "; background probes: " + ", ".join(f"{m} {o}: {n}" for (m, o), n in sorted(self.probes.items()))
        if self.not_probed:
            text += "; not probed: " + ", ".join(f"{m} ({r})" for m, r in sorted(self.not_probed.items()))
        if self.estimates:
            text += f"; expected {self.estimates}"
        if self.link:
            text += f"; link {self.link}"
        return text


def _size(shape: tuple) -> str:
    """A frame shape as the summary writes it: WxH."""
    return f"{shape[1]}x{shape[0]}" if len(shape) >= 2 else str(shape)


def _bytes(method) -> int:
    """Bytes a remote mode has put on the wire so far (its summary's up + down), 0 when it keeps none."""
    s = getattr(method, "summary", None)
    return int(getattr(s, "bytes_up", 0) + getattr(s, "bytes_down", 0)) if s is not None else 0


def _fallbacks(method) -> int:
    """Frames (or windows) a remote mode has finished on the board so far (its summary's fallbacks)."""
    fallbacks = getattr(getattr(method, "summary", None), "fallbacks", None)
    return int(sum(fallbacks.values())) if fallbacks else 0


def _timed(method) -> tuple[int, float]:
    """A remote mode's client's timed response bytes and their seconds so far (``V2Client.timed_bytes``,
    ``timed_seconds``), (0, 0) when it has none. Offload keeps its client, the split mode its runner's."""
    client = getattr(method, "client", None) or getattr(getattr(method, "runner", None), "client", None)
    return int(getattr(client, "timed_bytes", 0) or 0), float(getattr(client, "timed_seconds", 0.0) or 0.0)


def _server_model(method) -> str | None:
    config = getattr(method, "config", None)
    return getattr(config, "model", None) if getattr(method, "encoding", None) is not None else None


class Planner:
    """``Planner({"local": deblur, "offload": Offload(...)})(frame)``: a method like the others."""

    def __init__(self, modes: dict[str, Method], config: PlannerConfig = PlannerConfig(), clock=time.perf_counter,
                 link: LinkMonitor | None = None):
        if "local" not in modes:
            raise ValueError("the planner needs a 'local' mode: the board must be able to finish every frame")
        for name, method in modes.items():
            encoding = getattr(method, "encoding", None)
            if encoding is None or name == "local":
                continue
            from .encoding import quality_loss_db

            loss = quality_loss_db(encoding)
            if loss is None or loss > config.max_quality_loss_db:
                raise ValueError(f"mode {name!r}: encoding {encoding} "
                                 f"{'has no measured quality loss' if loss is None else f'loses {loss:.2f} dB'}; "
                                 f"the planner was allowed {config.max_quality_loss_db:g} dB (max_quality_loss_db)")
        self.modes, self.config, self._clock, self.link = dict(modes), config, clock, link
        self.estimates: dict[tuple[str, tuple], float] = {}  # (mode, frame shape) -> measured seconds, moving average
        self.fixed: dict[tuple[str, tuple], float] = {}  # remote: seconds less round trip and transfer, moving average
        self._rtt_then: dict[tuple[str, tuple], float] = {}  # the round trip when the estimate was made
        self._last_run: dict[tuple[str, tuple], int] = {}
        self._runs: Counter = Counter()  # (mode, frame shape) -> frames measured
        self._reprobe: dict[tuple[str, tuple], int] = {}  # frames between re-probes, doubled while a mode keeps losing
        # (mode, frame shape) -> (bytes per frame, implied bytes/s), moving averages: a mode's bytes depend on the
        # pixels (another resolution, a crop), so one size's figure is never another's
        self.wire: dict[tuple[str, tuple], tuple[float, float]] = {}
        self._guess: dict[tuple[str, tuple], tuple[float, float, float]] = {}  # wire_estimate per (mode, shape)
        self._frame_runs: Counter = Counter()  # (mode, frame shape) -> frames it did (not probes)
        self._source: dict[tuple[str, tuple], str] = {}  # what measured the estimate last: "probe" or "frame"
        self._last_trial: dict[tuple[str, tuple], int] = {}
        self._current: dict[tuple, str] = {}  # frame shape -> the mode frames go to (hysteresis, ``_hold``)
        self._window: dict[tuple[str, tuple], list[tuple[float, int]]] = {}  # the last frames' (seconds, bytes)
        self._frame = 0
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._ping: threading.Thread | None = None
        self._last_ping = -float("inf")
        self._pings_started = 0
        self._ping_measured: threading.Event | None = None  # set when the ping in flight has its round trip
        self._remote_frames = 0  # frames sent to a remote mode so far (a probe beside one is not kept)
        self._busy = 0  # transfers in flight (a remote frame, a probe): the link monitor does not ping over them
        self._generation = 0
        if link is not None:
            link.busy = lambda: self._busy > 0
            link.generation = lambda: self._generation
        self.summary = PlannerSummary()

    # -- the cost model ----------------------------------------------------------------------------
    def _link(self) -> tuple[float | None, float | None]:
        if self.link is None:
            return None, None
        return getattr(self.link, "rtt", None), getattr(self.link, "throughput", None)

    def _wire_bytes(self, mode: str, shape: tuple) -> float | None:
        measured = self.wire.get((mode, shape))
        if measured is not None:
            return measured[0]
        guess = self._guess.get((mode, shape))
        return guess[0] if guess else None

    def _modelled(self, mode: str, shape: tuple) -> float | None:
        """fixed + round trip + bytes / throughput, when every part is known."""
        rtt, rate = self._link()
        key = (mode, shape)
        size = self._wire_bytes(mode, shape)
        if rtt is None or not rate or size is None:
            return None
        fixed = self.fixed.get(key)
        if fixed is None:  # an offload encoding not measured: a measured sibling's server time, its own coding
            fixed = self._sibling_fixed(mode, shape)
        return None if fixed is None else fixed + rtt + size / rate

    def _sibling_fixed(self, mode: str, shape: tuple) -> float | None:
        model = _server_model(self.modes[mode])
        guess = self._guess.get((mode, shape))
        if model is None or guess is None:
            return None
        for other, method in self.modes.items():
            key = (other, shape)
            if other != mode and _server_model(method) == model and key in self.fixed and self._measured(other, shape) \
                    and self.estimates.get(key) != UNAVAILABLE and (other, shape) in self._guess:
                return max(0.0, self.fixed[key] - self._guess[key][2]) + guess[2]
        return None

    def expected(self, mode: str, shape: tuple) -> float:
        """The mode's expected frame time: the cost model's, where the link monitor has figures and
        the mode was measured; else its moving average, moved by the round trip's change since."""
        key = (mode, shape)
        t = self.estimates[key]
        if mode == "local" or t == UNAVAILABLE:
            return t
        modelled = self._modelled(mode, shape) if key in self.fixed else None
        if modelled is not None:
            return max(0.0, modelled)
        rtt, _ = self._link()
        then = self._rtt_then.get(key)
        if then is not None and rtt is not None:
            t = max(0.0, t + rtt - then)
        return t

    def lower_bound(self, mode: str, shape: tuple) -> float | None:
        """The least a remote mode can take on this link: round trip + its fewest plausible bytes at
        the measured throughput (no compute); None while the link or its bytes are unknown."""
        rtt, rate = self._link()
        rate = getattr(self.link, "throughput_high", None) or rate
        guess = self._guess.get((mode, shape))
        if rtt is None or not rate or guess is None:
            return None
        measured = self.wire.get((mode, shape))
        fewest = min(guess[1], measured[0]) if measured is not None else guess[1]
        return rtt + fewest / rate

    def _learn(self, mode: str, shape: tuple, seconds: float, wire_bytes: int = 0, replace: bool = False) -> None:
        """One measurement into the moving averages; ``replace``: it replaces them (a trial frame's
        measurement over the probes' it checks)."""
        key = (mode, shape)
        previous = self.estimates.get(key) if self._runs[key] >= 2 and self.estimates.get(key) != UNAVAILABLE else None
        previous = None if replace else previous
        alpha = self.config.alpha
        self.estimates[key] = seconds if previous is None else (1 - alpha) * previous + alpha * seconds
        self._runs[key] += 1
        rtt, rate = self._link()
        if rtt is not None:
            self._rtt_then[key] = rtt
        if mode == "local" or seconds == UNAVAILABLE:
            return
        if wire_bytes:
            transfer = max(seconds - (rtt or 0.0), 1e-3)
            b, implied = self.wire.get(key, (wire_bytes, wire_bytes / transfer))
            self.wire[key] = ((1 - alpha) * b + alpha * wire_bytes, (1 - alpha) * implied + alpha * wire_bytes / transfer)
        if rtt is not None:
            size = wire_bytes or self._wire_bytes(mode, shape) or 0.0
            fixed = seconds - rtt - (size / rate if rate else 0.0)
            old = self.fixed.get(key) if previous is not None else None
            self.fixed[key] = fixed if old is None else (1 - alpha) * old + alpha * fixed

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

    def _hold(self, best: str, reason: str, candidates: list[str], shape: tuple) -> tuple[str, str]:
        """Hysteresis: ``best`` (``_best``'s choice) takes the frames from the mode they go to now
        only when it is expected ``switch_margin`` times faster, or the current mode misses the
        deadline that ``best`` meets, or is no longer a candidate (unavailable). Two modes within
        the margin of each other (a near tie, each frame's noise moving the estimates past one
        another) then keep the frames where they are, instead of flipping between them: the
        current mode's own frames keep its estimate up to date, and a real change (a slower link, a
        fallback's wall time) that takes it past the margin moves the frames at the next one."""
        current = self._current.get(shape)
        margin = self.config.switch_margin
        if current is None or current == best or current not in candidates or margin <= 1:
            return best, reason
        t_current, t_best = self.expected(current, shape), self.expected(best, shape)
        if t_current == UNAVAILABLE:
            return best, reason
        deadline = self.config.deadline_s
        if deadline is not None and t_current > deadline >= t_best:
            return best, reason
        if t_best * margin <= t_current:
            return best, reason
        return current, (f"kept ({best} expected {1000 * t_best:.0f} ms, not {margin:g}x faster "
                         f"than its {1000 * t_current:.0f} ms)")

    def _committed(self, candidates: list[str], shape: tuple) -> tuple[str, str]:
        """``_best``, held by ``_hold``."""
        return self._hold(*self._best(candidates, shape), candidates, shape)

    def choose(self, shape: tuple) -> tuple[str, str]:
        """(mode, reason) for the next frame of ``shape`` (foreground measurement: every mode runs on
        frames, for modes that have no ``probe``)."""
        unmeasured = [m for m in self.modes if not self._measured(m, shape)]
        if unmeasured:
            return unmeasured[0], "first measurement"
        stale = [m for m in self.modes if self._stale(m, shape)]
        if stale:
            return stale[0], "re-probe"
        return self._committed(list(self.modes), shape)

    def _worth_probing(self, mode: str, shape: tuple, target: float | None) -> tuple[bool, str]:
        """Whether a probe of ``mode`` can pay: its lower bound (unmeasured) or modelled time
        (measured) under ``probe_margin`` x ``target`` (the best measured expected time, or the
        deadline when that is later)."""
        if target is None:
            return True, ""
        margin = self.config.probe_margin
        if self._measured(mode, shape) and self.estimates[(mode, shape)] != UNAVAILABLE:
            t = self.expected(mode, shape)
            return t <= margin * target, f"modelled {1000 * t:.0f} ms against the best's {1000 * target:.0f} ms"
        modelled = self._modelled(mode, shape) if self.estimates.get((mode, shape)) != UNAVAILABLE else None
        if modelled is not None:  # an encoding modelled from a measured sibling
            return modelled <= margin * target, f"modelled {1000 * modelled:.0f} ms against the best's {1000 * target:.0f} ms"
        bound = self.lower_bound(mode, shape)
        if bound is None:
            return True, ""
        return bound <= margin * target, (f"its round trip and bytes alone take {1000 * bound:.0f} ms, "
                                          f"the best {1000 * target:.0f} ms")

    def _link_pending(self) -> bool:
        """The link monitor has not yet given its first round trip and throughput, and has not failed."""
        link = self.link
        if link is None:
            return False
        if getattr(link, "rtt", None) is None:
            return getattr(link, "failed", 1) == 0
        return getattr(link, "throughput", 0) is None and getattr(link, "sized_failed", "") is None

    def _probe_candidate(self, shape: tuple) -> str | None:
        """The remote mode to measure next in the background, or None (and why not, in the summary)."""
        measured = [m for m in self.modes if self._measured(m, shape) and self.estimates[(m, shape)] != UNAVAILABLE]
        # the best measured time; before local's second frame, its first (cold, so a generous bar)
        target = min(self.expected(m, shape) for m in measured) if measured else self.estimates.get(("local", shape))
        if target is None:
            return None  # no frame done yet: nothing to compare a probe's promise with
        if self.config.deadline_s is not None:
            target = max(target, self.config.deadline_s)
        remote = [m for m in self.modes if m != "local"]
        unmeasured = [m for m in remote if not self._measured(m, shape)]
        if self._link_pending():
            return None  # the link's figures are on their way: the bounds need them
        bounds = {m: self._modelled(m, shape) or self.lower_bound(m, shape) for m in unmeasured}
        unmeasured.sort(key=lambda m: (bounds[m] is None, bounds[m] or 0.0))  # stable: listed order without bounds
        stale = [m for m in remote if m not in unmeasured and self._stale(m, shape)]
        for mode in unmeasured + stale:
            worth, why = self._worth_probing(mode, shape, target)
            if worth:
                self.summary.not_probed.pop(mode, None)
                return mode
            if mode in stale:
                self._last_run[(mode, shape)] = self._frame  # the model says it loses: no bytes spent, look again later
            if mode not in self.summary.not_probed:
                log.info("not probing %s: %s", mode, why)
            self.summary.not_probed[mode] = why
        return None

    def _choose_background(self, shape: tuple) -> tuple[str, str, str | None]:
        """(mode, reason, mode to probe in the background or None): remote modes are measured off the
        frame path; the frame goes to the best measured mode (``local`` is measured on frames)."""
        probe = self._probe_candidate(shape) if self._probe is None or not self._probe.is_alive() else None
        if not self._measured("local", shape):
            return "local", "first measurement", probe
        measured = [m for m in self.modes if self._measured(m, shape) and self.estimates[(m, shape)] != UNAVAILABLE]
        mode, reason = self._committed(measured, shape)
        if self._stale("local", shape) and len(measured) > 1 and mode != "local":
            return "local", "re-probe", None  # (the next frames go remote: no probe beside them)
        trial = self._trial(measured, mode, shape)
        if trial is not None:
            return trial, "trial", None
        # a probe shares the server (and the link) with frames: it is started only while the frames
        # stay on the board, so no frame queues behind it at the server. While they go to a remote
        # mode, a background probe would always be beside one (and dropped), so the mode due for
        # one (unmeasured, or stale and still within ``probe_margin``: ``_probe_candidate``'s
        # rules) gets this frame instead, as ``local`` gets its re-runs: a frame at most the margin
        # slower, and the mode's own fallback finishes it if it fails
        if mode != "local" and probe is not None and probe != mode:
            return probe, ("re-probe" if self._measured(probe, shape) else "first measurement"), None
        return mode, reason, probe if mode == "local" else None

    def _trial(self, measured: list[str], best: str, shape: tuple) -> str | None:
        """A remote mode last measured by a background probe, expected within ``trial_margin`` of the
        best: one frame of its own, once per ``reprobe_every`` frames. A probe runs beside a frame
        (on a board of one core, the split mode's head and tail share it with the frame), so it can
        measure a mode slower than it is; a frame costs at most the margin more to find out."""
        if self.config.trial_margin <= 1 or (self._probe is not None and self._probe.is_alive()):
            return None  # (a trial frame beside a probe would not be learned from)
        t_best = self.expected(best, shape)
        for mode in measured:
            key = (mode, shape)
            if mode in ("local", best) or self._source.get(key) != "probe" or not self._stale_trial(key):
                continue
            if self.expected(mode, shape) <= self.config.trial_margin * t_best and (
                    self.config.deadline_s is None or self.expected(mode, shape) <= self.config.deadline_s):
                return mode
        return None

    def _stale_trial(self, key: tuple) -> bool:
        return self._frame - self._last_trial.get(key, -10**9) >= self.config.reprobe_every

    # -- running -----------------------------------------------------------------------------------
    def _guess_wire(self, shape: tuple, frame: np.ndarray) -> None:
        """Each remote mode's ``wire_estimate`` for this frame size, once (an encoding codes the
        frame once here: milliseconds)."""
        for mode, method in self.modes.items():
            estimate = getattr(method, "wire_estimate", None)
            if mode != "local" and estimate is not None and (mode, shape) not in self._guess:
                try:
                    self._guess[(mode, shape)] = tuple(float(v) for v in estimate(frame))
                except Exception as e:  # noqa: BLE001 - no estimate: the mode is measured as before
                    log.info("no wire estimate for %s: %s", mode, e)
                    self._guess[(mode, shape)] = None  # type: ignore[assignment]
        for key in [k for k, v in self._guess.items() if v is None]:
            del self._guess[key]

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
                timed_before = _timed(method)
                with self._lock:
                    self._busy += 1
                    self._generation += 1
                    remote_before = self._remote_frames
                start = self._clock()
                try:
                    outcome = probe(copy)
                finally:
                    seconds = self._clock() - start
                    with self._lock:
                        self._busy -= 1
                with self._lock:
                    if outcome is True and self._remote_frames != remote_before:
                        # a frame went to the server meanwhile: this measured its queue too; not kept
                        self.summary.probes[(mode, "dropped: beside a remote frame")] += 1
                        self._last_run[key] = self._frame
                        return
                    if outcome is True:
                        self._observe_transfer(method, timed_before)
                        self._learn(mode, shape, seconds, _bytes(method) - before)
                        self._source[key] = "probe"
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

    def _despiked(self, mode: str, shape: tuple, seconds: float, wire_bytes: int, fell_back: bool,
                  restart: bool) -> tuple[float, int]:
        """The frame measurement to learn: the median (by time) of the mode's last ``spike_window``
        frames, this one included; the frame itself while fewer are in, and for a fallback (the
        board finished it: a miss, a refusal, a dead server price the mode out at once).
        ``restart``: the frames before were not this estimate's (a probe's was)."""
        key = (mode, shape)
        window = [] if restart else self._window.get(key, [])
        window = (window + [(seconds, wire_bytes)])[-self.config.spike_window:]
        self._window[key] = window
        if fell_back or len(window) < self.config.spike_window:
            return seconds, wire_bytes
        return sorted(window)[len(window) // 2]

    def _observe_transfer(self, method, before: tuple[int, float]) -> None:
        """The link monitor learns the throughput from the bytes a frame's (or a probe's) answer
        moved and the time they took (``V2Client``'s timed body: the round trip and the server's
        compute are not in it), before the measurement's ``fixed`` part is learned with it. Only a
        measurement that is kept (not overlapped by another transfer) is a figure of the link."""
        observe = getattr(self.link, "observe_transfer", None)
        if observe is None:
            return
        nbytes, seconds = (a - b for a, b in zip(_timed(method), before))
        if nbytes > 0 and seconds > 0:
            observe(nbytes, seconds)

    def _pings(self, measured: threading.Event) -> None:
        """A round-trip ping (``measured`` set once it is done), then a sized one while there is no
        throughput figure yet (at once: the first probes wait for it) and after every
        ``sized_ping_every``-th ping."""
        try:
            self.link.ping()
        finally:
            measured.set()
        sized = getattr(self.link, "sized_ping", None)
        if sized is not None and (getattr(self.link, "throughput", None) is None and getattr(self.link, "sized_failed", None) is None
                                  or self._pings_started % max(1, self.config.sized_ping_every) == 0):
            sized()

    def _maybe_ping(self) -> None:
        if self.link is None or (self._ping is not None and self._ping.is_alive()):
            return
        now = time.monotonic()
        if now - self._last_ping < self.config.ping_every_s or self._busy:
            return  # (a ping queued behind a transfer would measure the transfer)
        self._last_ping = now
        self._pings_started += 1
        self._ping_measured = threading.Event()
        self._ping = threading.Thread(target=self._pings, args=(self._ping_measured,), name="edge-deblur-ping",
                                      daemon=True)
        self._ping.start()

    def _await_ping(self) -> None:
        """Before a remote frame: the round-trip ping in flight (begun after the last frame, or at
        this one's start) is waited for, at most the link monitor's timeout. A ping overlapped by a
        transfer is dropped (it measured the transfer), so while every frame goes to the server
        back to back, each ping used to be dropped by the next frame and the round trip was never
        re-measured; this costs a remote frame at most one round trip once per ``ping_every_s``
        (nothing where the caller leaves a gap between frames: the ping is done by then). The
        sized ping after it still gives way to frames (their own transfers measure the throughput)."""
        measured = self._ping_measured
        if measured is None or measured.is_set() or self._ping is None or not self._ping.is_alive():
            return
        if not measured.wait(float(getattr(self.link, "timeout_s", 2.0))):
            log.debug("round-trip ping not answered within the link monitor's timeout: the frame goes on")

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        shape = tuple(np.shape(frame))
        self._maybe_ping()
        if self.config.background and self.link is not None and any(
                (m, shape) not in self._guess for m in self.modes if m != "local"):
            self._guess_wire(shape, np.asarray(frame))
        with self._lock:
            if self.config.background:
                mode, reason, probe = self._choose_background(shape)
            else:
                (mode, reason), probe = self.choose(shape), None
        if probe is not None:
            self._start_probe(probe, np.asarray(frame), shape)
        if reason not in ("first measurement", "re-probe", "trial"):
            self._current[shape] = mode  # the mode the frames go to now: others must beat it by the margin
        method = self.modes[mode]
        before = _bytes(method)
        timed_before = _timed(method)
        fallbacks_before = _fallbacks(method)
        remote = mode != "local"
        if remote:
            self._await_ping()
        probing = self._probe is not None and self._probe.is_alive()
        if remote:
            with self._lock:
                self._busy += 1
                self._generation += 1
                self._remote_frames += 1
        start = self._clock()
        try:
            result = method(frame)
        finally:
            seconds = self._clock() - start
            if remote:
                with self._lock:
                    self._busy -= 1
        with self._lock:
            # a remote frame beside a probe queued behind it at the server: its time is not the mode's
            probing = remote and (probing or (self._probe is not None and self._probe.is_alive()))
            if probing:
                self.summary.probes[(mode, "frame not measured: beside a probe")] += 1
            else:
                if remote:
                    self._observe_transfer(method, timed_before)
                # a frame's time replaces what probes measured (they ran beside frames); frames average
                replace = self._source.get((mode, shape)) == "probe"
                # a re-probe's frame is the first of the mode's for a while: the frames before it are
                # no longer its last ones, so it is not held to their median
                seconds_kept, bytes_kept = self._despiked(mode, shape, seconds, _bytes(method) - before,
                                                          fell_back=_fallbacks(method) > fallbacks_before,
                                                          restart=replace or (remote and reason == "re-probe"))
                self._learn(mode, shape, seconds_kept, bytes_kept, replace=replace)
                self._source[(mode, shape)] = "frame"
            self._frame_runs[(mode, shape)] += 1
            if reason == "trial":
                self._last_trial[(mode, shape)] = self._frame
            if reason == "re-probe":
                self._after_reprobe(mode, shape)
            self._last_run[(mode, shape)] = self._frame
            self._frame += 1
            self.summary.frames[mode] += 1
            self.summary.reasons[(mode, reason.split(" (")[0].split(",")[0])] += 1
        log.debug("frame %d: %s (%s), %.1f ms", self._frame, mode, reason, 1000 * seconds)
        self._maybe_ping()  # between frames, when due: the gap before the next one is a quiet link
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
                parts.append(f"{mode} {'unavailable' if t == UNAVAILABLE else f'{1000 * self.expected(mode, shape):.0f} ms'} at {_size(shape)}")
            self.summary.estimates = ", ".join(parts)
            sizes = {shape for _, shape in self.wire}
            wire = ", ".join(f"{m} {b / 1e3:.0f} kB/frame at {8 * r / 1e6:.1f} Mbit/s"
                             + (f" ({_size(shape)})" if len(sizes) > 1 else "")
                             for (m, shape), (b, r) in sorted(self.wire.items()))
            if self.link is not None:
                rtt = f"round trip {1000 * self.link.rtt:.0f} ms ({self.link.pings} pings)" if self.link.rtt is not None else \
                    f"round trip unmeasured ({self.link.failed} failed pings)"
                rate = getattr(self.link, "throughput", None)
                sized = getattr(self.link, "sized_throughput", None)
                real = getattr(self.link, "transfer_throughput", None)
                if real and sized:
                    rtt += (f", throughput {8 * real / 1e6:.1f} Mbit/s ({self.link.transfers} transfers; "
                            f"sized pings {8 * sized / 1e6:.1f} Mbit/s, {self.link.sized})")
                elif rate:
                    rtt += f", throughput {8 * rate / 1e6:.1f} Mbit/s ({getattr(self.link, 'sized', 0)} sized pings)"
                elif getattr(self.link, "sized_failed", None):
                    rtt += f", throughput unmeasured ({self.link.sized_failed})"
                self.summary.link = rtt + (f"; {wire}" if wire else "")
            elif wire:
                self.summary.link = wire
