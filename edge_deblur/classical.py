"""Classical deblurring: point-spread functions, Wiener and Richardson-Lucy deconvolution, CLAHE.

All PSFs are float64 arrays of odd size that sum to 1, applied as a convolution y = psf * x with the
PSF centre at the origin. Images follow the SDK conventions: gray, RGB or RGBA; uint8, uint16 or float
in [0, 1]; every function returns the dtype and shape it was given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


def _odd(n: float) -> int:
    n = int(np.ceil(n))
    return n + 1 - n % 2


def motion_psf(length: float, angle: float = 0.0, size: int | None = None) -> np.ndarray:
    """Linear motion blur: a line segment of ``length`` pixels at ``angle`` degrees (counter-clockwise
    from the x axis), rasterised with sub-pixel supersampling so that any length or angle is exact
    to first order."""
    if length <= 0:
        raise ValueError(f"motion length must be positive, got {length}")
    size = size or _odd(length + 2)
    sup = 8
    big = np.zeros((size * sup, size * sup))
    c = (size * sup - 1) / 2.0
    t = np.linspace(-0.5, 0.5, max(int(length * sup * 4), 2))
    theta = np.deg2rad(angle)
    xs = np.round(c + t * length * sup * np.cos(theta)).astype(int)
    ys = np.round(c - t * length * sup * np.sin(theta)).astype(int)
    ok = (xs >= 0) & (xs < big.shape[1]) & (ys >= 0) & (ys < big.shape[0])
    np.add.at(big, (ys[ok], xs[ok]), 1.0)
    psf = big.reshape(size, sup, size, sup).sum(axis=(1, 3))
    return psf / psf.sum()


def defocus_psf(radius: float, size: int | None = None) -> np.ndarray:
    """Out-of-focus blur: a uniform disk of ``radius`` pixels (the pill-box model of a thin lens),
    with anti-aliased edges from 8x supersampling."""
    if radius <= 0:
        raise ValueError(f"defocus radius must be positive, got {radius}")
    size = size or _odd(2 * radius + 2)
    sup = 8
    coords = (np.arange(size * sup) + 0.5) / sup - size / 2.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    psf = disk.reshape(size, sup, size, sup).sum(axis=(1, 3))
    return psf / psf.sum()


def gaussian_psf(sigma: float, size: int | None = None) -> np.ndarray:
    """Isotropic Gaussian blur, exp(-r^2 / 2 sigma^2), truncated at 3 sigma."""
    if sigma <= 0:
        raise ValueError(f"gaussian sigma must be positive, got {sigma}")
    size = size or _odd(6 * sigma + 1)
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(r**2) / (2.0 * sigma**2))
    psf = np.outer(g, g)
    return psf / psf.sum()


# --- PSFs from files and command-line strings ------------------------------------------------------

_PSF_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".pgm", ".pnm", ".jpg", ".jpeg")
# kind -> (model, fewest parameters, most parameters)
_PSF_MODELS = {
    "motion": (motion_psf, 1, 2),
    "defocus": (defocus_psf, 1, 1),
    "gaussian": (gaussian_psf, 1, 1),
}
_PSF_SYNTAX = (
    "motion:LENGTH[,ANGLE], defocus:RADIUS, gaussian:SIGMA, or a PSF file "
    f"({', '.join(('.npy',) + _PSF_IMAGE_SUFFIXES)})"
)


@dataclass(frozen=True)
class PSFSpec:
    """A point-spread function as named on the command line: a parametric model or a file.

    ``kind`` is ``"motion"`` (params: length, angle in degrees), ``"defocus"`` (radius),
    ``"gaussian"`` (sigma) or ``"file"`` (``path``, no params).
    """

    kind: str
    params: tuple[float, ...] = ()
    path: str | None = None


def _validated_psf(psf: np.ndarray, source: str) -> np.ndarray:
    """``psf`` as float64 normalised to sum 1, zero-padded at the bottom/right to odd size so that
    its centre is a pixel; ``ValueError`` naming ``source`` if it cannot be a PSF."""
    k = np.asarray(psf, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"{source}: a PSF must be a 2-D array, got shape {k.shape}")
    if k.size == 0:
        raise ValueError(f"{source}: the PSF is empty")
    if not np.isfinite(k).all():
        raise ValueError(f"{source}: the PSF has NaN or infinite values")
    if (k < 0).any():
        raise ValueError(f"{source}: the PSF has negative values (min {k.min():g})")
    total = k.sum()
    if total <= 0:
        raise ValueError(f"{source}: the PSF is all zero")
    k = np.pad(k, ((0, 1 - k.shape[0] % 2), (0, 1 - k.shape[1] % 2)))
    return k / total


def load_psf(path: str | os.PathLike) -> np.ndarray:
    """A PSF from a ``.npy`` array or a grayscale image file of any bit depth (colour is converted to
    gray), normalised to sum 1 and zero-padded to odd size."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such PSF file")
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({exc})") from exc
    else:
        # ANYDEPTH without ANYCOLOR: gray, and 16-bit or float images keep their depth.
        raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
        if raw is None:
            raise ValueError(f"{path}: not a readable image")
    return _validated_psf(raw, str(path))


def parse_psf(text: str) -> PSFSpec:
    """Parse a command-line PSF: ``motion:15,30`` (length, angle), ``defocus:4``, ``gaussian:2.5``,
    or the path of a PSF file (recognised by its suffix)."""
    text = text.strip()
    if Path(text).suffix.lower() in (".npy",) + _PSF_IMAGE_SUFFIXES:
        return PSFSpec("file", path=text)
    kind, sep, args = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in _PSF_MODELS:
        raise ValueError(f"PSF {text!r}: expected {_PSF_SYNTAX}")
    _, fewest, most = _PSF_MODELS[kind]
    try:
        params = tuple(float(a) for a in args.split(","))
    except ValueError:
        raise ValueError(f"PSF {text!r}: parameters must be numbers") from None
    if not fewest <= len(params) <= most:
        raise ValueError(f"PSF {text!r}: {kind} takes {fewest} to {most} numbers, got {len(params)}")
    if not all(np.isfinite(params)):
        raise ValueError(f"PSF {text!r}: parameters must be finite")
    if params[0] <= 0:
        raise ValueError(f"PSF {text!r}: the {kind} size must be positive")
    return PSFSpec(kind, params)


def psf_from_spec(spec: PSFSpec) -> np.ndarray:
    """The PSF array a :class:`PSFSpec` describes."""
    if spec.kind == "file":
        return load_psf(spec.path)
    if spec.kind not in _PSF_MODELS:
        raise ValueError(f"unknown PSF kind {spec.kind!r}; expected {_PSF_SYNTAX}")
    model = _PSF_MODELS[spec.kind][0]
    return model(*spec.params)


# --- Per-plane application ------------------------------------------------------------------------

_INT_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _map_planes(image: np.ndarray, plane_fn, *, luminance: bool = False) -> np.ndarray:
    """Apply ``plane_fn`` (float32 HxW in [0, 1] -> HxW) to each colour channel of a gray, RGB or RGBA
    image, or with ``luminance`` to the L of CIE Lab only, and return the input dtype and shape.

    Integers are scaled by their full range and the result is rounded and clipped back; alpha is
    passed through untouched.
    """
    img = np.asarray(image)
    if img.dtype not in _INT_SCALE and img.dtype.kind != "f":
        raise ValueError(f"unsupported image dtype {img.dtype}; expected uint8, uint16 or float")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {img.shape}")
    scale = _INT_SCALE.get(img.dtype, 1.0)
    color = img if img.ndim == 2 else img[..., :3]
    # Deconvolution assumes non-negative intensities; clipping also bounds float inputs to the SDK range.
    x = np.clip(color.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    if x.ndim == 2:
        y = plane_fn(x)
    elif luminance:
        lab = cv2.cvtColor(x, cv2.COLOR_RGB2Lab)  # float32 L in [0, 100]
        lab[..., 0] = plane_fn(lab[..., 0] / 100.0) * 100.0
        y = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    else:
        y = np.stack([plane_fn(np.ascontiguousarray(x[..., c])) for c in range(3)], axis=-1)
    y = np.clip(y, 0.0, 1.0)
    out = (np.rint(y * scale) if scale != 1.0 else y).astype(img.dtype)
    return np.concatenate([out, img[..., 3:]], axis=-1) if img.ndim == 3 and img.shape[2] == 4 else out


def _reflect_pad(plane: np.ndarray, widths: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = widths
    return cv2.copyMakeBorder(plane, top, bottom, left, right, cv2.BORDER_REFLECT)


def _crop(padded: np.ndarray, widths: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = widths
    return padded[top : padded.shape[0] - bottom, left : padded.shape[1] - right]


# --- Deconvolution --------------------------------------------------------------------------------


def wiener(image: np.ndarray, psf: np.ndarray, *, balance: float = 0.01) -> np.ndarray:
    """Wiener-Hunt deconvolution, X = conj(H) Y / (|H|^2 + balance), per colour channel.

    ``balance`` is the noise-to-signal power ratio (larger: smoother, less ringing). The blur model is
    y = psf * x (convolution, PSF centre at the origin, so the result is not shifted). Each plane is
    reflect-padded by the PSF size, and further to a fast FFT size, so that the periodic boundary of
    the DFT falls outside the image and its borders do not ring.
    """
    if not balance > 0:
        raise ValueError(f"balance must be positive, got {balance}")
    kernel = _validated_psf(psf, "PSF")
    h, w = np.asarray(image).shape[:2]
    ph, pw = kernel.shape
    fh, fw = cv2.getOptimalDFTSize(h + 2 * ph), cv2.getOptimalDFTSize(w + 2 * pw)
    widths = (ph, fh - h - ph, pw, fw - w - pw)
    # Optical transfer function: the PSF zero-padded to the FFT size and rolled so its centre is (0, 0).
    origin = np.zeros((fh, fw), np.float32)
    origin[:ph, :pw] = kernel
    otf = np.fft.rfft2(np.roll(origin, (-(ph // 2), -(pw // 2)), axis=(0, 1)))
    restore = np.conj(otf) / (np.abs(otf) ** 2 + np.float32(balance))

    def deconvolve_plane(plane: np.ndarray) -> np.ndarray:
        spectrum = np.fft.rfft2(_reflect_pad(plane, widths)) * restore
        return _crop(np.fft.irfft2(spectrum, s=(fh, fw)), widths)

    return _map_planes(image, deconvolve_plane)


def richardson_lucy(
    image: np.ndarray, psf: np.ndarray, *, iterations: int = 30, eps: float = 1e-7
) -> np.ndarray:
    """Richardson-Lucy deconvolution, x <- x * H^T (y / H x), per colour channel, starting from x = y.

    H is convolution with the PSF and H^T correlation with it (cv2.filter2D with the flipped and the
    plain PSF); ``eps`` floors H x against division by zero. The maximum-likelihood estimate under
    Poisson noise: more iterations sharpen more and amplify noise more. Each plane is reflect-padded
    by the PSF size so that borders do not ring.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    kernel = _validated_psf(psf, "PSF").astype(np.float32)
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])
    ph, pw = kernel.shape
    widths = (ph, ph, pw, pw)

    def deconvolve_plane(plane: np.ndarray) -> np.ndarray:
        observed = _reflect_pad(plane, widths)
        estimate = observed.copy()
        for _ in range(iterations):
            predicted = cv2.filter2D(estimate, -1, flipped, borderType=cv2.BORDER_REFLECT)
            ratio = observed / np.maximum(predicted, np.float32(eps))
            estimate *= cv2.filter2D(ratio, -1, kernel, borderType=cv2.BORDER_REFLECT)
        return _crop(estimate, widths)

    return _map_planes(image, deconvolve_plane)


_METHODS = {"wiener": wiener, "rl": richardson_lucy}


def deconvolve(
    image: np.ndarray, psf: np.ndarray | PSFSpec | str, method: str = "wiener", **kw
) -> np.ndarray:
    """Deconvolve with ``method`` ("wiener" or "rl"); ``psf`` is an array, a :class:`PSFSpec` or a
    string for :func:`parse_psf`; ``kw`` goes to the method (``balance`` or ``iterations``/``eps``)."""
    if method not in _METHODS:
        raise ValueError(f"unknown deconvolution method {method!r}; expected one of {sorted(_METHODS)}")
    if isinstance(psf, str):
        psf = parse_psf(psf)
    if isinstance(psf, PSFSpec):
        psf = psf_from_spec(psf)
    return _METHODS[method](image, psf, **kw)


# --- Contrast -------------------------------------------------------------------------------------


def clahe(image: np.ndarray, *, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (Zuiderveld 1994, cv2.createCLAHE) on a
    ``tile_grid`` x ``tile_grid`` grid; for colour images on the Lab lightness only, so hues keep.

    uint16 images are equalised with 16-bit histograms, everything else with 8-bit ones. OpenCV sets
    the per-bin clip to clip_limit x tile area / bins (at least one count), so at 16 bits the result
    depends on how many levels the image uses: a detector image with thousands is equalised almost
    without limit, an 8-bit image scaled to 16 bits barely changes. Float images therefore go through
    8 bits, where clip_limit means what it means everywhere else (their lightness keeps 256 levels).
    """
    levels = np.uint16 if np.asarray(image).dtype == np.uint16 else np.uint8
    top = float(np.iinfo(levels).max)
    equalizer = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))

    def equalize(plane: np.ndarray) -> np.ndarray:
        quantized = np.rint(plane * top).astype(levels)
        return equalizer.apply(quantized).astype(np.float32) / np.float32(top)

    return _map_planes(image, equalize, luminance=True)
