"""``kernel``: a keyframe crop up, its blur kernel down, the restoration on the board.

Kilobytes instead of a frame each way: a gray ``crop`` x ``crop`` window (64 kB at 256) goes to the
server's ``kernel`` model every ``keyframe_every`` frames, and the 4 kB kernel that comes back
restores every frame until the next keyframe (camera shake changes slowly against a frame rate;
``edge_deblur.blind.restore``, HQS with the bundled denoiser, runs on the board). The window sent is
the most textured of a 3x3 grid of candidates (largest variance of the Laplacian): blind estimation
needs edges, and a flat patch of sky says nothing about the blur.

When a keyframe's kernel does not come (any of ``Offload``'s failures), the last kernel goes on
being used while it is younger than ``max_kernel_age`` frames; without one, the board's ``local``
method does the frame. No frame is lost; order is the caller's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from .client import V2Client
from .offload import Method, OffloadConfig, ServerCalls


@dataclass(frozen=True)
class KernelModeConfig:
    server: OffloadConfig  # its ``model`` is the kernel model's name ("kernel")
    crop: int = 256
    keyframe_every: int = 30
    max_kernel_age: int = 90
    kernel_size: int | None = None  # odd; None: the server's estimator chooses


@dataclass
class KernelSummary:
    kernels: int = 0  # keyframes whose kernel came back
    restored: int = 0  # frames restored with a server's kernel
    local: int = 0
    fallbacks: Counter = field(default_factory=Counter)
    bytes_up: int = 0
    bytes_down: int = 0

    def __str__(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in self.fallbacks.most_common()) or "none"
        return (f"{self.restored + self.local} frame(s): {self.restored} restored with {self.kernels} server kernel(s), "
                f"{self.local} local; fallbacks: {why}; {self.bytes_up / 1e3:.0f} kB up, {self.bytes_down / 1e3:.0f} kB down")


def keyframe_window(gray: np.ndarray, side: int) -> np.ndarray:
    """The most textured ``side`` x ``side`` window of a 3x3 grid over ``gray`` (all of it if smaller)."""
    h, w = gray.shape
    sh, sw = min(side, h), min(side, w)
    best, best_score = None, -1.0
    for y in np.linspace(0, h - sh, 3).astype(int):
        for x in np.linspace(0, w - sw, 3).astype(int):
            window = gray[y:y + sh, x:x + sw]
            score = float(cv2.Laplacian(window, cv2.CV_32F).var())
            if score > best_score:
                best, best_score = window, score
    return np.ascontiguousarray(best)


class KernelOffload:
    """``KernelOffload(KernelModeConfig(OffloadConfig(url, token, model="kernel")), local=student)``."""

    def __init__(self, config: KernelModeConfig, local: Method, restore=None, client: V2Client | None = None):
        if restore is None:
            from ..blind import restore  # the board's own restoration (its denoiser prior is bundled)
        self.config, self.local, self.restore = config, local, restore
        self.client = client or V2Client(config.server.url, config.server.token)
        self.calls = ServerCalls(config.server)
        self.summary = KernelSummary()
        self.kernel: np.ndarray | None = None
        self.kernel_age = 0
        self._frame = 0

    def _fetch(self, frame: np.ndarray) -> str | None:
        """Ask for a new kernel from ``frame``'s keyframe crop; the reason when none came."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame[..., :3], cv2.COLOR_RGB2GRAY)
        crop = keyframe_window(gray, self.config.crop)
        params = {"kernel_size": self.config.kernel_size} if self.config.kernel_size else None
        exchange = self.calls.attempt(lambda: self.client.infer(self.config.server.model, "image", crop[None],
                                                                timeout=self.config.server.deadline_s,
                                                                parameters=params))
        if isinstance(exchange, str):
            return exchange
        kernel = np.asarray(exchange.output, dtype=np.float64)
        if kernel.ndim == 3 and kernel.shape[0] == 1:  # a batch of one: Triton's exported kernel model
            kernel = kernel[0]
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or not np.isfinite(kernel).all() or kernel.sum() <= 0:
            return "bad answer (kernel)"
        self.kernel, self.kernel_age = kernel / kernel.sum(), 0
        self.summary.kernels += 1
        self.summary.bytes_up += exchange.bytes_up
        self.summary.bytes_down += exchange.bytes_down
        return None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if self._frame % self.config.keyframe_every == 0 or self.kernel is None:
            problem = self._fetch(frame) if frame.dtype == np.uint8 else "frame not 8-bit"
            if problem is not None:
                self.summary.fallbacks[problem] += 1
        self._frame += 1
        if self.kernel is None or self.kernel_age >= self.config.max_kernel_age:
            self.summary.local += 1
            if self.kernel is not None:
                self.summary.fallbacks["kernel too old"] += 1
            return self.local(frame)
        self.kernel_age += 1
        try:
            out = self.restore(frame, self.kernel)
        except (ValueError, RuntimeError) as e:  # a kernel the restoration refuses: the board's own method
            self.summary.local += 1
            self.summary.fallbacks[f"restore failed ({type(e).__name__})"] += 1
            return self.local(frame)
        self.summary.restored += 1
        return out

    def close(self) -> None:
        self.client.close()
