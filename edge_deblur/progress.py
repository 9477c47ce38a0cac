"""A dependency-free progress bar for folders and videos (the runtime does not ship tqdm)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts items and redraws one stderr line at most ten times a second.

    ``total`` may be None (a camera); ``enabled=False`` makes it silent (tests, pipes).
    """

    def __init__(self, total: int | None, desc: str = "", enabled: bool | None = None, stream=None):
        self.total = total
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.count = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1, **postfix) -> None:
        self.count += n
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw > 0.1 or self.count == self.total):
            self._last_draw = now
            self._draw(now, postfix)

    def _draw(self, now: float, postfix: dict) -> None:
        elapsed = now - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = self.count / self.total
            bar = "#" * int(frac * 24)
            head = f"{self.desc} [{bar:<24}] {self.count}/{self.total}"
        else:
            head = f"{self.desc} {self.count}"
        tail = " ".join(f"{k}={v}" for k, v in postfix.items())
        self.stream.write(f"\r{head} {rate:.1f} it/s {tail}".rstrip() + "  ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.count:
            self.stream.write("\n")
            self.stream.flush()
