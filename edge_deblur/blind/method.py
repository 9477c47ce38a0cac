"""Blind deblurring as a method of the SDK (image in, image out), and ``auto``: blind estimation
with a check of its own result, falling back to the feed-forward network when the check fails.

The check (the DESIGN's rule): re-blur the restored image with the estimated kernel and compare it
with the input. With the right kernel the difference is the noise the restoration removed; a wrong
kernel (non-uniform blur, a moving object, nothing to estimate from) leaves edges in it. The
``residual ratio`` is that difference's RMS over the noise level; above ``max_residual_ratio`` the
estimate is called failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..errors import EdgeDeblurError
from .kernel import KernelConfig, estimate_kernel
from .restore import RestoreConfig, reblur_residual, restore_float

_PEAK = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@dataclass(frozen=True)
class BlindConfig:
    """How a :class:`BlindDeblurrer` estimates and restores."""

    kernel_size: int | None = None  # odd kernel side; None: chosen automatically
    kernel: KernelConfig = KernelConfig()
    restore: RestoreConfig = RestoreConfig()
    denoiser: str = "denoiser"  # the learned prior: a bundled name or a .tflite/.onnx path
    threads: int | None = None
    prefilter: bool = True  # estimate the kernel on a denoised copy when the input is noisy
    prefilter_min_sigma: float = 1.0 / 255  # ... noisier than this
    max_residual_ratio: float = 2.0  # auto: the re-blurred result may differ by this many noise levels
    residual_floor: float = 1.0 / 255  # the noise level the ratio divides by never goes below this


@dataclass
class BlindResult:
    """What happened to the last image: the path it took and why, the kernel, the timings."""

    path: str  # "blind", "network" or "input"
    kernel: np.ndarray | None = None
    noise_sigma: float = 0.0
    residual_ratio: float | None = None
    reason: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def split_image(image: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """An SDK image (gray/RGB/RGBA; uint8, uint16 or float in [0, 1]) as float32 colour in [0, 1]
    (H x W or H x W x 3), and the function that turns a float result back into the input's dtype
    and layout (alpha passed through)."""
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise EdgeDeblurError(f"unsupported image dtype {image.dtype} (expected uint8, uint16 or float in [0, 1])")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise EdgeDeblurError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
    peak = _PEAK.get(image.dtype, 1.0)
    colour = image if image.ndim == 2 else image[..., :3]
    x = np.clip(colour.astype(np.float32) / np.float32(peak), 0.0, 1.0)
    if not np.isfinite(x).all():
        raise EdgeDeblurError("image holds NaN or infinite values")

    def back(y: np.ndarray) -> np.ndarray:
        y = np.clip(np.nan_to_num(y, nan=0.0), 0.0, 1.0)
        out = np.rint(y * peak).astype(image.dtype) if image.dtype.kind == "u" else y.astype(image.dtype)
        return np.concatenate([out, image[..., 3:]], axis=2) if image.ndim == 3 and image.shape[2] == 4 else out

    return x, back


class BlindDeblurrer:
    """Estimate the blur kernel, then restore with the learned prior: ``BlindDeblurrer.load()(image)``.

    ``kernel=`` (a PSF array) skips estimation: non-blind restoration with that kernel. After each
    call, ``last`` (a :class:`BlindResult`) holds the kernel, the noise level and the timings.
    """

    def __init__(self, denoiser, config: BlindConfig = BlindConfig(), kernel: np.ndarray | None = None):
        self.denoiser, self.config, self.fixed_kernel = denoiser, config, kernel
        self.last: BlindResult | None = None

    @classmethod
    def load(cls, config: BlindConfig = BlindConfig(), kernel: np.ndarray | None = None) -> BlindDeblurrer:
        from ..denoise import Denoiser

        return cls(Denoiser.load(config.denoiser, threads=config.threads), config, kernel)

    def noise_sigma(self, x: np.ndarray) -> float:
        from ..denoise import estimate_noise_sigma

        return estimate_noise_sigma(x)

    def estimate(self, x: np.ndarray, noise_sigma: float) -> np.ndarray:
        """The kernel of float colour image ``x``: on a denoised copy when it is noisy, since noise,
        not blur, would otherwise dominate the finest scale's gradients."""
        cfg = self.config
        if cfg.prefilter and noise_sigma > cfg.prefilter_min_sigma:
            x = self.denoiser(x, noise_sigma)
        try:
            return estimate_kernel(x, cfg.kernel_size, cfg.kernel)
        except ValueError as e:
            raise EdgeDeblurError(str(e)) from e

    def restore(self, x: np.ndarray, kernel: np.ndarray, noise_sigma: float) -> np.ndarray:
        return restore_float(x, kernel, self.denoiser, noise_sigma, self.config.restore)

    def deblur_float(self, x: np.ndarray) -> np.ndarray:
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        sigma = self.noise_sigma(x)
        if self.fixed_kernel is None:
            kernel = self.estimate(x, sigma)
        else:
            kernel = self.fixed_kernel
        seconds["estimate"] = time.perf_counter() - t
        t = time.perf_counter()
        y = self.restore(x, kernel, sigma)
        seconds["restore"] = time.perf_counter() - t
        ratio = self.residual_ratio(x, y, kernel, sigma)
        self.last = BlindResult("blind", kernel, sigma, ratio, seconds=seconds)
        return y

    def residual_ratio(self, x: np.ndarray, y: np.ndarray, kernel: np.ndarray, sigma: float) -> float:
        """RMS of input - re-blurred result, in units of the noise level (floored)."""
        rms = reblur_residual(x, y, kernel, linear_light=self.config.restore.linear_light)
        return rms / max(sigma, self.config.residual_floor)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x, back = split_image(image)
        return back(self.deblur_float(x))


class AutoDeblurrer:
    """``--method auto``: blind deblurring, checked by its residual ratio; a failed estimate (or
    an image blind estimation cannot work on) goes to ``fallback`` (the feed-forward network) or,
    without one, through untouched. ``last`` says which path each image took and why."""

    def __init__(self, blind: BlindDeblurrer, fallback: Callable[[np.ndarray], np.ndarray] | None = None):
        self.blind, self.fallback = blind, fallback
        self.last: BlindResult | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x, back = split_image(image)
        limit = self.blind.config.max_residual_ratio
        try:
            y = self.blind.deblur_float(x)
            result = self.blind.last
            if result.residual_ratio is not None and result.residual_ratio <= limit:
                result.reason = f"re-blurred result within {result.residual_ratio:.2f} noise levels of the input (limit {limit:g})"
                self.last = result
                return back(y)
            reason = f"estimate failed: re-blurred result {result.residual_ratio:.2f} noise levels from the input (limit {limit:g})"
            kernel, sigma, seconds = result.kernel, result.noise_sigma, result.seconds
        except EdgeDeblurError as e:  # no edges, too small: nothing to estimate from
            reason, kernel, sigma, seconds = f"estimate impossible: {e}", None, 0.0, {}
        if self.fallback is None:
            self.last = BlindResult("input", kernel, sigma, None, reason + "; passed through", seconds)
            return np.asarray(image).copy()
        t = time.perf_counter()
        out = self.fallback(image)
        seconds = dict(seconds, fallback=time.perf_counter() - t)
        self.last = BlindResult("network", kernel, sigma, None, reason + "; the network restored it", seconds)
        return out
