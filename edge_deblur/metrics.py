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


# --- Scoring up to a shift: the protocol of the Levin et al. (CVPR 2009) blind-deblurring benchmark ---
#
# A blind method recovers the kernel and the image only up to a common translation, so its result is
# compared with the sharp image at the best sub-pixel shift, inside a border that hides the frame's
# edges: gray, 15 pixels cropped, shifts within +-10 px on a 0.25 px grid, bilinear interpolation, then
# the sum of squared differences (SSE) on [0, 1] gray and PSNR with peak 1.

# ITU-R BT.601 luma weights exactly as MATLAB's rgb2gray computes them (the first row of the inverse
# of the NTSC YIQ matrix), which is what the benchmark's MATLAB scripts apply.
_BT601 = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def to_gray(image: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] as float64: Y = 0.2989 R + 0.5870 G + 0.1140 B (ITU-R BT.601, MATLAB rgb2gray).

    Integer images are scaled by their dtype's maximum (255, 65535), float images are taken to be in
    [0, 1] already. Gray (H, W) or (H, W, 1) images are only scaled; an alpha channel is ignored.
    """
    img = np.asarray(image)
    if img.dtype.kind == "u":
        scaled = img.astype(np.float64) / np.iinfo(img.dtype).max
    elif img.dtype.kind == "f":
        scaled = img.astype(np.float64)
    else:
        raise ValueError(f"to_gray needs an unsigned integer or float image, got dtype {img.dtype}")
    if scaled.ndim == 2:
        return scaled
    if scaled.ndim == 3 and scaled.shape[2] == 1:
        return scaled[..., 0]
    if scaled.ndim == 3 and scaled.shape[2] in (3, 4):
        return scaled[..., :3] @ _BT601
    raise ValueError(f"to_gray needs a gray (H, W), RGB or RGBA (H, W, 3|4) image, got shape {img.shape}")


def _bilinear_phase(padded: np.ndarray, fy: float, fx: float) -> np.ndarray:
    """``padded`` resampled at (y + fy, x + fx) by bilinear interpolation, for 0 <= fy, fx < 1; one
    row and column shorter than ``padded`` (its last row and column are the edge replicated)."""
    top, bottom = padded[:-1], padded[1:]
    return ((1 - fy) * ((1 - fx) * top[:, :-1] + fx * top[:, 1:])
            + fy * ((1 - fx) * bottom[:, :-1] + fx * bottom[:, 1:]))


def _shift_grid(max_shift: float, step: float) -> tuple[int, int]:
    """(M, n): shifts are k / n for |k| <= M n, the 1/n grid up to M pixels; validated."""
    phases = 1.0 / step if step > 0 else 0.0
    n = round(phases)
    if not (step > 0 and n >= 1 and abs(phases - n) < 1e-9):
        raise ValueError(f"step must be 1/n pixel for a whole n >= 1 (1, 0.5, 0.25, ...), got {step}")
    m = round(max_shift)
    if max_shift < 0 or abs(max_shift - m) > 1e-9:
        raise ValueError(f"max_shift must be a whole number of pixels >= 0, got {max_shift}")
    return m, n


def align_upto_shift(reference: np.ndarray, test: np.ndarray, *, max_shift: float = 10, step: float = 0.25,
                     border: int = 15) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The gray ``reference`` inside ``border`` and ``test`` resampled at the shift that matches it best.

    Returns ``(reference_crop, aligned_test_crop, (dy, dx))`` with ``reference_crop = R[b:-b, b:-b]``,
    ``aligned_test_crop(y, x) = T(b + y + dy, b + x + dx)`` (bilinear), R and T the ``to_gray`` images,
    and (dy, dx) on the ``step`` grid within ``+-max_shift`` minimising SSE = sum (R - T_shifted)^2:
    a test image whose content sits (dy, dx) pixels lower/right of the reference's is found at (dy, dx).
    This is Levin et al.'s ``comp_upto_shift`` (CVPR 2009) with the benchmark's settings as defaults.

    The search is exhaustive but fast, by an exact reformulation rather than a coarse-to-fine guess
    (which can miss the optimum when the SSE surface has more than one basin). A shift iy + fy with
    integer iy and fractional fy = j * step is the integer shift iy of T_f, the image bilinearly
    resampled at phase f, so for each of the (1/step)^2 phases the SSE of every integer shift is
    sum R^2 - 2 corr(R, T_f) + boxsum(T_f^2): the correlation of all shifts at once by one FFT (and,
    bilinear interpolation being linear, corr(R, T_f) is the same 2x2 blend of corr(R, T) as T_f is
    of T, so one FFT serves every phase), the box sums by an integral image. Candidates within
    rounding of the least SSE are then scored directly and the least wins (ties: the smallest shift).
    ``max_shift <= border`` keeps every sample inside the image, as in the benchmark.
    """
    ref, tst = to_gray(reference), to_gray(test)
    if ref.shape != tst.shape:
        raise ValueError(f"images differ in size: {ref.shape[::-1]} vs {tst.shape[::-1]} (width x height)")
    m, n = _shift_grid(max_shift, step)
    border = int(border)
    if m > border:
        raise ValueError(f"max_shift {max_shift} exceeds the border {border}: shifted samples would leave the image")
    h, w = ref.shape
    hc, wc = h - 2 * border, w - 2 * border
    if hc < 1 or wc < 1:
        raise ValueError(f"a {border}-pixel border leaves nothing of a {w}x{h} image to compare")
    ref_crop = ref[border : border + hc, border : border + wc]
    # One replicated row and column so that every phase is defined on the full frame; their weight is
    # zero at every shift the search reaches (|shift| <= max_shift <= border).
    padded = np.pad(tst, ((0, 1), (0, 1)), mode="edge")

    # corr(R, T)(o) = sum_p R(p) T(p + o) for offsets o in [0, 2m + 1]^2 of the padded frame (no wrap:
    # p + o stays inside the (h + 1) x (w + 1) FFT).
    # Any FFT size at least that large avoids the wrap; a 2-3-5 smooth one is several times faster.
    fft_shape = (cv2.getOptimalDFTSize(padded.shape[0]), cv2.getOptimalDFTSize(padded.shape[1]))
    corr = _circular_correlation(ref_crop, padded, fft_shape)[border - m : border + m + 2, border - m : border + m + 2]
    ref_energy = float(np.sum(ref_crop * ref_crop))

    size = 2 * m * n + 1  # candidates per axis: k / n for k in [-m n, m n]
    sse = np.full((size, size), np.inf)
    offsets = np.arange(2 * m + 1)  # integer shifts iy = offset - m
    # Bilinear interpolation is separable: along x once per fx, then along y per phase.
    along_x = [(1 - jx / n) * padded[:, :-1] + (jx / n) * padded[:, 1:] for jx in range(n)]
    for jy in range(n):
        fy = jy / n
        for jx in range(n):
            fx = jx / n
            phase = (1 - fy) * along_x[jx][:-1] + fy * along_x[jx][1:]  # = _bilinear_phase(padded, fy, fx)
            energy = cv2.integral(phase * phase, sdepth=cv2.CV_64F)
            rows, cols = offsets[:, None] + border - m, offsets[None, :] + border - m
            box = energy[rows + hc, cols + wc] - energy[rows, cols + wc] - energy[rows + hc, cols] + energy[rows, cols]
            c = ((1 - fy) * ((1 - fx) * corr[:-1, :-1] + fx * corr[:-1, 1:])
                 + fy * ((1 - fx) * corr[1:, :-1] + fx * corr[1:, 1:]))
            phase_sse = ref_energy - 2 * c + box
            # Shift (offset - m) + j / n is candidate offset n + j; a fractional phase (j > 0) stops
            # at m - 1 + j / n, inside the +-m range.
            keep_y = offsets < (2 * m + 1 if jy == 0 else 2 * m)
            keep_x = offsets < (2 * m + 1 if jx == 0 else 2 * m)
            sse[np.ix_(offsets[keep_y] * n + jy, offsets[keep_x] * n + jx)] = phase_sse[np.ix_(keep_y, keep_x)]

    # The closed form is exact up to rounding (relative ~1e-12 of the energies): rescore near-ties directly.
    tolerance = 1e-9 * (ref_energy + float(np.max(np.abs(sse[np.isfinite(sse)])))) + 1e-12
    near = np.argwhere(sse <= sse.min() + tolerance)
    grid = (np.arange(size) - m * n) / n
    best = None
    for ky, kx in near[np.argsort(np.abs(grid[near[:, 0]]) + np.abs(grid[near[:, 1]]), kind="stable")][:64]:
        dy, dx = float(grid[ky]), float(grid[kx])
        aligned = _shifted_crop(padded, border, hc, wc, dy, dx)
        score = float(np.sum((ref_crop - aligned) ** 2))
        if best is None or score < best[0]:
            best = (score, aligned, (dy, dx))
    _, aligned, shift = best
    return ref_crop, aligned, shift


def _circular_correlation(template: np.ndarray, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """c(o) = sum_p template(p) image((p + o) mod shape), both zero-padded to ``shape``: IDFT(DFT(image)
    conj(DFT(template))), in float64 with OpenCV's DFT (several times faster here than numpy's)."""
    def spectrum(a: np.ndarray) -> np.ndarray:
        frame = np.zeros(shape, np.float64)
        frame[: a.shape[0], : a.shape[1]] = a
        return cv2.dft(frame)  # real input: the packed (CCS) half spectrum

    product = cv2.mulSpectrums(spectrum(image), spectrum(template), 0, conjB=True)
    return cv2.idft(product, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)


def _shifted_crop(padded: np.ndarray, border: int, hc: int, wc: int, dy: float, dx: float) -> np.ndarray:
    """T(border + y + dy, border + x + dx) for y < hc, x < wc, bilinear, from the edge-padded T."""
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    window = padded[border + iy : border + iy + hc + 1, border + ix : border + ix + wc + 1]
    return _bilinear_phase(window, dy - iy, dx - ix)


def sse_upto_shift(reference: np.ndarray, test: np.ndarray, **align) -> float:
    """Sum of squared differences on [0, 1] gray, sum (R - T_shifted)^2 over the cropped frame, at the
    best shift (``align_upto_shift``; keyword arguments go to it). Levin et al.'s ``ssde``."""
    ref_crop, aligned, _ = align_upto_shift(reference, test, **align)
    return float(np.sum((ref_crop - aligned) ** 2))


def psnr_upto_shift(reference: np.ndarray, test: np.ndarray, **align) -> float:
    """PSNR in dB with peak 1 on [0, 1] gray, 10 log10(1 / MSE), at the best shift (``align_upto_shift``)."""
    ref_crop, aligned, _ = align_upto_shift(reference, test, **align)
    return psnr(ref_crop, aligned, data_range=1.0)


def ssim_upto_shift(reference: np.ndarray, test: np.ndarray, **align) -> float:
    """Mean SSIM (``ssim``, R = 1) of the [0, 1] gray crops at the best shift (``align_upto_shift``)."""
    ref_crop, aligned, _ = align_upto_shift(reference, test, **align)
    return ssim(ref_crop, aligned, data_range=1.0)


def error_ratio(sharp: np.ndarray, restored_estimated: np.ndarray, restored_true: np.ndarray, **align) -> float:
    """Levin et al.'s error ratio: SSE(sharp, restored with the estimated kernel) / SSE(sharp, restored
    by the same non-blind method with the true kernel), both up to shift (``sse_upto_shift``).

    1 means the estimated kernel is as good as the true one; the benchmark counts a result a success
    below about 3. Equal errors give 1 (also when both are 0); a zero reference error gives inf.
    """
    estimated = sse_upto_shift(sharp, restored_estimated, **align)
    true = sse_upto_shift(sharp, restored_true, **align)
    if estimated == true:
        return 1.0
    return float("inf") if true == 0 else estimated / true
