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

import cv2
import numpy as np

from ..errors import EdgeDeblurError
from .kernel import KernelConfig, estimate_kernel_candidates, kernel_similarity, parametric_fits, textured_window
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
    # Restarts: the kernel estimated again from pyramids whose coarsest kernel has these sides, and
    # the candidate kept whose restoration explains the input best (see estimate; chosen on the
    # tuning and validation sets, docs/BENCHMARKS.md). (): one estimate.
    restarts: tuple[int, ...] = (13, 5)
    # ... and the defocus disk and Gaussian nearest the winner (at least this similar to it; None: off),
    # kept when their restoration explains the input better still. Chosen on 35 training photos x
    # defocus, Gaussian, small and large shake that no other setting was tuned on: +2.32 -> +2.68 dB
    # (flat from 0.7 to 0.8; docs/BENCHMARKS.md, "Parametric candidates").
    parametric_similarity: float | None = 0.75
    select_side: int = 256  # candidates are restored and compared on the most textured window of this side
    prefilter_min_sigma: float = 1.0 / 255  # ... noisier than this
    # auto's rule, chosen by a rule stated before looking (docs/BENCHMARKS.md, "Blind deblurring";
    # `benchmarks/blind.py --choose-limits`): of the sharp gate 0.25-0.35, near-sharp gate 0.35-0.5,
    # re-blur 1.1-2.0 and TV 1.4-4.0 limits that lose at most 0.2 dB to the teacher alone and nothing
    # to the input in any class, the best mean, ties to the tighter. Chosen since stop 24 on 50
    # training photos x 5 classes (the 30 validation pairs could not tell two gates apart): gates
    # 0.25 and 0.35, re-blur 1.4, TV 4.0, auto +2.70 dB there (stop 22's 0.35/0.35/1.6/4.0: +2.46).
    # A right kernel's re-blur stays at 0.9-1.0 noise levels; ringing multiplies the total variation.
    max_residual_ratio: float = 1.4  # the re-blurred result may differ by this many noise levels
    max_tv_ratio: float = 4.0  # the result's total variation may be this many times the input's
    sharp_below: float = 0.25  # a (denoised) input whose blur metric is below this is left as it is
    # ... and one below this whose blind result fails the checks is left as it is too, not sent to the
    # network, which over-sharpens a nearly sharp image (the teacher: -12.4 dB on sharp training photos).
    near_sharp_below: float = 0.35
    residual_floor: float = 1.0 / 255  # the noise level the ratio divides by never goes below this


@dataclass
class BlindResult:
    """What happened to the last image: the path it took and why, the kernel, the timings."""

    path: str  # "blind", "network" or "input"
    kernel: np.ndarray | None = None
    noise_sigma: float = 0.0
    residual_ratio: float | None = None
    tv_ratio: float | None = None  # total variation of the result over the input's
    reason: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    candidates: int = 1  # kernels weighed (restarts, parametric fits), of which this one explained the input best
    agreement: float | None = None  # the chosen kernel's mean similarity (Hu & Yang) to the other candidates
    sharpness: float | None = None  # auto: the denoised input's blur metric (None: not measurable)


def auto_path(config: BlindConfig, sharpness: float | None, residual_ratio: float | None, tv_ratio: float | None) -> str:
    """auto's decision for one image: "input" (left as it is), "blind" or "network", from the
    denoised input's blur metric (None: too small to measure) and the blind result's checks
    (None: blind could not estimate). The one rule :class:`AutoDeblurrer` and the benchmark's
    rescoring share."""
    if sharpness is not None and sharpness < config.sharp_below:
        return "input"
    if residual_ratio is not None and residual_ratio <= config.max_residual_ratio and tv_ratio <= config.max_tv_ratio:
        return "blind"
    if sharpness is not None and sharpness < config.near_sharp_below:
        return "input"
    return "network"


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


def total_variation(x: np.ndarray) -> float:
    """Mean anisotropic total variation of an image's luminance (sRGB), mean |d_x x| + |d_y x|."""
    g = x if x.ndim == 2 else x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def blur_metric(x: np.ndarray, *, min_step: float = 4 / 255) -> float:
    """The no-reference blur metric of Crete, Dolmiere, Ladret & Nicolas (SPIE 2007), in [0, 1]:
    blur the luminance with a 9-tap box along each axis and measure how much of its neighbour
    differences the re-blur removes; a sharp image loses much (low score), a blurred one little.
    The larger of the two axes' scores, over the neighbour differences of at least ``min_step`` (so
    that a flat background's residual grain does not vote: a motion-blurred object on a plain wall
    scored 0.27 over every pixel, 0.59 over its edges). Measure it on a denoised image: noise reads
    as sharpness."""
    g = (x if x.ndim == 2 else x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float64)
    scores = []
    for axis, box in ((0, np.ones((9, 1)) / 9), (1, np.ones((1, 9)) / 9)):
        blurred = cv2.filter2D(g, -1, box, borderType=cv2.BORDER_REFLECT)
        d_sharp, d_blur = np.abs(np.diff(g, axis=axis)), np.abs(np.diff(blurred, axis=axis))
        edges = d_sharp >= min_step
        total = d_sharp[edges].sum()
        kept = np.maximum(0.0, d_sharp - d_blur)[edges].sum()
        scores.append(float((total - kept) / total) if total > 0 else 1.0)
    return max(scores)


def tv_ratio(blurred: np.ndarray, restored: np.ndarray) -> float:
    """TV(restored) / TV(blurred). Blur barely changes the total variation of an edge (a blurred
    step varies by the same height), so a right restoration raises it a little (texture comes back)
    or lowers it (noise goes); ringing from a wrong kernel multiplies it."""
    return total_variation(restored) / max(total_variation(blurred), 1e-6)


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

    def denoised(self, x: np.ndarray, noise_sigma: float) -> np.ndarray:
        """What the kernel is estimated on: a denoised copy of ``x`` when it is noisy, since noise,
        not blur, would otherwise dominate the finest scale's gradients."""
        cfg = self.config
        return self.denoiser(x, noise_sigma) if cfg.prefilter and noise_sigma > cfg.prefilter_min_sigma else x

    def estimate(self, x: np.ndarray, noise_sigma: float, denoised: np.ndarray | None = None) -> np.ndarray:
        """The kernel of float colour image ``x`` (estimated on ``denoised``, by default
        :meth:`denoised`): with restarts (``config.restarts``), the candidate whose restoration,
        re-blurred, is nearest the input (the smallest residual ratio), judged on the most textured
        window of at most ``config.select_side`` pixels."""
        return self._estimate(x, noise_sigma, denoised)[0]

    def _estimate(self, x: np.ndarray, noise_sigma: float, denoised: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
        """(kernel, every candidate, the kernel's restoration of the whole of ``x`` when the
        choice already made it, else None)."""
        cfg = self.config
        d = self.denoised(x, noise_sigma) if denoised is None else denoised
        try:
            candidates = estimate_kernel_candidates(d, cfg.kernel_size, cfg.kernel, cfg.restarts)
        except ValueError as e:
            raise EdgeDeblurError(str(e)) from e
        if len(candidates) == 1 and cfg.parametric_similarity is None:
            return candidates[0], candidates, None
        # A wrong kernel's restoration cannot explain the input as well as the right one's: on the
        # tuning and validation sets the smallest residual ratio picked the better candidate far
        # more often than the medoid or the L0 energy (docs/BENCHMARKS.md, "restarts").
        window = textured_window(x if x.ndim == 2 else x.mean(axis=2), cfg.select_side)
        whole = window == (slice(0, x.shape[0]), slice(0, x.shape[1]))
        crop = x[window]
        scored = []
        for k in candidates:
            y = self.restore(crop, k, noise_sigma)
            scored.append((self.residual_ratio(crop, y, k, noise_sigma), k, y if whole else None))
        best = min(scored, key=lambda s: s[0])
        if cfg.parametric_similarity is not None:
            fits = [fit[2] for fit in parametric_fits(best[1], min_similarity=cfg.parametric_similarity)]
            for k in fits:
                y = self.restore(crop, k, noise_sigma)
                scored.append((self.residual_ratio(crop, y, k, noise_sigma), k, y if whole else None))
            candidates = [*candidates, *fits]
            best = min(scored, key=lambda s: s[0])
        return best[1], candidates, best[2]

    def restore(self, x: np.ndarray, kernel: np.ndarray, noise_sigma: float) -> np.ndarray:
        return restore_float(x, kernel, self.denoiser, noise_sigma, self.config.restore)

    def deblur_float(self, x: np.ndarray, sigma: float | None = None, denoised: np.ndarray | None = None) -> np.ndarray:
        """Float colour in, float colour out; ``sigma`` and ``denoised`` when the caller has them."""
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        sigma = self.noise_sigma(x) if sigma is None else sigma
        kernel, candidates, y = (self.fixed_kernel, [], None) if self.fixed_kernel is not None else self._estimate(x, sigma, denoised)
        count = max(1, len(candidates))
        others = [c for c in candidates if c is not kernel]
        agreement = float(np.mean([kernel_similarity(kernel, c) for c in others])) if others else None
        seconds["estimate"] = time.perf_counter() - t
        t = time.perf_counter()
        if y is None:
            y = self.restore(x, kernel, sigma)
        seconds["restore"] = time.perf_counter() - t
        ratio = self.residual_ratio(x, y, kernel, sigma)
        self.last = BlindResult("blind", kernel, sigma, ratio, tv_ratio(x, y), candidates=count, agreement=agreement,
                                reason=f"kernel: the best of {count} candidates (restarts, parametric fits)" if count > 1 else "", seconds=seconds)
        return y

    def residual_ratio(self, x: np.ndarray, y: np.ndarray, kernel: np.ndarray, sigma: float) -> float:
        """RMS of input - re-blurred result, in units of the noise level (floored)."""
        rms = reblur_residual(x, y, kernel, linear_light=self.config.restore.linear_light)
        return rms / max(sigma, self.config.residual_floor)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x, back = split_image(image)
        return back(self.deblur_float(x))


class AutoDeblurrer:
    """``--method auto``: an image whose denoised copy already reads sharp (``blur_metric`` below
    ``sharp_below``) is left as it is; the others are deblurred blind, and the result is kept when
    it passes both checks (re-blurred, it is within ``max_residual_ratio`` noise levels of the input;
    its total variation is within ``max_tv_ratio`` of the input's). A failed estimate, or an image
    blind estimation cannot work on, goes to ``fallback`` (the feed-forward network) or, without one,
    through untouched; so does one whose metric is below ``near_sharp_below`` (the network would
    over-sharpen it). The rule is :func:`auto_path`. ``last`` says which path each image took and why."""

    def __init__(self, blind: BlindDeblurrer, fallback: Callable[[np.ndarray], np.ndarray] | None = None):
        self.blind, self.fallback = blind, fallback
        self.last: BlindResult | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x, back = split_image(image)
        cfg = self.blind.config
        t = time.perf_counter()
        try:
            sigma = self.blind.noise_sigma(x)
        except ValueError as e:  # smaller than the noise estimator's 8x8
            sigma, denoised, sharpness = 0.0, None, None
            reason = f"estimate impossible: {e}"
        else:
            denoised = self.blind.denoised(x, sigma)
            sharpness = blur_metric(denoised)
        if sharpness is not None and sharpness < cfg.sharp_below:  # auto_path's first rule, before any estimate
            self.last = BlindResult("input", None, sigma, None, None,
                                    f"already sharp (blur metric {sharpness:.2f} < {cfg.sharp_below:g}); left as it is",
                                    {"check": time.perf_counter() - t}, sharpness=sharpness)
            return np.asarray(image).copy()
        kernel, seconds, ratios = None, {}, (None, None)
        if sharpness is not None:
            try:
                y = self.blind.deblur_float(x, sigma, denoised)
                result = self.blind.last
                kernel, seconds, ratios = result.kernel, result.seconds, (result.residual_ratio, result.tv_ratio)
                measured = (f"re-blurred result {result.residual_ratio:.2f} noise levels from the input "
                            f"(limit {cfg.max_residual_ratio:g}), total variation x{result.tv_ratio:.2f} (limit {cfg.max_tv_ratio:g})")
                if auto_path(cfg, sharpness, *ratios) == "blind":
                    result.reason = "; ".join(filter(None, [result.reason, measured]))
                    result.sharpness = sharpness
                    self.last = result
                    return back(y)
                reason = "estimate failed: " + measured
            except EdgeDeblurError as e:  # no edges, too small: nothing to estimate from
                reason = f"estimate impossible: {e}"
        if self.fallback is None or auto_path(cfg, sharpness, *ratios) == "input":
            why = "; passed through" if self.fallback is None else (
                f"; nearly sharp (blur metric {sharpness:.2f} < {cfg.near_sharp_below:g}): left as it is, not to the network")
            self.last = BlindResult("input", kernel, sigma, None, None, reason + why, seconds, sharpness=sharpness)
            return np.asarray(image).copy()
        t = time.perf_counter()
        out = self.fallback(image)
        seconds = dict(seconds, fallback=time.perf_counter() - t)
        self.last = BlindResult("network", kernel, sigma, None, None, reason + "; the network restored it", seconds, sharpness=sharpness)
        return out
