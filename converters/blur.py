"""Synthetic blur on sharp photos: random kernels, blur in linear light, sensor noise, JPEG.

The forward model is ``y = JPEG(srgb(clip(k * x + n)))`` with ``x`` the sharp photo in linear light,
``k`` a blur kernel, ``n`` Poisson-Gaussian sensor noise and ``srgb`` the sRGB transfer function.
Everything is seeded by a ``numpy.random.Generator``: the same generator state gives the same pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_deblur.classical import defocus_psf, gaussian_psf, motion_psf

# "identity" last: with p_identity = 0 the kernel draws (one uniform each) are those of the mix
# without it, so the teacher's training stream and the validation pairs are unchanged.
KERNEL_TYPES = ("trajectory", "motion", "defocus", "gaussian", "identity")


def srgb_to_linear(image: np.ndarray) -> np.ndarray:
    """The inverse sRGB transfer function (IEC 61966-2-1): c/12.92 below 0.04045, else
    ((c + 0.055)/1.055)^2.4. Input and output are floats in [0, 1]."""
    c = np.asarray(image)
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4).astype(c.dtype)


def linear_to_srgb(image: np.ndarray) -> np.ndarray:
    """The sRGB transfer function: 12.92 l below 0.0031308, else 1.055 l^(1/2.4) - 0.055."""
    lin = np.asarray(image)
    srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.maximum(lin, 0.0031308) ** (1 / 2.4) - 0.055)
    return srgb.astype(lin.dtype)


# 8-bit sRGB decodes through a table: it is the hot path of on-the-fly synthesis.
_SRGB8_TO_LINEAR = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)


def trajectory_kernel(
    rng: np.random.Generator,
    size: int = 31,
    length: float | None = None,
    steps: int = 256,
) -> np.ndarray:
    """A camera-shake kernel from a random trajectory (Boracchi & Foi, TIP 2012, as in DeblurGAN).

    The camera position is a 2-D random walk with inertia: each step keeps its speed, turns by
    Gaussian jitter, is pulled back to the origin (centripetal term) and, with a small probability,
    jumps back on itself (an impulsive shake). A random fraction of the trajectory (the exposure) is
    rasterised with bilinear sub-pixel weights, centred on its centroid so the blur does not shift the
    image, and normalised to sum 1. ``length`` is the path length in pixels (default: random in
    [size/3, 2 size): measured shake paths are long and curl up, like Levin's 50-70 pixel paths in
    20-pixel kernels); the path is shrunk if it would not fit in ``size`` x ``size``.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"trajectory kernel size must be odd and >= 3, got {size}")
    length = rng.uniform(size / 3, 2 * size) if length is None else float(length)
    centripetal = 0.7 * rng.uniform()
    p_big_shake = 0.2 * rng.uniform()
    gaussian_shake = 10.0 * rng.uniform()
    # DeblurGAN's constants are for 2000 steps; with fewer, the per-step drift scales by 2000/steps
    # and the random jitter (a random walk) by its square root, so the whole path keeps its shape.
    scale = 2000 / steps
    expl = 0.005
    step_len = length / (steps - 1)
    v = np.exp(1j * rng.uniform(0, 2 * np.pi)) * step_len
    jitter = gaussian_shake * np.sqrt(scale) * (rng.standard_normal((steps, 2)) @ np.array([1, 1j]))
    shakes = rng.uniform(size=steps) < p_big_shake * expl * scale
    turns = np.exp(1j * (np.pi + rng.uniform(-0.5, 0.5, steps)))
    x = np.zeros(steps, complex)
    for t in range(steps - 1):
        dv = expl * (jitter[t] - centripetal * scale * x[t]) * step_len
        if shakes[t]:
            dv += 2 * v * turns[t]
        v = v + dv
        v = v / abs(v) * step_len
        x[t + 1] = x[t] + v
    exposure = rng.uniform(0.5, 1.0)
    x = x[: max(int(exposure * steps), 2)]
    x = x - x.mean()
    half = (size - 1) / 2
    extent = max(np.abs(x.real).max(), np.abs(x.imag).max())
    if extent > half - 1:
        x = x * (half - 1) / extent
    return _splat(x.real + half, x.imag + half, size)


def center_kernel(kernel: np.ndarray) -> np.ndarray:
    """Translate a kernel by whole pixels so that its centroid lies within half a pixel of its centre,
    padding it so no mass is lost. A blurred photo carries no trace of a global translation, so a blind
    method cannot undo one; measured kernels (Levin's are off by up to 4 pixels) are centred first."""
    yy, xx = np.indices(kernel.shape)
    dy = int(np.round((kernel * yy).sum() / kernel.sum() - (kernel.shape[0] - 1) / 2))
    dx = int(np.round((kernel * xx).sum() / kernel.sum() - (kernel.shape[1] - 1) / 2))
    pad = max(abs(dy), abs(dx))
    return np.roll(np.pad(kernel, pad), (-dy, -dx), axis=(0, 1))


def _splat(xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    """Bilinear rasterisation of equally weighted points onto a size x size grid, normalised to 1."""
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    kernel = np.zeros((size, size))
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    return kernel / kernel.sum()


@dataclass(frozen=True)
class BlurConfig:
    """How training pairs are synthesised. Probabilities of the kernel types must sum to 1.

    Noise is Poisson-Gaussian in linear light: variance ``shot * l + read**2``. A shot gain of 5e-4
    is close to a uniform sRGB noise of sigma 0.01, so the default range covers that case. With
    probability ``p_srgb_noise`` the noise is instead Gaussian on the sRGB values, sigma drawn in
    ``srgb_noise`` (the evaluation forward model's noise, ``converters.data.blur_photo``).

    ``p_identity`` draws no blur at all (a 1x1 kernel): a sharp frame with noise, whose target is
    the frame itself. The default mix (the teacher's) has none; ``by_class_mix`` is the students'.
    """

    crop: int = 128
    p_trajectory: float = 0.8
    p_motion: float = 0.1
    p_defocus: float = 0.05
    p_gaussian: float = 0.05
    kernel_sizes: tuple[int, int] = (9, 35)  # odd sizes drawn in this closed range
    motion_length: tuple[float, float] = (3.0, 31.0)
    defocus_radius: tuple[float, float] = (1.0, 6.0)
    gaussian_sigma: tuple[float, float] = (0.5, 3.0)
    shot_noise: tuple[float, float] = (0.0, 1.2e-3)
    read_noise: tuple[float, float] = (0.0, 3e-3)
    exposure_stops: tuple[float, float] = (-0.5, 0.5)
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)
    p_identity: float = 0.0
    p_srgb_noise: float = 0.0
    srgb_noise: tuple[float, float] = (0.5 / 255, 4.0 / 255)
    # Round the blurred crop to 8-bit steps, as every frame the runtime sees is: near-clean inputs
    # then carry their quantization noise in training too.
    quantize_8bit: bool = False

    def __post_init__(self):
        probabilities = self.kernel_probabilities
        if min(probabilities) < 0 or not np.isclose(sum(probabilities), 1.0):
            raise ValueError(f"kernel type probabilities must be >= 0 and sum to 1, got {probabilities}")
        if not 0.0 <= self.p_srgb_noise <= 1.0 or not 0.0 <= self.p_jpeg <= 1.0:
            raise ValueError(f"p_srgb_noise and p_jpeg must lie in [0, 1], got {self.p_srgb_noise}, {self.p_jpeg}")
        if not 0.0 <= self.srgb_noise[0] <= self.srgb_noise[1]:
            raise ValueError(f"srgb_noise must be a range 0 <= low <= high, got {self.srgb_noise}")
        if self.crop < 8:
            raise ValueError(f"crop must be at least 8 pixels, got {self.crop}")

    @property
    def kernel_probabilities(self) -> tuple[float, ...]:
        """The probabilities of ``KERNEL_TYPES``, in that order."""
        return (self.p_trajectory, self.p_motion, self.p_defocus, self.p_gaussian, self.p_identity)

    @classmethod
    def by_class_mix(cls, crop: int = 128) -> BlurConfig:
        """The students' training mix (issue 14): the blur classes of ``converters.blur_classes`` in
        the proportions they are validated in (six classes, one sixth each: three of shake, one each
        of defocus, mild Gaussian and no blur), with their kernel families' ranges widened a little
        at both ends, and half of the pairs noised as the validation frames are (Gaussian on sRGB,
        sigma 0.5-4 levels, around its 1 and 3 levels), half with the sensor's Poisson-Gaussian noise
        at the teacher mix's levels. JPEG on one pair in ten: the validation frames have none, and
        a JPEG'd sharp frame's target is the uncompressed photo, which a small student should not
        spend its capacity on. Chosen from the class definitions, not from held-out scores."""
        return cls(crop=crop, p_trajectory=0.47, p_motion=0.03, p_defocus=1 / 6, p_gaussian=1 / 6,
                   p_identity=1 / 6, kernel_sizes=(9, 33), motion_length=(3.0, 21.0), defocus_radius=(1.0, 4.5),
                   gaussian_sigma=(0.5, 2.0), p_jpeg=0.1, p_srgb_noise=0.5, quantize_8bit=True)


def random_kernel(rng: np.random.Generator, config: BlurConfig = BlurConfig()) -> np.ndarray:
    """One training kernel: a trajectory, linear-motion, defocus or Gaussian PSF drawn with the
    configured probabilities and sizes. Measured kernels (Levin et al.) are never drawn here."""
    kind = rng.choice(KERNEL_TYPES, p=list(config.kernel_probabilities))
    if kind == "identity":
        return np.ones((1, 1))
    lo, hi = config.kernel_sizes
    if kind == "trajectory":
        return trajectory_kernel(rng, size=int(rng.integers(lo // 2, hi // 2 + 1)) * 2 + 1)
    if kind == "motion":
        return motion_psf(rng.uniform(*config.motion_length), rng.uniform(0, 180))
    if kind == "defocus":
        return defocus_psf(rng.uniform(*config.defocus_radius))
    return gaussian_psf(rng.uniform(*config.gaussian_sigma))


def blur_linear(linear: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolution ``k * x`` of a linear-light image with reflected borders (cv2.filter2D correlates,
    so the kernel is flipped)."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    return cv2.filter2D(linear, -1, flipped, borderType=cv2.BORDER_REFLECT)


def add_sensor_noise(linear: np.ndarray, rng: np.random.Generator, shot: float, read: float) -> np.ndarray:
    """Poisson-Gaussian noise in linear light, in its heteroscedastic Gaussian form:
    ``l + sqrt(shot * l + read^2) * N(0, 1)`` (exact to first order above a few photons)."""
    sigma = np.sqrt(shot * np.maximum(linear, 0) + read**2, dtype=np.float32)
    return linear + sigma * rng.standard_normal(linear.shape, dtype=np.float32)


def jpeg_roundtrip(srgb: np.ndarray, quality: int) -> np.ndarray:
    """Re-compress a float RGB image in [0, 1] as 8-bit JPEG at ``quality`` (1-100) and decode it."""
    bgr = np.round(np.clip(srgb[..., ::-1], 0, 1) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed to write a JPEG")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def random_view(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random ``size`` x ``size`` crop, randomly flipped and rotated by a multiple of 90 degrees."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"photo of {w}x{h} pixels is smaller than the {size}x{size} crop")
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    view = image[y : y + size, x : x + size]
    if rng.uniform() < 0.5:
        view = view[:, ::-1]
    return np.rot90(view, int(rng.integers(4)))


def synthesize_pair(
    sharp: np.ndarray, rng: np.random.Generator, config: BlurConfig = BlurConfig()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training pair from an RGB uint8 photo: ``(blurred, sharp_crop, kernel)``, both images
    float32 ``crop`` x ``crop`` x 3 sRGB in [0, 1].

    A crop with a margin of half the kernel is taken so the blurred centre sees real pixels, its
    exposure is scaled by 2^stops in linear light (clipped like a sensor), then it is blurred in
    linear light, noised, encoded to sRGB and, with probability ``p_jpeg``, JPEG re-compressed.
    """
    if sharp.dtype != np.uint8 or sharp.ndim != 3 or sharp.shape[2] != 3:
        raise ValueError(f"sharp photo must be RGB uint8 HxWx3, got {sharp.dtype} {sharp.shape}")
    kernel = random_kernel(rng, config)
    pad = kernel.shape[0] // 2
    view = random_view(sharp, rng, config.crop + 2 * pad)
    linear = _SRGB8_TO_LINEAR[view]
    linear = np.minimum(linear * np.float32(2.0 ** rng.uniform(*config.exposure_stops)), 1.0)
    inner = np.s_[pad : pad + config.crop, pad : pad + config.crop]
    blurred = blur_linear(linear, kernel)[inner]
    # The extra draw only when the option is on: the default mix's stream stays as it was.
    srgb_noise = config.p_srgb_noise > 0 and rng.uniform() < config.p_srgb_noise
    if srgb_noise:
        blurred = linear_to_srgb(np.clip(blurred, 0, 1))
        blurred = blurred + np.float32(rng.uniform(*config.srgb_noise)) * rng.standard_normal(blurred.shape, dtype=np.float32)
        blurred = np.clip(blurred, 0, 1)
    else:
        blurred = add_sensor_noise(blurred, rng, rng.uniform(*config.shot_noise), rng.uniform(*config.read_noise))
        blurred = linear_to_srgb(np.clip(blurred, 0, 1))
    if rng.uniform() < config.p_jpeg:
        blurred = jpeg_roundtrip(blurred, int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
    elif config.quantize_8bit:
        blurred = np.round(blurred * 255) / np.float32(255)
    return blurred, linear_to_srgb(linear[inner]), kernel
