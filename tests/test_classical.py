"""Classical deblurring on real photos: PSF geometry, Wiener and Richardson-Lucy gains, no shift, no
border ringing, dtype/shape/alpha handling, CLAHE, and the PSF parsers and loader.

Blur is synthesised as the model the deconvolvers assume, a true convolution with reflect borders
(scipy.ndimage.convolve, an independent reference), then rounded to 8 bits like a real camera frame.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from edge_deblur.classical import (
    PSFSpec,
    clahe,
    deconvolve,
    defocus_psf,
    gaussian_psf,
    load_psf,
    motion_psf,
    parse_psf,
    psf_from_spec,
    richardson_lucy,
    wiener,
)
from edge_deblur.metrics import psnr


def _blur(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Convolve each channel with ``psf`` (reflect borders) and round back to the input dtype."""
    x = image.astype(np.float64)
    planes = [x] if x.ndim == 2 else [x[..., c] for c in range(x.shape[2])]
    out = np.stack([ndimage.convolve(p, psf, mode="reflect") for p in planes], axis=-1)
    out = out.reshape(image.shape)
    return np.rint(out).astype(image.dtype) if image.dtype.kind == "u" else out.astype(image.dtype)


def _local_contrast(gray: np.ndarray) -> float:
    """Mean standard deviation over 15x15 neighbourhoods, on a [0, 1] scale."""
    x = gray.astype(np.float64) / (np.iinfo(gray.dtype).max if gray.dtype.kind == "u" else 1.0)
    mean = cv2.blur(x, (15, 15))
    return float(np.sqrt(np.maximum(cv2.blur(x * x, (15, 15)) - mean * mean, 0)).mean())


@pytest.fixture(scope="module")
def gray(photo) -> np.ndarray:
    return cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)


# --- PSF geometry ---------------------------------------------------------------------------------


def _moments(psf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (x, y up) relative to the centre pixel, and the 2x2 second-moment matrix about it."""
    h, w = psf.shape
    y, x = np.mgrid[:h, :w].astype(np.float64)
    x, y = x - (w - 1) / 2, (h - 1) / 2 - y
    centroid = np.array([(psf * x).sum(), (psf * y).sum()])
    cov = np.array([[(psf * x * x).sum(), (psf * x * y).sum()], [(psf * x * y).sum(), (psf * y * y).sum()]])
    return centroid, cov


@pytest.mark.parametrize("length, angle", [(15, 30), (9, 0), (21, 90), (12, 135), (7.5, 60)])
def test_motion_psf_is_a_centred_line_of_the_given_length_and_angle(length, angle):
    psf = motion_psf(length, angle)
    assert psf.shape[0] % 2 == 1 and psf.shape[1] % 2 == 1
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    centroid, cov = _moments(psf)
    evals, evecs = np.linalg.eigh(cov)
    major_angle = np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1])) % 180
    assert np.abs(centroid).max() < 0.01
    # A uniform segment of length L has variance L^2 / 12 along it. Rasterising onto whole pixels moves
    # mass by up to half a pixel, which costs at most ~0.2 px in length and <1 degree (measured 0.65 at
    # 7.5 px, 60 deg); its width stays a fraction of a pixel.
    assert np.sqrt(12 * evals[1]) == pytest.approx(length, abs=0.3)
    assert abs((major_angle - angle + 90) % 180 - 90) < 1.0
    assert np.sqrt(evals[0]) < 0.5


@pytest.mark.parametrize("radius", [2, 4, 7.5])
def test_defocus_psf_area_gives_the_radius(radius):
    psf = defocus_psf(radius)
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    # Interior pixels all hold the peak value, so area = sum / peak = pi r^2; only the anti-aliased rim
    # (8x supersampled) deviates: measured within 0.5%.
    assert np.sqrt(1.0 / (np.pi * psf.max())) == pytest.approx(radius, rel=0.01)
    assert np.abs(_moments(psf)[0]).max() < 1e-9


@pytest.mark.parametrize("sigma", [1.0, 2.5, 4.0])
def test_gaussian_psf_second_moment_gives_sigma(sigma):
    psf = gaussian_psf(sigma)
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    centroid, cov = _moments(psf)
    # Truncation at 3 sigma removes the tails: the variance is ~0.973 sigma^2, so sigma reads ~1.3% low.
    assert np.sqrt(cov[0, 0]) == pytest.approx(sigma, rel=0.02)
    assert np.sqrt(cov[1, 1]) == pytest.approx(sigma, rel=0.02)
    assert abs(cov[0, 1]) < 1e-9 and np.abs(centroid).max() < 1e-9


# --- Deconvolution quality ------------------------------------------------------------------------

# Gains in dB over the 8-bit blurred input measured on this photo (kodim01, gray): motion 15 px:
# Wiener 4.5, RL 3.1; defocus r=4: 2.9, 1.7; gaussian sigma 2.5: 1.2, 1.0 (a Gaussian removes the most
# high frequencies, so the least comes back). Thresholds sit ~1/3 below, clearly above zero.
@pytest.mark.parametrize(
    "psf, wiener_gain, rl_gain",
    [(motion_psf(15, 30), 3.0, 2.0), (defocus_psf(4), 2.0, 1.1), (gaussian_psf(2.5), 0.8, 0.6)],
    ids=["motion", "defocus", "gaussian"],
)
def test_deconvolution_raises_psnr_for_model_psfs(gray, psf, wiener_gain, rl_gain):
    blurred = _blur(gray, psf)
    before = psnr(gray, blurred)
    assert psnr(gray, wiener(blurred, psf)) - before > wiener_gain
    assert psnr(gray, richardson_lucy(blurred, psf)) - before > rl_gain


def test_deconvolution_raises_psnr_for_real_camera_shake(gray, levin_kernels):
    # Over the 8 Levin kernels on two photos (kodim01, BSDS 2092) the smallest gains measured were
    # 5.4 dB (Wiener) and 4.7 dB (RL, 30 iterations); 4 and 3.5 dB leave room for photo variation.
    for k in levin_kernels:
        blurred = _blur(gray, k)
        before = psnr(gray, blurred)
        assert psnr(gray, wiener(blurred, k)) - before > 4.0
        assert psnr(gray, richardson_lucy(blurred, k)) - before > 3.5


def test_richardson_lucy_gain_grows_over_the_first_iterations(gray, levin_kernels):
    k = levin_kernels[3]
    blurred = _blur(gray, k)
    scores = [psnr(gray, richardson_lucy(blurred, k, iterations=n)) for n in (1, 2, 4, 8)]
    # Measured 19.6, 20.3, 21.2, 22.3 dB from 18.7: each doubling adds 0.7-1.1 dB here.
    assert scores[0] > psnr(gray, blurred)
    assert all(later - earlier > 0.3 for earlier, later in zip(scores, scores[1:]))


def test_no_shift_with_an_off_centre_kernel(gray, levin_kernels):
    # Levin kernel 5 has its centroid (-3.3, 2.9) px from its centre: the blurred photo is displaced by
    # that much, and a deconvolver that mis-placed the PSF (or correlated instead of convolving) would
    # leave a shift of the same order. Phase correlation resolves well under 0.1 px here.
    k = levin_kernels[5]
    sharp = gray.astype(np.float64)
    blurred = _blur(gray, k)
    (dx, dy), _ = cv2.phaseCorrelate(sharp, blurred.astype(np.float64))
    assert np.hypot(dx, dy) > 2.0  # the test can see a shift
    for restored in (wiener(blurred, k), richardson_lucy(blurred, k)):
        (dx, dy), _ = cv2.phaseCorrelate(sharp, restored.astype(np.float64))
        assert np.hypot(dx, dy) < 0.25


def test_borders_do_not_ring(gray, levin_kernels):
    # Without padding the DFT wraps the image around and the 16-px border band drops 2.8 dB *below* the
    # blurred input (measured with kernel 3); with reflect padding it gains 2.2 dB (Wiener) and 2.0 (RL).
    k = levin_kernels[3]
    blurred = _blur(gray, k)
    band = np.ones(gray.shape, bool)
    band[16:-16, 16:-16] = False
    before = psnr(gray[band], blurred[band])
    assert psnr(gray[band], wiener(blurred, k)[band]) - before > 1.0
    assert psnr(gray[band], richardson_lucy(blurred, k)[band]) - before > 1.0


# --- Dtypes, shapes, alpha ------------------------------------------------------------------------


def _as_dtype(rgb8: np.ndarray, dtype) -> np.ndarray:
    if dtype == np.uint8:
        return rgb8
    if dtype == np.uint16:
        return rgb8.astype(np.uint16) * 257
    return rgb8.astype(np.float32) / 255


@pytest.mark.parametrize("method", ["wiener", "rl"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_deconvolvers_keep_dtype_and_shape_and_agree_across_dtypes(photo, method, dtype):
    k = motion_psf(9, 45)
    blurred = _blur(photo[:160, :200], k)
    reference = deconvolve(_as_dtype(blurred, np.float32), k, method)
    out = deconvolve(_as_dtype(blurred, dtype), k, method)
    assert out.dtype == dtype and out.shape == blurred.shape
    scale = {np.uint8: 255.0, np.uint16: 65535.0, np.float32: 1.0}[dtype]
    # The same float32 maths underneath; integers differ only by the final rounding (half a level).
    np.testing.assert_allclose(out / scale, reference, atol=0.5 / scale + 1e-6)
    assert psnr(_as_dtype(blurred, np.float32), reference) < 40  # it did deblur, not pass through


@pytest.mark.parametrize("fn", [wiener, richardson_lucy, clahe], ids=["wiener", "rl", "clahe"])
def test_gray_and_rgba(photo, gray, fn):
    kw = {} if fn is clahe else {"psf": motion_psf(9, 45)}
    alpha = gray[:120, :150]  # a real, non-constant alpha plane
    rgba = np.dstack([photo[:120, :150], alpha])
    out = fn(rgba, **kw)
    assert out.dtype == np.uint8 and out.shape == rgba.shape
    np.testing.assert_array_equal(out[..., 3], alpha)
    # Alpha must not leak into the colour result.
    np.testing.assert_array_equal(out[..., :3], fn(photo[:120, :150], **kw))
    plane = fn(alpha, **kw)
    assert plane.dtype == np.uint8 and plane.shape == alpha.shape


def test_rgb_is_deconvolved_channel_by_channel(photo):
    k = motion_psf(9, 45)
    rgb = photo[:120, :150]
    out = wiener(rgb, k)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], wiener(np.ascontiguousarray(rgb[..., c]), k))


def test_bad_inputs_are_refused(photo):
    k = motion_psf(9, 45)
    with pytest.raises(ValueError, match="dtype"):
        wiener(photo.astype(np.int32), k)
    with pytest.raises(ValueError, match="shape"):
        wiener(photo[..., :2], k)
    with pytest.raises(ValueError, match="balance"):
        wiener(photo, k, balance=0)
    with pytest.raises(ValueError, match="iterations"):
        richardson_lucy(photo, k, iterations=0)
    with pytest.raises(ValueError, match="negative"):
        wiener(photo, -k)
    with pytest.raises(ValueError, match="method"):
        deconvolve(photo, k, "inverse")


# --- CLAHE ----------------------------------------------------------------------------------------


def test_clahe_raises_local_contrast_of_a_dimmed_photo(gray):
    dim = np.rint(0.3 * 255 + 0.25 * gray).astype(np.uint8)  # a quarter of the contrast, lifted
    out = clahe(dim)
    assert out.dtype == np.uint8 and out.shape == dim.shape
    # Measured 0.024 -> 0.063; CLAHE's clip limit of 2 caps the slope, so 1.8x is a safe floor.
    assert _local_contrast(out) > 1.8 * _local_contrast(dim)
    np.testing.assert_array_equal(out, cv2.createCLAHE(2.0, (8, 8)).apply(dim))
    # Float goes through the same 8-bit histograms, so clip_limit means the same for both.
    np.testing.assert_allclose(clahe(dim.astype(np.float32) / 255), out / 255, atol=1e-6)


def test_clahe_keeps_16_bit(photo):
    # A 16-bit image with many levels, as an X-ray detector gives: the mean of RGB has 631 of them.
    luminance = photo.astype(np.float64).mean(axis=2) / 255
    dim = np.rint((0.3 + 0.25 * luminance) * 65535).astype(np.uint16)
    out = clahe(dim)
    assert out.dtype == np.uint16 and out.shape == dim.shape
    assert len(np.unique(out)) > 256  # not squeezed through 8 bits
    assert _local_contrast(out) > 1.4 * _local_contrast(dim)  # measured 1.66x


def test_clahe_on_rgb_changes_lightness_not_colour(photo):
    dim = np.rint(0.3 * 255 + 0.25 * photo.astype(np.float64)).astype(np.uint8)
    out = clahe(dim)
    lab_in = cv2.cvtColor(dim, cv2.COLOR_RGB2Lab).astype(np.float64)
    lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2Lab).astype(np.float64)
    assert _local_contrast(lab_out[..., 0] / 255) > 1.8 * _local_contrast(lab_in[..., 0] / 255)
    # a*, b* move by 0.17 and 0.11 levels on average (8-bit rounding in and out of RGB), against a mean
    # chroma of 2.6 levels in this dimmed photo; equalising R, G and B separately moves them by 1.6.
    assert np.abs(lab_out[..., 1:] - lab_in[..., 1:]).mean() < 0.5


# --- PSF strings and files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, spec",
    [
        ("motion:15,30", PSFSpec("motion", (15.0, 30.0))),
        (" Motion:7.5 ", PSFSpec("motion", (7.5,))),
        ("motion:10,-45", PSFSpec("motion", (10.0, -45.0))),
        ("defocus:4", PSFSpec("defocus", (4.0,))),
        ("gaussian:2.5", PSFSpec("gaussian", (2.5,))),
        ("kernels/shake.png", PSFSpec("file", path="kernels/shake.png")),
        ("k.npy", PSFSpec("file", path="k.npy")),
    ],
)
def test_parse_psf_good(text, spec):
    assert parse_psf(text) == spec


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "expected"),
        ("motion", "expected"),
        ("blur:3", "expected"),
        ("15,30", "expected"),
        ("motion:", "numbers"),
        ("motion:fifteen", "numbers"),
        ("motion:15,30,2", "takes 1 to 2"),
        ("defocus:4,5", "takes 1 to 1"),
        ("gaussian:0", "positive"),
        ("defocus:-3", "positive"),
        ("motion:nan,30", "finite"),
    ],
)
def test_parse_psf_bad(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_psf(text)


def test_psf_from_spec_builds_the_named_model():
    np.testing.assert_array_equal(psf_from_spec(parse_psf("motion:15,30")), motion_psf(15, 30))
    np.testing.assert_array_equal(psf_from_spec(parse_psf("defocus:4")), defocus_psf(4))
    np.testing.assert_array_equal(psf_from_spec(parse_psf("gaussian:2.5")), gaussian_psf(2.5))


def test_load_psf_from_16_bit_png_and_npy(tmp_path, levin_kernels):
    k = levin_kernels[3]  # 27x27
    png = tmp_path / "shake.png"
    assert cv2.imwrite(str(png), np.rint(k / k.max() * 65535).astype(np.uint16))
    loaded = load_psf(png)
    assert loaded.shape == k.shape and loaded.sum() == pytest.approx(1.0, abs=1e-12)
    # 16-bit quantisation: half a level of the peak, relative to the kernel's peak.
    np.testing.assert_allclose(loaded, k / k.sum(), atol=0.5 / 65535 * k.max() * 1.01)
    npy = tmp_path / "shake.npy"
    np.save(npy, k * 3)
    np.testing.assert_allclose(load_psf(npy), k / k.sum(), rtol=1e-12)
    np.testing.assert_array_equal(psf_from_spec(parse_psf(str(npy))), load_psf(npy))


def test_load_psf_pads_even_sizes_to_odd(tmp_path):
    even = np.zeros((4, 6), np.uint8)
    even[1:3, 2:4] = 200
    path = tmp_path / "even.png"
    assert cv2.imwrite(str(path), even)
    psf = load_psf(path)
    assert psf.shape == (5, 7) and psf.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(psf[:4, :6], even / even.sum())  # padded at the bottom and right


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("missing.png", None, "no such PSF file"),
        ("garbage.png", b"this is not a PNG", "not a readable image"),
        ("zero.png", np.zeros((9, 9), np.uint8), "all zero"),
        ("garbage.npy", b"\x93NUMPY nonsense", "not a readable .npy"),
        ("negative.npy", -np.ones((5, 5)), "negative"),
        ("empty.npy", np.zeros((0, 5)), "empty"),
        ("cube.npy", np.ones((3, 3, 3)), "2-D"),
        ("nan.npy", np.full((3, 3), np.nan), "NaN"),
    ],
)
def test_load_psf_bad_files(tmp_path, name, content, problem):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif name.endswith(".png") and content is not None:
        assert cv2.imwrite(str(path), content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(ValueError, match=problem) as err:
        load_psf(path)
    assert name in str(err.value)
