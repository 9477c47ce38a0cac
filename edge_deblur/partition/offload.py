"""``offload``: the frame goes to a server, the result comes back; the board finishes any frame the
server does not. Same interface as every local method: ``method(frame) -> frame``.

A deadline miss, an error, a refusal (401/403/429/503), a malformed answer or a dead server make
the board run its own ``local`` method on that frame, at once: no frame is lost, and since each
call returns its frame before the next is taken, order is kept. After a refusal with
``Retry-After``, or a server that cannot be reached, the board stays local for that long (or
``probe_after_s``) before it tries the server again, so a dead link does not cost a timeout every
frame. :class:`OffloadSummary` counts frames per path and fallbacks per reason.

A server from before the network was served as ``teacher`` (``edge-deblur serve`` and ``export
triton`` until issue 13's auto ``deblur``) served it as ``deblur``, and answers ``teacher`` with 404
(no such model): the board then calls ``deblur`` instead, once it shows a network there (not the
auto engine, seconds a frame), for the rest of the session (:class:`ServerModel`, logged once); the
frame that found out is served too. What decides is the ``edge_deblur_engine`` marker of the
model's configuration (``GET /v2/models/deblur/config``: ``export triton`` writes it into
config.pbtxt, ``edge-deblur serve`` reports it): ``network`` is used, ``auto`` is not, whatever the
backend; an unmarked one is judged by its platform, as before the marker (a Python backend is taken
for the auto engine: the safer error, see ``not_found``). The same judgement (:func:`judge_engine`,
:meth:`ServerModel.engine`) sets how long the board waits for an answer where the caller gives no
deadline (:meth:`ServerModel.deadline_s`): a network the frame deadline, the auto engine the still one.

The frame goes up as raw 8-bit RGB in the V2 binary tensor extension, or encoded
(``OffloadConfig.encoding``: ``png`` lossless, ``jpeg:Q``/``webp:Q`` lossy, see ``encoding``), the
result coming back in the same encoding; the summary states the encoding and its bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .client import RemoteError, Unreachable, V2Client
from .encoding import decode, encode, parse_encoding

Method = Callable[[np.ndarray], np.ndarray]
V2_OVERHEAD = 300  # bytes of HTTP and V2 JSON header around a binary tensor, each way (measured: ~250-290)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OffloadConfig:
    url: str  # http://host:8000 or https://...
    token: str | None = None
    # the server's model: "teacher", the feed-forward network (a frame in ~0.2 s), for streams;
    # "deblur" is the server's best quality (the auto engine, seconds per frame): stills only
    model: str = "teacher"
    input_name: str = "image"
    deadline_s: float = 1.0  # the server's answer must arrive within this, or the board does the frame
    probe_after_s: float = 2.0  # after a dead server, stay local this long before trying again
    max_backoff_s: float = 30.0  # longest Retry-After obeyed
    encoding: str = "raw"  # raw | png | jpeg:Q | webp:Q (edge_deblur.partition.encoding), both ways


# the name a server from before issue 13's ``teacher`` gave the same network
LEGACY_NAMES = {"teacher": "deblur"}
# platforms of an auto-engine ``deblur`` (edge-deblur serve's, an exported Triton Python backend's): seconds a frame
AUTO_PLATFORMS = ("edge-deblur_python", "python")
# the model configuration's parameter saying what runs a model (edge_deblur.serve.registry.ENGINE_KEY,
# written by `export triton` into each config.pbtxt): "network" may take frames, "auto" (or any other) not
ENGINE_KEY = "edge_deblur_engine"
# How long the board waits for a server's answer where the caller says nothing (partitioned_method's
# deadline_s=None), by what runs the model (ServerModel.deadline_s): a network, a frame's worth
# (teacher: ~0.2 s for 640x480 on the bench host's CPU); the auto engine, a still's (17.7-19.3 s for
# 640x480 there, minutes for megapixels; the server's own --timeout, 30 s by default, may stop it
# sooner, and the board then does the image itself).
FRAME_DEADLINE_S = 1.0
STILL_DEADLINE_S = 300.0
# names that are the network by definition: their deadline needs no look at the server
NETWORK_NAMES = ("teacher",)


def judge_engine(marker: str | None, platform: str) -> str:
    """What runs a server's model, as the board takes it: its ``edge_deblur_engine`` marker where it
    has one (``network``, ``auto``, ``split``, ``kernel``), else its platform's rule from before the
    marker: a Python backend (``AUTO_PLATFORMS``: edge-deblur serve's auto engine, an exported Triton
    Python model) is ``auto``, any other backend ``network``. The one rule for both questions the
    board asks of a model: may it take frames (``network`` only), and how long may its answer take."""
    if marker:
        return marker
    return "auto" if platform in AUTO_PLATFORMS else "network"


class ServerModel:
    """The name the server gives the model a stream calls: ``name`` (``teacher``), or, where the
    server answers 404 for it (a server from before ``teacher``), its ``LEGACY_NAMES`` one
    (``deblur``) once the server's metadata shows a network there. Decided once, remembered for the
    session and logged once; one object is shared by the calls to one server (the planner's offload
    modes and its link monitor, ``partitioned_method``), so the first 404 moves them all. Where the
    server has neither (or its ``deblur`` is the auto engine), ``missing`` says so, and the frames
    stay on the board without a call."""

    def __init__(self, name: str = "teacher", url: str = ""):
        self.requested, self.name, self.url = name, name, url
        self.legacy = LEGACY_NAMES.get(name)
        self.missing: str | None = None
        self._lock = threading.Lock()
        self._engines: dict[str, tuple[str, str | None, str]] = {}  # name -> (judged, marker, platform), read once

    @property
    def note(self) -> str:
        """What the summary says of the name: empty while it is the one asked for."""
        if self.missing:
            return self.missing
        return f"via '{self.name}' (the server has no '{self.requested}')" if self.name != self.requested else ""

    def not_found(self, client: V2Client, tried: str, timeout: float) -> str | None:
        """``tried`` was answered 404: the name to call instead, or None (no model here a stream can
        use; ``missing`` says why). A metadata call that gets no answer decides nothing (raised)."""
        with self._lock:
            if tried != self.name or self.missing:  # decided meanwhile (another mode's call)
                return None if self.missing else self.name
            if tried != self.requested or self.legacy is None:
                return None
            try:
                engine, marker, platform = self._read(client, self.legacy, timeout)
            except RemoteError as e:
                self.missing = f"the server has no '{tried}' and no '{self.legacy}' (HTTP {e.status})"
            else:
                # Unmarked (a server or repository from before the marker, or one a user wrote): the
                # platform decides, as before the marker (judge_engine): a Python backend's `deblur` is
                # taken for the auto engine and the frames stay on the board. That is the safer error:
                # a fast network taken for the auto engine costs the offload's speed-up (the board does
                # its frames, as with no server); the auto engine taken for a network would cost every
                # frame a deadline miss (seconds a frame on the server) before the board does it anyway.
                if engine != "network":
                    said = "is the auto engine" if engine == "auto" else f"says it is '{engine}'"
                    self.missing = f"the server has no '{tried}', and its '{self.legacy}' {said} (seconds a frame)"
                else:
                    self.name = self.legacy
                    platform = f"{platform or 'platform not said'}, {ENGINE_KEY} {marker or 'not said'}"
            if self.missing:
                log.warning("%s: %s: frames stay on the board", self.url, self.missing)
                return None
            log.warning("%s: no model '%s' (a server from before it): calling '%s' (%s) instead for this session",
                        self.url, tried, self.legacy, platform)
            return self.name

    def _read(self, client: V2Client, name: str, timeout: float) -> tuple[str, str | None, str]:
        """(what runs ``name``, as :func:`judge_engine` takes it; its marker or None; its platform),
        read once per name and session: the model's metadata (its platform; RemoteError where the
        server answers without it, e.g. 404; Unreachable where it does not answer, nothing kept)
        and its configuration (``GET /v2/models/{m}/config``: ``export triton``'s config.pbtxt
        marker, or ``edge-deblur serve``'s; none where the server answers no configuration, as an
        ``edge-deblur serve`` from before it: 404)."""
        if name in self._engines:
            return self._engines[name]
        platform = client.metadata(name, timeout).get("platform", "")
        try:
            config = client.config(name, timeout)
        except RemoteError:
            config = None
        value = (config.get("parameters") or {}).get(ENGINE_KEY) if isinstance(config, dict) else None
        if isinstance(value, dict):  # Triton's JSON of a ModelParameter: {"string_value": "auto"}
            value = value.get("string_value")
        marker = value.strip().lower() if isinstance(value, str) and value.strip() else None
        self._engines[name] = judged = (judge_engine(marker, platform), marker, platform)
        return judged

    def engine(self, client: V2Client, timeout: float = 2.0) -> str | None:
        """What runs the model this session calls (``name``): ``network``, ``auto``, or what its
        marker says (:func:`judge_engine`); None where the server does not say (no answer, a
        refusal, no such model). Read once per name: ``not_found`` reuses it."""
        with self._lock:
            try:
                return self._read(client, self.name, timeout)[0]
            except (RemoteError, Unreachable, ValueError):
                return None

    def deadline_s(self, client: V2Client, timeout: float = 2.0) -> float:
        """How long an answer of this model may take where the caller gives no deadline, by what runs
        it: ``FRAME_DEADLINE_S`` for a network (``teacher`` by its name, without a call: a server with
        no ``teacher`` gets frames on its ``deblur`` only where that is a network too), else
        ``STILL_DEADLINE_S``: the auto engine, another engine, or a server that does not say (the
        safer error: a network given the still deadline loses nothing unless the server hangs; the
        auto engine given a frame's would miss every image)."""
        if self.name in NETWORK_NAMES:
            return FRAME_DEADLINE_S
        return FRAME_DEADLINE_S if self.engine(client, timeout) == "network" else STILL_DEADLINE_S

    def infer(self, client: V2Client, input_name: str, payload: np.ndarray, timeout: float, parameters: dict | None):
        """``client.infer`` on the server's name for the model, the legacy one after a 404."""
        name = self.name
        try:
            return client.infer(name, input_name, payload, timeout=timeout, parameters=parameters)
        except RemoteError as e:
            other = self.not_found(client, name, timeout) if e.status == 404 else None
            if other is None:
                raise
            return client.infer(other, input_name, payload, timeout=timeout, parameters=parameters)


@dataclass
class OffloadSummary:
    offloaded: int = 0
    local: int = 0
    fallbacks: Counter = field(default_factory=Counter)  # reason -> frames done locally for it
    server_seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    encoding: str = "raw"
    note: str = ""  # the server's name for the model, where it is not the one asked for (ServerModel.note)

    @property
    def frames(self) -> int:
        return self.offloaded + self.local

    def __str__(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in self.fallbacks.most_common()) or "none"
        mean = f", {1000 * self.server_seconds / self.offloaded:.1f} ms per offloaded frame" if self.offloaded else ""
        return (f"{self.frames} frame(s): {self.offloaded} offloaded{f' ({self.encoding})' if self.encoding != 'raw' else ''}, "
                f"{self.local} local; fallbacks: {why}{mean}; {self.bytes_up / 1e6:.1f} MB up, {self.bytes_down / 1e6:.1f} MB down"
                + (f"; {self.note}" if self.note else ""))


def read_token(path: str | Path) -> str:
    """The token in a file (its first line), as ``edge-deblur token add`` printed it."""
    text = Path(path).read_text().strip()
    if not text:
        raise ValueError(f"{path}: empty token file")
    return text.splitlines()[0].strip()


class ServerCalls:
    """One call at a time to a server, and when not to call it: after a refusal with Retry-After, a
    server that cannot be reached, or a bad token, the board stays local for a while rather than pay a
    failed call on every frame. ``attempt(call)`` gives the call's result or the reason there is none."""

    def __init__(self, config: OffloadConfig, clock=time.monotonic):
        self.config, self._clock = config, clock
        self.local_until = 0.0
        self._lock = threading.Lock()  # one frame on the wire at a time: order is the caller's order

    def attempt(self, call):
        with self._lock:
            now = self._clock()
            if now < self.local_until:
                return "backing off"
            try:
                return call()
            except Unreachable as e:
                log.debug("%s: %s", self.config.url, e)
                if not e.timed_out:
                    self.local_until = now + self.config.probe_after_s
                return "deadline missed" if e.timed_out else "server unreachable"
            except RemoteError as e:
                if e.status in (429, 503):
                    wait = e.retry_after if e.retry_after is not None else self.config.probe_after_s
                    self.local_until = now + min(wait, self.config.max_backoff_s)
                elif e.status in (401, 403):
                    self.local_until = now + self.config.max_backoff_s  # a token does not fix itself
                return f"HTTP {e.status}"
            except (ValueError, KeyError, TypeError) as e:  # an answer that is not a V2 response
                return f"bad answer ({type(e).__name__})"


class Offload:
    """``Offload(OffloadConfig(url, token), local=Deblurrer.load())(frame)``."""

    def __init__(self, config: OffloadConfig, local: Method, client: V2Client | None = None, clock=time.monotonic,
                 server_model: ServerModel | None = None):
        self.config, self.local = config, local
        self.encoding = parse_encoding(config.encoding)  # a bad name fails here, not on the first frame
        self.client = client or V2Client(config.url, config.token)
        self.summary = OffloadSummary(encoding=str(self.encoding))
        self.calls = ServerCalls(config, clock)
        # config.model as the server names it (shared with the other calls to this server, if given)
        self.server_model = server_model or ServerModel(config.model, config.url)

    def _fallback(self, frame: np.ndarray, reason: str) -> np.ndarray:
        self.summary.local += 1
        self.summary.fallbacks[reason] += 1
        return self.local(frame)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The deblurred frame, same shape and dtype. 8-bit frames go to the server (a gray one as
        three equal channels, averaged back, as the local runtime does; RGBA keeps its alpha);
        16-bit and float frames stay local, since the server's model takes 8-bit RGB."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
            return self._fallback(frame, "frame not 8-bit")
        if frame.ndim == 2 or frame.shape[2] == 1:
            gray = frame if frame.ndim == 2 else frame[..., 0]
            rgb = self._offload(np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2)), frame)
            if rgb is None:
                return self.local(frame)
            mean = np.rint(rgb.mean(axis=2, dtype=np.float32)).astype(np.uint8)
            return mean if frame.ndim == 2 else mean[..., None]
        if frame.shape[2] == 4:
            rgb = self._offload(np.ascontiguousarray(frame[..., :3]), frame)
            return self.local(frame) if rgb is None else np.concatenate([rgb, frame[..., 3:]], axis=2)
        rgb = self._offload(frame, frame)
        return self.local(frame) if rgb is None else rgb

    def probe(self, frame: np.ndarray):
        """The remote path alone, for the planner's background measurement: True when the server's
        result came, else the reason; nothing runs locally (the board is busy with the frames)."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] not in (3, 4):
            return "frame not 8-bit RGB"
        result = self._remote(np.ascontiguousarray(frame[..., :3]))
        return result if isinstance(result, str) else True

    def wire_estimate(self, frame: np.ndarray) -> tuple[float, float, float]:
        """What this mode would put on the wire for ``frame`` and what coding costs, without sending
        it: (bytes up + down, a lower bound of those bytes, seconds of coding at both ends). Raw is
        exact (the frame's bytes each way, plus the V2 headers); an encoding codes the frame here
        once (and decodes it, as the board will the result): the result is taken to code to the
        same size as the frame (measured: jpeg:90 16.2 kB up, 14.1 down), and the server to code as
        fast as this board (it decodes the frame and encodes the result)."""
        frame = np.asarray(frame)
        rgb = np.ascontiguousarray(frame[..., :3]) if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=2)
        if self.encoding.codec == "raw":
            size = 2 * (rgb.nbytes + V2_OVERHEAD)
            return size, size, 0.0
        start = time.perf_counter()
        data = encode(rgb, self.encoding)
        decode(data, self.encoding.codec)
        seconds = time.perf_counter() - start
        size = 2 * (data.size + V2_OVERHEAD)
        return size, 0.5 * size, 2 * seconds

    def _offload(self, rgb: np.ndarray, frame: np.ndarray) -> np.ndarray | None:
        """The server's result for ``rgb``, or None after counting why the board does ``frame``."""
        result = self._remote(rgb)
        if isinstance(result, str):
            self.summary.local += 1
            self.summary.fallbacks[result] += 1
            return None
        return result

    def _remote(self, frame: np.ndarray) -> np.ndarray | str:
        """The server's result, or the reason there is none."""
        if self.encoding.codec == "raw":
            payload, params = frame[None], None
        else:
            payload = encode(frame, self.encoding)
            params = {"encoding": self.encoding.codec, **({"quality": self.encoding.quality} if self.encoding.quality else {})}
        named = self.server_model
        if named.missing:
            return f"no model: {named.missing}"
        exchange = self.calls.attempt(lambda: named.infer(self.client, self.config.input_name, payload,
                                                          self.config.deadline_s, params))
        self.summary.note = named.note
        if isinstance(exchange, str):
            return f"no model: {named.missing}" if named.missing and exchange == "HTTP 404" else exchange
        result = exchange.output
        if params is not None:
            if result.ndim != 1 or result.dtype != np.uint8:
                return "bad answer (shape)"
            try:
                result = decode(result, self.encoding.codec, frame.shape[0] * frame.shape[1])[None]
            except ValueError:
                return "bad answer (encoding)"
        if result.shape != (1, *frame.shape) or result.dtype != np.uint8:
            return "bad answer (shape)"
        self.summary.offloaded += 1
        self.summary.server_seconds += exchange.seconds
        self.summary.bytes_up += exchange.bytes_up
        self.summary.bytes_down += exchange.bytes_down
        return result[0]

    def close(self) -> None:
        self.client.close()
