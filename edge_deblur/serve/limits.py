"""What a server refuses before it computes: too many requests from one client, too big a request,
a full queue. Each refusal is a :class:`ProtocolError` with the status a client can act on."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from .protocol import ProtocolError


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 64 << 20  # a 4000x3000 RGB frame in binary is 36 MB
    max_pixels: int = 12_000_000  # per input image (its free dimensions multiplied)
    workers: int = 1  # requests computed at once (each model instance uses `threads` cores)
    max_queue: int = 8  # requests admitted and waiting for a worker; beyond: 503
    timeout_s: float = 30.0  # admission to answer; a request may ask for less
    rate: float = 50.0  # requests per second per client (token), sustained; 0: unlimited
    burst: int = 100  # requests a client may send at once


class RateLimiter:
    """Per-client token buckets (Turner 1986): a client may send ``burst`` requests at once and
    ``rate`` per second sustained; a request past that is refused with the seconds until the bucket
    holds one again (``Retry-After``)."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, max(1, burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, time)
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise ProtocolError(f"rate limit of {self.rate:g} requests/s for '{client}' exceeded; "
                                    f"retry in {wait:.2f} s", status=429, retry_after=wait)
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:  # forget clients idle long enough to be full again
                horizon = now - self.burst / self.rate
                self._buckets = {c: v for c, v in self._buckets.items() if v[1] >= horizon}


def retry_after_header(seconds: float) -> str:
    """HTTP's Retry-After is whole seconds; round up so a client that obeys it is not refused again."""
    return str(max(1, math.ceil(seconds)))


class Admission:
    """A bounded count of requests admitted (waiting or computing): ``workers + max_queue``. A
    request past it is refused at once (503) instead of waiting behind work it cannot overtake."""

    def __init__(self, workers: int, max_queue: int):
        self.capacity = workers + max_queue
        self.admitted = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.admitted >= self.capacity:
                raise ProtocolError(f"server busy: {self.admitted} requests queued or running "
                                    f"(at most {self.capacity}); retry later", status=503, retry_after=1.0)
            self.admitted += 1

    def leave(self) -> None:
        with self._lock:
            self.admitted -= 1
