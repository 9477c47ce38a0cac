"""What kernel estimation and restoration share: sRGB transfer, luminance, transfer functions of
kernels and derivatives on the DFT grid, and a smooth periodic extension of an image.

Both solve least-squares problems in the Fourier domain, which treats the image as periodic. A
photo is not, so every solver works on the image extended by :func:`periodic_extend`: past the
frame the extension fades from one edge's reflection into the opposite edge's, so the periodic
image has no jump at its seams and the DFT's wrap-around does not ring into the frame (the role the
"wrap boundary" of Liu & Jia 2008 plays in the reference implementations).
"""

from __future__ import annotations

import cv2
import numpy as np


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The inverse sRGB transfer function (IEC 61966-2-1): c/12.92 below 0.04045, else
    ((c + 0.055)/1.055)^2.4; floats in [0, 1] (values outside are clipped first)."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.04045, c / np.float32(12.92), ((c + np.float32(0.055)) / np.float32(1.055)) ** np.float32(2.4))


def linear_to_srgb(l: np.ndarray) -> np.ndarray:
    """The sRGB transfer function: 12.92 l below 0.0031308, else 1.055 l^(1/2.4) - 0.055; floats in
    [0, 1] (values outside are clipped first)."""
    l = np.clip(np.asarray(l, dtype=np.float32), 0.0, 1.0)
    return np.where(l <= 0.0031308, l * np.float32(12.92), np.float32(1.055) * l ** np.float32(1 / 2.4) - np.float32(0.055))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance of linear-light RGB, Y = 0.2126 R + 0.7152 G + 0.0722 B (ITU-R BT.709);
    a gray image is returned as it is."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim == 2:
        return rgb
    return rgb[..., 0] * np.float32(0.2126) + rgb[..., 1] * np.float32(0.7152) + rgb[..., 2] * np.float32(0.0722)


def psf2otf(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The optical transfer function of ``kernel`` on a ``shape`` DFT grid (``rfft2`` layout): the
    kernel zero-padded and rolled so that its centre pixel is at the origin, so that multiplying by
    the OTF is the circular convolution y = k * x without a shift."""
    kh, kw = kernel.shape
    padded = np.zeros(shape, np.float32 if kernel.dtype == np.float32 else np.float64)  # float32 in, float32 maths
    padded[:kh, :kw] = kernel
    return np.fft.rfft2(np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1)))


def dft2(x: np.ndarray) -> np.ndarray:
    """The full complex64 2-D DFT of a real image, by OpenCV (1.5x numpy's pocketfft per transform
    pair at the estimator's sizes on this host's x86 and on NEON alike: both are SIMD there)."""
    return cv2.dft(np.ascontiguousarray(x, np.float32), flags=cv2.DFT_COMPLEX_OUTPUT).view(np.complex64)[..., 0]


def idft2_real(f: np.ndarray) -> np.ndarray:
    """The real part of the inverse of :func:`dft2` (float32), for a spectrum of a real image."""
    return cv2.idft(np.ascontiguousarray(f, np.complex64)[..., None].view(np.float32), flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)


def psf2otf_full(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """:func:`psf2otf` on the full DFT grid (:func:`dft2` layout), complex64."""
    kh, kw = kernel.shape
    padded = np.zeros(shape, np.float32)
    padded[:kh, :kw] = kernel
    return dft2(np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1)))


def gradient_energy(shape: tuple[int, int]) -> np.ndarray:
    """|Dx|^2 + |Dy|^2 on a ``shape`` grid in :func:`dft2` layout (float32), for the forward
    differences d_x x = x[i, j+1] - x[i, j] and d_y x = x[i+1, j] - x[i, j] (circular):
    |e^(2 pi i f) - 1|^2 = 4 sin^2(pi f) per axis."""
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(shape[1]).astype(np.float32)[None, :]
    return (4 * np.sin(np.pi * fx) ** 2 + 4 * np.sin(np.pi * fy) ** 2).astype(np.float32)


def gradients(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Circular forward differences (d_x x, d_y x), matching :func:`gradient_energy`."""
    return np.roll(x, -1, axis=1) - x, np.roll(x, -1, axis=0) - x


def _extend_axis(x: np.ndarray, before: int, after: int, axis: int) -> np.ndarray:
    """``x`` grown by ``before + after`` samples along ``axis`` so that it is smooth when read
    periodically: the gap between its last and (wrapped) first sample is the last edge's
    reflection cross-faded, with a raised-cosine weight, into the first edge's reflection."""
    n = before + after
    if n == 0:
        return x
    size = x.shape[axis]
    t = np.arange(n)
    from_end = np.take(x, np.clip(size - 1 - t, 0, size - 1), axis=axis)
    from_start = np.take(x, np.clip(n - 1 - t, 0, size - 1), axis=axis)
    w = (0.5 - 0.5 * np.cos(np.pi * (t + 0.5) / n)).astype(x.dtype)
    w = w.reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    gap = (1 - w) * from_end + w * from_start
    return np.concatenate([np.take(gap, np.arange(after, n), axis=axis), x, np.take(gap, np.arange(after), axis=axis)], axis=axis)


def periodic_extend(x: np.ndarray, pad: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """``x`` (H x W or H x W x C) extended to a fast DFT size of at least (H + 2 pad, W + 2 pad),
    smooth across its periodic seams; returns the extended image and the slices that cut ``x`` back
    out of it."""
    h, w = x.shape[:2]
    fh, fw = cv2.getOptimalDFTSize(h + 2 * pad), cv2.getOptimalDFTSize(w + 2 * pad)
    top, left = (fh - h) // 2, (fw - w) // 2
    out = _extend_axis(_extend_axis(x, top, fh - h - top, 0), left, fw - w - left, 1)
    return out, (slice(top, top + h), slice(left, left + w))


def convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """y = k * x (convolution, kernel centre at the origin) with reflected borders, per channel."""
    flipped = np.ascontiguousarray(np.asarray(kernel, np.float32)[::-1, ::-1])
    return cv2.filter2D(np.asarray(x, np.float32), -1, flipped, borderType=cv2.BORDER_REFLECT)
