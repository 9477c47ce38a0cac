"""Blind estimation of a spatially uniform blur kernel from one image.

The model is y = k * x + n with one kernel k for the whole frame (camera shake on a rigid scene,
defocus). Following Pan, Hu, Su & Yang ("Deblurring text images via L0-regularized intensity and
gradient prior", CVPR 2014, whose natural-image setting is the L0 gradient prior of Xu, Zheng & Jia,
CVPR 2013), as analysed by Anger, Facciolo & Delbracio (IPOL 2019), the estimate alternates two
least-squares steps, coarse to fine over an image pyramid:

- latent image:  x = argmin ||k * x - y||^2 + lambda ||grad x||_0 (+ sigma ||x||_0), solved by
  half-quadratic splitting with FFTs (:func:`l0_latent`);
- kernel:        k = argmin sum_d ||d x * k - d y||^2 + gamma ||k||^2 on the kernel's support, solved
  by conjugate gradients on its normal equations, then made non-negative, thresholded, cleaned of
  isolated components, normalised and centred (:func:`estimate_psf`, :func:`clean_kernel`).

lambda decays by 1.1 after every alternation (Pan et al.), so the latent image starts as a few
strong edges and gains detail as the kernel settles. Estimation runs on luminance in linear light,
where a camera's blur happens, with saturated pixels kept out of the kernel step.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..classical import defocus_psf, gaussian_psf
from .signal import dft2, gradient_energy, gradients, idft2_real, luminance, periodic_extend, psf2otf, psf2otf_full, srgb_to_linear


@dataclass(frozen=True)
class KernelConfig:
    """Parameters of :func:`estimate_kernel`, named and defaulted as in Pan et al. 2014."""

    size: int | None = None  # odd kernel side in pixels; None: chosen automatically (see choose_size)
    lambda_grad: float = 4e-3  # lambda, weight of ||grad x||_0 at the coarsest scale
    lambda_min: float = 1e-4  # lambda never decays below this
    lambda_decay: float = 1.1  # lambda /= this after each alternation
    sigma_intensity: float = 0.0  # sigma, weight of ||x||_0 (Pan et al.'s text prior; 0 for photos)
    gamma: float = 2.0  # gamma, weight of ||k||^2 in the kernel step (at the finest scale)
    scale_gamma: bool = True  # gamma shrinks with each coarser level's pixel count
    iterations: int = 5  # alternations per scale
    scale_ratio: float = 0.5**0.5  # image and kernel shrink by this from one scale to the next
    coarsest: int = 9  # kernel side at the coarsest scale (9 beat 5, 13 and 17 on the validation set)
    kappa: float = 2.0  # beta's growth factor in the half-quadratic L0 solver
    beta_max: float = 1e5
    threshold: float = 0.05  # kernel entries below this fraction of the largest are set to zero
    component_mass: float = 0.1  # connected kernel components holding less of its mass are removed
    relative_mass: float = 0.5  # ... and those lighter than this fraction of the heaviest one (validation: 0.842 kernel similarity against 0.825 without)
    edge_decay: float = 1.1  # the edge-selection threshold falls by this each alternation
    edge_r: float = 2.0  # Cho & Lee's r: at least r x size pixels per direction bin kept; 0: no selection
    # The finest scale: every latent gradient (edge selection, which steers the coarse scales away
    # from the no-blur solution, biases the kernel once it is close: started from the true kernel,
    # 5 alternations kept a similarity of 0.976 without it, 0.952 with it), and more alternations,
    # since that is where the kernel converges (the tuning set of benchmarks/blind_tune.py, noise 0.01:
    # 20 alternations with every gradient +3.0 dB over the blurred input, against +0.6 for 5 with edge
    # selection; 30: +2.95).
    finest_edge_r: float | None = 0.0  # r at the finest scale (None: edge_r)
    finest_iterations: int | None = 20  # alternations at the finest scale (None: iterations)
    cg_iterations: int = 12  # conjugate-gradient iterations of the kernel step, warm-started (12: +3.14 dB, 25: +3.03)
    restart_workers: int | None = None  # threads restarts run on (None: one each, up to the CPU count; numpy's FFTs release the GIL)
    linear_light: bool = True  # undo the sRGB transfer before estimating (blur happens in linear light)
    # Estimate on the most textured window of at most this side. 256, not 400: on 12 whole tuning
    # photos (321x481 to 500x500, `blind_tune.py whole`) the blind method gained +5.29 dB with 256
    # against +5.24 with 400 (true kernel +5.95), and the 640x480 path took 16.6 s against 22.7
    # (docs/BENCHMARKS.md); the benchmark sets' 256-pixel crops are estimated whole either way.
    max_side: int = 256
    # Restarts on a window of at most this side (a restart only has to be right to be kept: the
    # caller picks by the restorations); at most max_side.
    restart_max_side: int | None = 256  # None: max_side
    saturation: float = 0.98  # pixels at or above this (in [0, 1]) are treated as clipped highlights
    # Xu & Jia (2010)'s r-map: latent gradients where the blurred image's gradients do not add up to
    # an edge (fine texture, which blur mixes across the kernel's extent) are kept out of the kernel
    # step; this fraction of the pixels, those of lowest r, at every scale. 0: off.
    texture_fraction: float = 0.0
    texture_window: int = 5  # N_h, the window r sums over
    texture_eps: float = 0.5  # the constant in r's denominator (intensities in [0, 1])
    restart_texture_fraction: float | None = 0.0  # the restarts' texture_fraction (None: texture_fraction)


# --- the two steps ---------------------------------------------------------------------------------


def l0_latent(y: np.ndarray, kernel: np.ndarray, lam: float, *, sigma: float = 0.0, kappa: float = 2.0,
              beta_max: float = 1e5) -> np.ndarray:
    """x = argmin_x ||k * x - y||^2 + lam ||grad x||_0 + sigma ||x||_0 by half-quadratic splitting
    (Xu, Lu, Xu & Jia 2011; Pan et al. 2014): auxiliary g ~ grad x (and u ~ x) are the hard
    thresholds g = grad x if |grad x|^2 >= lam / beta else 0, then x solves the quadratic problem
    in closed form,  X = (conj(K) Y + beta (conj(Dx) Gx + conj(Dy) Gy) + mu U) /
    (|K|^2 + beta (|Dx|^2 + |Dy|^2) + mu),  with beta = 2 lam, multiplied by ``kappa`` until
    ``beta_max`` (and mu likewise for the intensity term). ``y`` must already be periodic (see
    :func:`~edge_deblur.blind.signal.periodic_extend`)."""
    shape = y.shape
    # Full-grid OpenCV transforms: this loop is the estimator's cost (its FFTs), and cv2's are
    # 1.5x numpy's here (see signal.dft2).
    otf = psf2otf_full(kernel, shape)
    d2 = gradient_energy(shape)
    x = y.astype(np.float32)
    numerator0 = np.conj(otf) * dft2(x)
    k2 = (otf.real**2 + otf.imag**2).astype(np.float32)
    mu = 2 * sigma if sigma > 0 else 0.0
    while True:
        extra_num, extra_den = 0.0, 0.0
        if sigma > 0:
            u = np.where(x * x >= sigma / mu, x, np.float32(0))
            extra_num, extra_den = np.float32(mu) * dft2(u), np.float32(mu)
        beta = 2 * lam
        while beta < beta_max:
            gx, gy = gradients(x)
            keep = gx * gx + gy * gy >= lam / beta
            gx *= keep
            gy *= keep
            # conj(Dx) F(gx) + conj(Dy) F(gy) = F(Dx^T gx + Dy^T gy): one transform, not two.
            div = (np.roll(gx, 1, axis=1) - gx) + (np.roll(gy, 1, axis=0) - gy)
            numerator = numerator0 + np.float32(beta) * dft2(div) + extra_num
            x = idft2_real(numerator / (k2 + np.float32(beta) * d2 + extra_den))
            beta *= kappa
        if sigma <= 0:
            return x.astype(np.float64)
        mu *= kappa
        if mu > beta_max:
            return x.astype(np.float64)


def edge_threshold(gx: np.ndarray, gy: np.ndarray, kernel_size: int, *, r: float = 2.0) -> float:
    """Cho & Lee (2009)'s gradient threshold: angles quantised to 45 degrees (opposite directions
    together), the largest magnitude that still leaves at least r sqrt(P_k) = r x ``kernel_size``
    pixels above it in every direction bin. The kernel step first sees only the few strongest edges,
    which are what pins a blur down (weak ones favour the no-blur solution); the threshold then
    falls by 1.1 each iteration."""
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    bins = np.minimum((angle / (np.pi / 4)).astype(int), 3)
    need = int(np.ceil(r * kernel_size))
    threshold = np.inf
    for b in range(4):
        values = magnitude[(bins == b) & (magnitude > 0)]
        if values.size == 0:
            continue
        threshold = min(threshold, float(np.sort(values)[-min(need, values.size)]))
    return 0.0 if not np.isfinite(threshold) else threshold


def edge_usefulness(y: np.ndarray, *, window: int = 5, eps: float = 0.5) -> np.ndarray:
    """Xu & Jia (ECCV 2010)'s usefulness of an edge for kernel estimation,
    r(x) = || sum_{N_h(x)} grad y || / (sum_{N_h(x)} ||grad y|| + eps), over the ``window`` x ``window``
    neighbourhood N_h of every pixel of ``y`` (intensities in [0, 1]): near 1 along an edge wider
    than the window, where the gradients agree; near 0 across structures narrower than it, where
    they cancel out (blur mixes those across the kernel's extent, so the latent image's edges there
    are not the blurred image's and mislead the kernel step), and on weak gradients, which ``eps``
    outweighs."""
    gx, gy = np.gradient(np.asarray(y, np.float64))
    box = lambda a: cv2.boxFilter(a, -1, (window, window), normalize=False, borderType=cv2.BORDER_REFLECT)
    return np.hypot(box(gx), box(gy)) / (box(np.hypot(gx, gy)) + eps)


def texture_mask(y: np.ndarray, fraction: float, *, window: int = 5, eps: float = 0.5) -> np.ndarray:
    """False on the ``fraction`` of the pixels of lowest :func:`edge_usefulness`, True elsewhere."""
    r = edge_usefulness(y, window=window, eps=eps)
    return r >= np.quantile(r, fraction)


def select_edges(gx: np.ndarray, gy: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The latent gradients whose magnitude reaches ``threshold``; the rest set to zero."""
    keep = np.hypot(gx, gy) >= threshold
    return gx * keep, gy * keep


def estimate_psf(latent_grads: tuple[np.ndarray, np.ndarray], blurred_grads: tuple[np.ndarray, np.ndarray],
                 size: int, *, mask: np.ndarray | None = None, gamma: float = 2.0, iterations: int = 25,
                 initial: np.ndarray | None = None) -> np.ndarray:
    """k = argmin_k sum_d ||M (d x * k - d y)||^2 + gamma ||k||^2 over kernels of ``size`` x ``size``.

    M (``mask``, default all ones) is 1 where the blurred gradient is an observation: inside the
    frame (the periodic extension past it is not a blurred image, and its seams would print lines
    into k) and away from clipped pixels. The normal equations are (R + gamma I) k = b, with
    b = corr(d x, M d y) exact and R the autocorrelation of M d x, which differs from the exact
    masked Gram matrix only by terms within the kernel's radius of the mask's edges. Both come from
    one FFT each; conjugate gradients then work on the small kernel grid only. Returns the
    unconstrained solution (it may be negative)."""
    r = size // 2
    shape = latent_grads[0].shape
    m = np.ones(shape) if mask is None else mask
    auto = np.zeros((shape[0], shape[1] // 2 + 1), np.float64)
    cross = np.zeros_like(auto, dtype=np.complex128)
    for lx, bx in zip(latent_grads, blurred_grads):
        fl = np.fft.rfft2(lx)
        auto = auto + np.abs(np.fft.rfft2(m * lx)) ** 2
        cross = cross + np.conj(fl) * np.fft.rfft2(m * bx)

    def lags(spectrum: np.ndarray, radius: int) -> np.ndarray:
        full = np.fft.irfft2(spectrum, s=shape)
        return np.roll(full, (radius, radius), axis=(0, 1))[: 2 * radius + 1, : 2 * radius + 1]

    b = lags(cross, r)
    big = lags(auto.astype(np.complex128), 2 * r)  # R at lags -2r..2r
    n = cv2.getOptimalDFTSize(6 * r + 1)
    f_big = np.fft.rfft2(big, s=(n, n))

    def apply(k: np.ndarray) -> np.ndarray:
        full = np.fft.irfft2(f_big * np.fft.rfft2(k, s=(n, n)), s=(n, n))
        return full[2 * r : 4 * r + 1, 2 * r : 4 * r + 1] + gamma * k

    initial = np.full((size, size), 1.0 / size**2) if initial is None else initial
    return _conjugate_gradients(apply, b, initial, iterations)


def estimate_psf_masked(latent_grads: tuple[np.ndarray, np.ndarray], blurred_grads: tuple[np.ndarray, np.ndarray],
                        size: int, *, mask: np.ndarray, gamma: float = 2.0, iterations: int = 25,
                        initial: np.ndarray | None = None) -> np.ndarray:
    """:func:`estimate_psf` with the masked Gram matrix exact: k -> sum_d corr(d x, M (d x * k)) +
    gamma k applied by full-frame FFTs at every conjugate-gradient step. Slower; needed where the mask
    cuts through strong latent edges (clipped highlights), where the autocorrelation of M d x is far
    from the masked Gram matrix."""
    shape = latent_grads[0].shape
    r = size // 2
    # float32 transforms: the operator runs at every CG step on the whole frame, where float64's
    # precision buys nothing; the kernel's own arithmetic (CG on the small grid) stays float64.
    m = np.asarray(mask, np.float32)
    spectra = [np.fft.rfft2(np.asarray(g, np.float32)) for g in latent_grads]

    def lags(spectrum: np.ndarray) -> np.ndarray:
        full = np.fft.irfft2(spectrum, s=shape)
        return np.roll(full, (r, r), axis=(0, 1))[: 2 * r + 1, : 2 * r + 1].astype(np.float64)

    b = lags(sum(np.conj(f) * np.fft.rfft2(m * np.asarray(g, np.float32)) for f, g in zip(spectra, blurred_grads)))

    def apply(k: np.ndarray) -> np.ndarray:
        fk = psf2otf(k.astype(np.float32), shape)
        return lags(sum(np.conj(f) * np.fft.rfft2(m * np.fft.irfft2(f * fk, s=shape)) for f in spectra)) + gamma * k

    return _conjugate_gradients(apply, b, np.full((size, size), 1.0 / size**2) if initial is None else initial, iterations)


def _conjugate_gradients(apply, b: np.ndarray, k: np.ndarray, iterations: int) -> np.ndarray:
    """Conjugate gradients for the symmetric positive definite system apply(k) = b, from ``k``."""
    k = k.astype(np.float64)
    residual = b - apply(k)
    direction = residual.copy()
    rr = float((residual * residual).sum())
    for _ in range(iterations):
        if rr <= 1e-20:
            break
        q = apply(direction)
        alpha = rr / float((direction * q).sum())
        k = k + alpha * direction
        residual = residual - alpha * q
        rr_new = float((residual * residual).sum())
        direction = residual + (rr_new / rr) * direction
        rr = rr_new
    return k


def center_kernel(kernel: np.ndarray) -> np.ndarray:
    """``kernel`` moved by whole pixels so that its centroid is at the centre pixel (content moved
    off the grid is dropped). A kernel and its latent image can move together; keeping the kernel
    centred keeps its support inside the box across scales."""
    total = kernel.sum()
    if total <= 0:
        return kernel
    ys, xs = np.indices(kernel.shape)
    c = (np.array(kernel.shape) - 1) / 2
    dy = int(np.round(c[0] - (ys * kernel).sum() / total))
    dx = int(np.round(c[1] - (xs * kernel).sum() / total))
    out = np.zeros_like(kernel)
    h, w = kernel.shape
    src = kernel[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def clean_kernel(kernel: np.ndarray, *, threshold: float = 0.05, component_mass: float = 0.1,
                 relative_mass: float = 0.0) -> np.ndarray:
    """Project a kernel estimate onto plausible blur kernels (Pan et al. 2014): negatives and
    entries below ``threshold`` times the largest set to zero, 8-connected components holding less
    than ``component_mass`` of the total, or than ``relative_mass`` of the heaviest component, removed
    (isolated noise), normalised to sum 1, centred. A
    kernel with nothing left becomes the identity."""
    k = np.maximum(np.asarray(kernel, np.float64), 0.0)
    top = k.max()
    if not np.isfinite(top) or top <= 0:
        return identity_kernel(kernel.shape[0])
    k[k < threshold * top] = 0.0
    count, labels = cv2.connectedComponents((k > 0).astype(np.uint8), connectivity=8)
    if count > 2:
        mass = np.bincount(labels.ravel(), weights=k.ravel(), minlength=count)
        total = mass[1:].sum()
        # A blur kernel is one connected path (a shake's trajectory, a defocus disk): pieces lighter
        # than ``component_mass`` of the total or of the heaviest piece are noise.
        small = np.flatnonzero((mass < component_mass * total) | (mass < relative_mass * mass[1:].max()))
        small = small[small > 0]
        if len(small) < count - 1:  # never remove every component
            k[np.isin(labels, small)] = 0.0
    k = center_kernel(k)  # may drop what moves off the grid: normalise after
    return k / k.sum()


def identity_kernel(size: int) -> np.ndarray:
    """A ``size`` x ``size`` kernel that does not blur: 1 at the centre."""
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


def resize_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """``kernel`` resampled to ``size`` x ``size`` (bilinear), made non-negative and normalised."""
    k = cv2.resize(kernel.astype(np.float64), (size, size), interpolation=cv2.INTER_LINEAR)
    k = np.maximum(k, 0.0)
    return k / k.sum() if k.sum() > 0 else identity_kernel(size)


# --- the pyramid -------------------------------------------------------------------------------------


def kernel_sizes(size: int, ratio: float = 0.5**0.5, coarsest: int = 5) -> list[int]:
    """Odd kernel sides from ``size`` down to ``coarsest`` (finest first): each the previous times
    ``ratio``, rounded to the nearest odd number and at least 2 smaller (Pan et al.'s schedule)."""
    sizes = [size]
    while sizes[-1] > coarsest:
        s = 2 * int(round((sizes[-1] * ratio - 1) / 2)) + 1
        sizes.append(max(coarsest, min(s, sizes[-1] - 2)))
    return sizes


def _initial_kernel(size: int) -> np.ndarray:
    """The coarsest scale's start: two horizontal pixels at the centre (Pan et al.), not a delta,
    which would be a fixed point of the alternation."""
    k = np.zeros((size, size))
    c = size // 2
    k[c, c - 1 : c + 1] = 0.5
    return k


def _usable(mask: np.ndarray) -> np.ndarray:
    """Pixels whose blurred gradient is a linear observation: neither they nor their gradient's
    neighbour are clipped. A sensor clips after the lens and the shake have blurred the scene,
    y = clip(k * x), so only the clipped pixels themselves break the model, not their footprint."""
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    return (grown == 0).astype(np.float64)


def estimate_at_scale(y: np.ndarray, kernel: np.ndarray, lam: float, config: KernelConfig,
                      clipped: np.ndarray, finest_pixels: int | None = None) -> tuple[np.ndarray, float]:
    """``config.iterations`` alternations of the latent and kernel steps on one pyramid level;
    returns the kernel and the decayed lambda."""
    size = kernel.shape[0]
    ext, inner = periodic_extend(y, size)
    # Observations: the frame (less a pixel, for the gradients), without clipped pixels.
    frame = np.zeros(ext.shape)
    frame[inner] = _usable(clipped)
    frame[inner][[0, -1], :] = 0
    frame[inner][:, [0, -1]] = 0
    by = gradients(ext)
    useful = None
    if config.texture_fraction > 0:
        useful = np.zeros(ext.shape, bool)
        useful[inner] = texture_mask(y, config.texture_fraction, window=config.texture_window, eps=config.texture_eps)
    threshold = None
    # gamma weighs ||k||^2 against a data term summed over pixels: scaled by the level's share of
    # the finest level's pixels, the kernel is regularised alike at every scale (see KernelConfig).
    gamma = config.gamma * (y.size / finest_pixels if config.scale_gamma and finest_pixels else 1.0)
    for _ in range(config.iterations):
        latent = l0_latent(ext, kernel, lam, sigma=config.sigma_intensity, kappa=config.kappa, beta_max=config.beta_max)
        lx, ly = gradients(latent)
        if useful is not None:
            lx, ly = lx * useful, ly * useful
        if config.edge_r > 0:
            threshold = edge_threshold(lx[inner], ly[inner], size, r=config.edge_r) if threshold is None else threshold / config.edge_decay
            lx, ly = select_edges(lx, ly, threshold)
        solve = estimate_psf_masked if clipped.any() else estimate_psf
        raw = solve((lx, ly), by, size, mask=frame, gamma=gamma, iterations=config.cg_iterations, initial=kernel)
        kernel = clean_kernel(raw, threshold=config.threshold, component_mass=config.component_mass,
                              relative_mass=config.relative_mass)
        lam = max(lam / config.lambda_decay, config.lambda_min)
    return kernel, lam


def textured_window(gray: np.ndarray, side: int) -> tuple[slice, slice]:
    """The ``side`` x ``side`` window (or the whole image, if smaller) with the most gradient
    energy: where the kernel shows best. Windows are scored on an 8 x 8 grid of positions."""
    h, w = gray.shape
    if h <= side and w <= side:
        return slice(0, h), slice(0, w)
    sh, sw = min(side, h), min(side, w)
    gx, gy = np.gradient(gray)
    energy = cv2.integral((gx * gx + gy * gy).astype(np.float64))
    best, where = -1.0, (0, 0)
    for top in np.linspace(0, h - sh, 8).astype(int):
        for left in np.linspace(0, w - sw, 8).astype(int):
            e = energy[top + sh, left + sw] - energy[top, left + sw] - energy[top + sh, left] + energy[top, left]
            if e > best:
                best, where = e, (top, left)
    return slice(where[0], where[0] + sh), slice(where[1], where[1] + sw)


def estimation_image(image: np.ndarray, config: KernelConfig = KernelConfig()) -> tuple[np.ndarray, np.ndarray]:
    """The gray float64 image kernel estimation works on (luminance, in linear light unless
    ``config.linear_light`` is off) and its mask of clipped pixels, from a gray/RGB/RGBA image of
    dtype uint8, uint16 or float in [0, 1]."""
    img = np.asarray(image)
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype, 1.0)
    if img.dtype.kind not in "uf":
        raise ValueError(f"unsupported image dtype {img.dtype}; expected uint8, uint16 or float")
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[..., :3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    elif img.ndim != 2:
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {img.shape}")
    x = np.clip(img.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    clipped = (x >= config.saturation) if x.ndim == 2 else (x >= config.saturation).any(axis=2)
    if config.linear_light:
        x = srgb_to_linear(x)
    return luminance(x).astype(np.float64), clipped


def has_edges(gray: np.ndarray, clipped: np.ndarray, *, min_gradient: float = 2e-3, min_fraction: float = 0.002) -> bool:
    """Whether there is anything to estimate from: at least ``min_fraction`` of the unclipped pixels
    have a gradient of ``min_gradient`` or more after a Gaussian of sigma 1.5 (which keeps blurred
    edges and removes most sensor noise). A flat, black or saturated frame has none."""
    smooth = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.5)
    gx, gy = np.gradient(smooth)
    strong = (np.hypot(gx, gy) >= min_gradient) & ~clipped
    return strong.sum() >= max(16, min_fraction * gray.size)


def estimate_kernel(image: np.ndarray, size: int | None = None, config: KernelConfig = KernelConfig(),
                    *, progress=None) -> np.ndarray:
    """Estimate the blur kernel of ``image`` (gray/RGB/RGBA; uint8, uint16 or float in [0, 1]).

    ``size`` (odd, pixels) overrides ``config.size``; None chooses it automatically
    (:func:`choose_size`). Returns a float64 ``size`` x ``size`` kernel, non-negative, summing to 1,
    centred. ``progress``, if given, is called as ``progress(done, total)`` after each scale.
    Raises ValueError for a kernel larger than the image or an image too small to estimate from.
    """
    gray, clipped, size = _prepared(image, size, config)
    if size is None:
        return choose_size(gray, clipped, config, progress=progress)[0]
    return _estimate(gray, clipped, size, config, progress=progress)


def estimate_kernel_candidates(image: np.ndarray, size: int | None = None, config: KernelConfig = KernelConfig(),
                               restarts: tuple[int, ...] = ()) -> list[np.ndarray]:
    """Restarts of :func:`estimate_kernel`: its kernel first, then the whole coarse-to-fine estimate
    again, at the size that one has, from pyramids whose coarsest kernel has each side in
    ``restarts``. The alternation has several attractors, and which one it falls into depends on
    the path the pyramid takes to it; the caller picks among the candidates (the blind method: by
    how well each one's restoration explains the input, see
    :meth:`~edge_deblur.blind.method.BlindDeblurrer.estimate`). All run at once on
    ``config.restart_workers`` threads; with the size chosen automatically the restarts start in
    :func:`choose_size`'s first box and run again only if it grows."""
    gray, clipped, size = _prepared(image, size, config)
    starts = [c for c in dict.fromkeys(restarts) if c != config.coarsest]
    guess = size if size is not None else _size_limits(gray)[0]  # choose_size's first box
    first_job = (lambda: choose_size(gray, clipped, config)[0]) if size is None else (lambda: _estimate(gray, clipped, size, config))
    restart = replace(config, max_side=min(config.max_side, config.restart_max_side or config.max_side),
                      texture_fraction=config.texture_fraction if config.restart_texture_fraction is None else config.restart_texture_fraction)
    again = lambda c, s: _estimate(gray, clipped, s, replace(restart, coarsest=c))
    workers = min(config.restart_workers or os.cpu_count() or 1, len(starts) + 1)
    if workers <= 1 or not starts:
        first = first_job()
        return [first, *(again(c, first.shape[0]) for c in starts)]
    with ThreadPoolExecutor(workers) as pool:
        pending = pool.submit(first_job)
        others = list(pool.map(lambda c: again(c, guess), starts))
        first = pending.result()
        if first.shape[0] != guess:  # the box grew: the restarts again in the grown box
            others = list(pool.map(lambda c: again(c, first.shape[0]), starts))
    return [first, *others]


def _prepared(image: np.ndarray, size: int | None, config: KernelConfig) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The estimation image, its clipped mask and the checked kernel size (None: to choose), or a
    ValueError naming what makes the image unusable."""
    size = size if size is not None else config.size
    gray, clipped = estimation_image(image, config)
    h, w = gray.shape
    if min(h, w) < 32:
        raise ValueError(f"image of {w}x{h} pixels is too small to estimate a blur kernel from (need 32x32 or more)")
    if not has_edges(gray, clipped):
        raise ValueError("the image has no edges to estimate a blur kernel from (flat, or clipped black/white)")
    if size is None:
        return gray, clipped, None
    size = int(size)
    if size < 3:
        raise ValueError(f"kernel size must be at least 3, got {size}")
    size += 1 - size % 2
    if size > min(h, w) // 2:
        raise ValueError(f"kernel size {size} is too large for an image of {w}x{h} (at most half its shorter side, {min(h, w) // 2})")
    return gray, clipped, size


def _estimate(gray: np.ndarray, clipped: np.ndarray, size: int, config: KernelConfig, *, progress=None) -> np.ndarray:
    window = textured_window(gray, config.max_side)
    gray, clipped = gray[window], clipped[window]
    sizes = kernel_sizes(size, config.scale_ratio, config.coarsest)
    kernel = _initial_kernel(sizes[-1])
    lam = config.lambda_grad
    for done, s in enumerate(reversed(sizes), start=1):
        factor = s / size if s < size else 1.0
        if factor < 1.0:
            shape = (max(8, int(round(gray.shape[1] * factor))), max(8, int(round(gray.shape[0] * factor))))
            y = cv2.resize(gray, shape, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(clipped.astype(np.uint8), shape, interpolation=cv2.INTER_NEAREST).astype(bool)
        else:
            y, mask = gray, clipped
        kernel = resize_kernel(kernel, s) if kernel.shape[0] != s else kernel
        level = config
        if s == size:
            level = replace(config, edge_r=config.edge_r if config.finest_edge_r is None else config.finest_edge_r,
                            iterations=config.iterations if config.finest_iterations is None else config.finest_iterations)
        kernel, lam = estimate_at_scale(y, kernel, lam, level, mask, gray.size)
        if progress is not None:
            progress(done, len(sizes))
    return kernel


def kernel_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Hu & Yang (2012)'s kernel similarity: the largest normalised cross-correlation of two
    kernels over all relative shifts, in [0, 1] for non-negative kernels (1: the same up to a shift
    and a scale). Kernels may differ in size."""
    s = cv2.getOptimalDFTSize(a.shape[0] + b.shape[0])
    pa, pb = np.zeros((s, s)), np.zeros((s, s))
    pa[: a.shape[0], : a.shape[1]], pb[: b.shape[0], : b.shape[1]] = a, b
    c = np.fft.irfft2(np.fft.rfft2(pa) * np.conj(np.fft.rfft2(pb)), s=(s, s))
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(c.max() / norm) if norm > 0 else 0.0


def parametric_fits(kernel: np.ndarray, *, min_similarity: float = 0.75) -> list[tuple[str, float, np.ndarray, float]]:
    """The defocus disk (pill-box, radius 0.75-10 px in 0.25 px steps) and the isotropic Gaussian
    (sigma 0.4-4 px in 0.1 px steps) nearest a free-form kernel estimate in Hu & Yang's similarity
    (:func:`kernel_similarity`), each as ``(family, parameter, psf, similarity)``, those at least
    ``min_similarity`` alike only. A free-form estimate of defocus or of a Gaussian is a noisy,
    often lopsided blob (the L0 alternation is built for the thin paths of camera shake); the
    nearest member of the family is the same blur without the estimate's specks, and the caller
    keeps it when its restoration explains the input better (the blind method's selection)."""
    reach = kernel_extent(kernel, 0.99) / 2 + 1  # no family member wider than the estimate
    families = (("defocus", np.arange(0.75, 10.01, 0.25), defocus_psf), ("gaussian", np.arange(0.4, 4.01, 0.1), gaussian_psf))
    fits = []
    for name, params, make in families:
        scored = [(kernel_similarity(kernel, make(p)), p) for p in params if p <= reach]
        if scored:
            similarity, p = max(scored)
            if similarity >= min_similarity:
                fits.append((name, float(p), make(float(p)), float(similarity)))
    return fits


def kernel_extent(kernel: np.ndarray, mass: float = 0.99) -> int:
    """The side of the smallest centred square holding ``mass`` of the kernel's sum."""
    c = kernel.shape[0] // 2
    total = kernel.sum()
    for r in range(c + 1):
        if kernel[c - r : c + r + 1, c - r : c + r + 1].sum() >= mass * total:
            return 2 * r + 1
    return kernel.shape[0]


def _size_limits(gray: np.ndarray, start: int = 31) -> tuple[int, int]:
    """:func:`choose_size`'s first box and its largest: ``start`` and the odd side at most half
    the image's shorter side, the first no larger than the second."""
    limit = min(gray.shape) // 2
    limit -= 1 - limit % 2
    return min(start, limit), limit


def choose_size(gray: np.ndarray, clipped: np.ndarray, config: KernelConfig = KernelConfig(), *,
                start: int = 31, grow: float = 1.5, progress=None) -> tuple[np.ndarray, int]:
    """Kernel size chosen from the data: estimate in a ``start``-pixel box (it holds the shake of
    Levin et al.'s measured kernels, 13-27 px); while the estimate reaches the box's edge (the
    square holding 90% of its mass is within 2 pixels of the side: 90%, not all of it, so that a
    few stray specks do not count), estimate again in a box ``grow`` times larger, up to half the
    image's shorter side. An oversized box costs some accuracy; a box too small truncates the kernel."""
    size, limit = _size_limits(gray, start)
    while True:
        kernel = _estimate(gray, clipped, size, config, progress=progress)
        if kernel_extent(kernel, 0.9) < size - 4 or size >= limit:
            return kernel, size
        nxt = int(np.ceil(size * grow))
        size = min(nxt + 1 - nxt % 2, limit)
