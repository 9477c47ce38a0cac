"""Non-blind restoration given a kernel: half-quadratic splitting with a learned denoiser as the
prior (plug-and-play, as in DPIR: Zhang, Li, Zuo, Zhang, Van Gool & Timofte, TPAMI 2021).

    min_x  1/(2 s^2) ||k * x - y||^2 + lambda Phi(x)

is split with z ~ x and solved by alternating, for sigma_i falling log-evenly from 49/255 to the
noise level s over K iterations:

    x_i = argmin_x ||k * x - y||^2 + rho_i ||x - z_{i-1}||^2
        = F^-1[(conj(K) Y + rho_i Z) / (|K|^2 + rho_i)],       rho_i = lambda s^2 / sigma_i^2
    z_i = D(x_i, sigma_i)                                        (the denoiser at noise level sigma_i)

The data step runs in linear light, where the blur happened; the denoiser sees sRGB values, as it
was trained. Boundaries: the image is extended periodically past its frame, and from the second
iteration on the extension is replaced by the current estimate re-blurred (y outside the frame is
unknown; k * z is its best guess), so the FFT's periodic model holds everywhere and the frame's
edges do not ring (masked data term by substitution, as in EM treatments of missing data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .signal import convolve, linear_to_srgb, periodic_extend, psf2otf, srgb_to_linear

DenoiseFn = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class RestoreConfig:
    """Parameters of :func:`restore`, with DPIR's names and defaults."""

    iterations: int = 8  # K
    lam: float = 0.23  # lambda, the prior's weight
    sigma_start: float = 49 / 255  # sigma_1, the first denoising level
    noise_floor: float = 0.255 / 255  # s never goes below this (8-bit quantisation and a stable rho)
    linear_light: bool = True  # data step on linear-light values (sRGB input is decoded first)


def hqs_schedule(noise_sigma: float, config: RestoreConfig = RestoreConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(sigma_i, rho_i) for i = 1..K: sigma_i log-spaced from ``sigma_start`` to the noise level,
    rho_i = lambda s^2 / sigma_i^2 (DPIR's ``get_rho_sigma`` with w = 1)."""
    s = max(float(noise_sigma), config.noise_floor)
    sigmas = np.logspace(np.log10(config.sigma_start), np.log10(max(s, 1e-6)), config.iterations)
    return sigmas, config.lam * s**2 / sigmas**2


def restore_float(y: np.ndarray, kernel: np.ndarray, denoiser: DenoiseFn, noise_sigma: float,
                  config: RestoreConfig = RestoreConfig()) -> np.ndarray:
    """HQS restoration of a float32 sRGB image ``y`` (H x W or H x W x 3, in [0, 1]) blurred by
    ``kernel``, with ``denoiser(x_srgb, sigma)`` as the prior and ``noise_sigma`` the noise standard
    deviation of ``y`` (sRGB units). Returns float32 sRGB of ``y``'s shape, not clipped."""
    kernel = np.asarray(kernel, np.float64)
    lin = srgb_to_linear(y) if config.linear_light else np.asarray(y, np.float32)
    ext, inner = periodic_extend(lin, kernel.shape[0])
    shape = ext.shape[:2]
    otf = psf2otf(kernel.astype(np.float32), shape)  # complex64: the data step in float32, twice as fast as float64
    if ext.ndim == 3:
        otf = otf[..., None]
    axes = (0, 1)
    k2 = np.abs(otf) ** 2
    to_display = linear_to_srgb if config.linear_light else (lambda v: v)
    to_model = srgb_to_linear if config.linear_light else (lambda v: v)
    frame = np.zeros(shape, bool)
    frame[inner] = True
    if ext.ndim == 3:
        frame = frame[..., None]
    observed = ext
    z = ext
    sigmas, rhos = hqs_schedule(noise_sigma, config)
    for i, (sigma, rho) in enumerate(zip(sigmas, rhos)):
        rho = np.float32(rho)  # a float64 scalar would lift the whole data step to complex128
        fz = np.fft.rfft2(z, axes=axes)
        if i > 0:
            # Outside the frame y is unknown: fill it with the current estimate blurred, k * z, so
            # that the periodic model holds there and nothing rings in from the extension.
            observed = np.where(frame, ext, np.fft.irfft2(otf * fz, s=shape, axes=axes))
        fy = np.fft.rfft2(observed, axes=axes)
        x = np.fft.irfft2((np.conj(otf) * fy + rho * fz) / (k2 + rho), s=shape, axes=axes)
        z = to_model(denoiser(to_display(x.astype(np.float32)), float(sigma)))
    return to_display(z[inner]) if config.linear_light else z[inner].astype(np.float32)


def reblur_residual(blurred: np.ndarray, restored: np.ndarray, kernel: np.ndarray, *, linear_light: bool = True,
                    border: int | None = None, lowpass: float = 0.0) -> float:
    """RMS of y - srgb(k * x) over the frame less a border of the kernel's size: how much of the
    input the restoration does not explain. With the right kernel it is close to the noise; a wrong
    kernel leaves edges in it. Images are float sRGB in [0, 1]. ``lowpass`` > 0: the RMS of that
    difference after a Gaussian of this sigma (pixels), which keeps 1 / (2 sqrt(pi) sigma) of white
    noise's RMS (0.14 at sigma 2) and most of the smooth, edge-shaped residual a wrong kernel leaves."""
    k = np.asarray(kernel, np.float32)
    if linear_light:
        reblurred = linear_to_srgb(convolve(srgb_to_linear(restored), k))
    else:
        reblurred = convolve(restored, k)
    b = k.shape[0] if border is None else border
    diff = np.asarray(blurred, np.float32) - reblurred
    diff = diff[b:-b or None, b:-b or None]
    if lowpass > 0:
        diff = cv2.GaussianBlur(np.ascontiguousarray(diff), (0, 0), lowpass)
    return float(np.sqrt(np.mean(diff * diff)))


def restore(image: np.ndarray, kernel: np.ndarray, *, noise_sigma: float | None = None, denoiser=None,
            config: RestoreConfig = RestoreConfig()) -> np.ndarray:
    """Restore ``image`` (gray/RGB/RGBA; uint8, uint16 or float in [0, 1]) blurred by ``kernel``:
    :func:`restore_float` with ``denoiser`` (default: the bundled learned denoiser) as the prior and
    ``noise_sigma`` (default: estimated from the image, ``edge_deblur.denoise.estimate_noise_sigma``).
    Returns the input's dtype and layout."""
    from ..classical import _validated_psf
    from ..denoise import Denoiser, estimate_noise_sigma
    from .method import split_image

    try:
        kernel = _validated_psf(kernel, "kernel")
    except ValueError as e:
        raise ValueError(str(e)) from None
    x, back = split_image(image)
    if denoiser is None:
        denoiser = Denoiser.load()
    sigma = estimate_noise_sigma(x) if noise_sigma is None else float(noise_sigma)
    return back(restore_float(x, kernel, denoiser, sigma, config))
