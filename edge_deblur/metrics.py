"""Image quality, sharpness and latency measures."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np


def laplacian_variance(image: np.ndarray) -> float:
    """Sharpness as the variance of the Laplacian of the luminance (Pech-Pacheco et al., 2000).

    Works on gray, RGB or RGBA images of any integer or float dtype; the value is computed on a
    0-255 scale so that one threshold serves 8-bit, 16-bit and float images alike.
    """
    img = np.asarray(image)
    # The scale must come from the input dtype: averaging the channels below turns integers into floats.
    to_255 = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 1 / 257.0}.get(img.dtype, 255.0)
    if img.ndim == 3:
        img = img[..., :3]
        img = img.mean(axis=2) if img.shape[2] == 3 else img[..., 0]
    img = img.astype(np.float32) * np.float32(to_255)
    return float(cv2.Laplacian(img, cv2.CV_32F, ksize=1).var())


def _data_range(image: np.ndarray, data_range: float | None) -> float:
    """The peak value R: given, or the dtype's (255, 65535; 1.0 for float images in [0, 1])."""
    if data_range is not None:
        return float(data_range)
    if image.dtype.kind == "u":
        return float(np.iinfo(image.dtype).max)
    if image.dtype.kind == "f":
        return 1.0
    raise ValueError(f"cannot infer data_range for dtype {image.dtype}; pass data_range")


def _pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.shape != test.shape:
        raise ValueError(f"images differ in shape: {reference.shape} vs {test.shape}")
    return reference, test


def psnr(reference: np.ndarray, test: np.ndarray, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(R^2 / MSE); inf for identical images.

    R comes from ``reference``'s dtype unless ``data_range`` is given.
    """
    reference, test = _pair(reference, test)
    peak = _data_range(reference, data_range)
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))


_SSIM_WINDOW = 7


def ssim(reference: np.ndarray, test: np.ndarray, *, data_range: float | None = None) -> float:
    """Mean structural similarity (Wang et al., 2004) with scikit-image's defaults.

    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)), with local
    statistics over a 7x7 uniform window, sample (N-1) covariances, C1 = (0.01 R)^2, C2 = (0.03 R)^2;
    averaged over the pixels whose window lies inside the image, then over colour channels.
    """
    reference, test = _pair(reference, test)
    if min(reference.shape[:2]) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW}, got {reference.shape}")
    peak = _data_range(reference, data_range)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    n = _SSIM_WINDOW**2
    covariance_norm = n / (n - 1.0)
    crop = (_SSIM_WINDOW - 1) // 2

    def mean(a: np.ndarray) -> np.ndarray:
        return cv2.blur(a, (_SSIM_WINDOW, _SSIM_WINDOW), borderType=cv2.BORDER_REFLECT)

    def channel_ssim(x: np.ndarray, y: np.ndarray) -> float:
        mx, my = mean(x), mean(y)
        vx = covariance_norm * (mean(x * x) - mx * mx)
        vy = covariance_norm * (mean(y * y) - my * my)
        vxy = covariance_norm * (mean(x * y) - mx * my)
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        return float(s[crop:-crop, crop:-crop].mean())

    x, y = reference.astype(np.float64), test.astype(np.float64)
    if x.ndim == 2:
        return channel_ssim(x, y)
    return float(np.mean([channel_ssim(x[..., c].copy(), y[..., c].copy()) for c in range(x.shape[2])]))


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings, in milliseconds; ``fps`` is 1000 / median."""

    count: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    fps: float

    @classmethod
    def from_samples(cls, seconds: Sequence[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        if ms.ndim != 1 or ms.size == 0:
            raise ValueError("need at least one latency sample")
        if (ms < 0).any():
            raise ValueError("latency samples must be non-negative")
        median = float(np.median(ms))
        return cls(
            count=int(ms.size),
            median_ms=median,
            p90_ms=float(np.percentile(ms, 90)),
            mean_ms=float(ms.mean()),
            min_ms=float(ms.min()),
            fps=1000.0 / median if median > 0 else float("inf"),
        )


def measure_latency(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 10) -> LatencyStats:
    """Time ``fn()`` with ``time.perf_counter`` over ``repeats`` calls after ``warmup`` untimed ones
    (caches, lazy initialisation, thread pools); summarise with the median, robust to stray pauses."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return LatencyStats.from_samples(samples)
