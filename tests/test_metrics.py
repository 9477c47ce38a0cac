"""PSNR and SSIM against scikit-image on real photos; latency statistics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from edge_deblur.metrics import LatencyStats, laplacian_variance, measure_latency, psnr, ssim


def _read_rgb(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


def _degraded(rgb: np.ndarray, kind: str) -> np.ndarray:
    """A noisy (sigma 10 levels) or blurred (5x5 Gaussian) version, still uint8."""
    if kind == "noisy":
        rng = np.random.default_rng(0)
        return np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(rgb, (5, 5), 1.5)


def _variants(rgb: np.ndarray, degraded: np.ndarray):
    """(name, reference, test, data_range) for RGB/gray x uint8/float32."""
    gray, gray_degraded = rgb[..., 1], degraded[..., 1]
    for name, a, b in (("rgb", rgb, degraded), ("gray", gray, gray_degraded)):
        yield f"{name}-uint8", np.ascontiguousarray(a), np.ascontiguousarray(b), 255
        yield f"{name}-float", a.astype(np.float32) / 255, b.astype(np.float32) / 255, 1.0


@pytest.mark.parametrize("kind", ["noisy", "blurred"])
def test_psnr_and_ssim_match_scikit_image(photo_paths, kind):
    # The same formulas in float64; skimage runs float32 inputs in float32, which is the only source of
    # difference (measured < 1e-6). 1e-3 is the agreement the SDK promises.
    for path in photo_paths:
        rgb = _read_rgb(path)
        for name, a, b, data_range in _variants(rgb, _degraded(rgb, kind)):
            channel_axis = -1 if a.ndim == 3 else None
            expected_ssim = structural_similarity(a, b, channel_axis=channel_axis, data_range=data_range)
            expected_psnr = peak_signal_noise_ratio(a, b, data_range=data_range)
            where = f"{path.name} {kind} {name}"
            assert ssim(a, b) == pytest.approx(expected_ssim, abs=1e-3), where
            assert ssim(a, b, data_range=data_range) == pytest.approx(expected_ssim, abs=1e-3), where
            assert psnr(a, b) == pytest.approx(expected_psnr, abs=1e-3), where
            assert ssim(a, b) < 0.99 and psnr(a, b) < 45, where  # the degradation is really there


def test_uint16_range_comes_from_the_dtype(photo):
    a = photo.astype(np.uint16) * 257
    b = _degraded(photo, "noisy").astype(np.uint16) * 257
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=65535), abs=1e-3)
    assert ssim(a, b) == pytest.approx(
        structural_similarity(a, b, channel_axis=-1, data_range=65535), abs=1e-3
    )
    # The same images on an 8-bit scale: PSNR and SSIM are scale-free.
    assert psnr(a, b) == pytest.approx(psnr(photo, _degraded(photo, "noisy")), abs=1e-6)


def test_identical_images_and_explicit_range(photo):
    assert psnr(photo, photo) == float("inf")
    assert ssim(photo, photo) == pytest.approx(1.0, abs=1e-12)
    noisy = _degraded(photo, "noisy")
    # Halving the peak costs 20 log10(2) = 6.02 dB.
    assert psnr(photo, noisy) - psnr(photo, noisy, data_range=127.5) == pytest.approx(6.0206, abs=1e-4)


def test_metrics_refuse_mismatched_or_tiny_images(photo):
    with pytest.raises(ValueError, match="shape"):
        psnr(photo, photo[:-1])
    with pytest.raises(ValueError, match="shape"):
        ssim(photo, photo[..., 0])
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(photo[:5, :5], photo[:5, :5])
    with pytest.raises(ValueError, match="data_range"):
        psnr(photo.astype(np.int16), photo.astype(np.int16))


def test_laplacian_variance_drops_with_blur(photo):
    sharp = laplacian_variance(photo)
    assert laplacian_variance(_degraded(photo, "blurred")) < 0.5 * sharp
    # One 0-255 scale for every dtype, so one sharpness threshold serves them all.
    assert laplacian_variance(photo.astype(np.float32) / 255) == pytest.approx(sharp, rel=1e-3)
    assert laplacian_variance(photo.astype(np.uint16) * 257) == pytest.approx(sharp, rel=1e-3)


def test_latency_stats_from_samples():
    stats = LatencyStats.from_samples([0.010, 0.020, 0.030, 0.040, 0.100])
    assert stats.count == 5
    assert stats.median_ms == pytest.approx(30.0)
    assert stats.mean_ms == pytest.approx(40.0)
    assert stats.min_ms == pytest.approx(10.0)
    assert stats.p90_ms == pytest.approx(76.0)  # linear interpolation between 40 and 100 at 0.6
    assert stats.fps == pytest.approx(1000.0 / 30.0)
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])


def test_measure_latency_calls_warmup_then_repeats():
    calls = []
    stats = measure_latency(lambda: calls.append(1), warmup=3, repeats=7)
    assert len(calls) == 10
    assert stats.count == 7
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms
    with pytest.raises(ValueError):
        measure_latency(lambda: None, repeats=0)


# --- Scoring up to a shift (Levin et al. 2009's protocol) ---

from scipy import ndimage  # noqa: E402

from edge_deblur import classical  # noqa: E402
from edge_deblur.metrics import (  # noqa: E402
    align_upto_shift, error_ratio, psnr_upto_shift, sse_upto_shift, ssim_upto_shift, to_gray,
)
from edge_deblur.pipeline import EvalRow, evaluate, format_table  # noqa: E402


def _kodak_gray(data_dir, name="kodim03.png") -> np.ndarray:
    return to_gray(_read_rgb(data_dir / "photos" / "kodak24" / name))


def _bilinear_at(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """image(y + dy, x + dx), bilinear (scipy, an implementation independent of the library's)."""
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    return ndimage.map_coordinates(image, [yy + dy, xx + dx], order=1, mode="nearest")


def _exhaustive_upto_shift(reference: np.ndarray, test: np.ndarray, max_shift=10, step=0.25, border=15):
    """The benchmark's loop as written: every shift of the grid, bilinear resampling, SSE; first minimum."""
    h, w = reference.shape
    crop = reference[border : h - border, border : w - border]
    yy, xx = np.mgrid[border : h - border, border : w - border].astype(np.float64)
    shifts = np.arange(-max_shift, max_shift + step / 2, step)
    best = (np.inf, None)
    for dy in shifts:  # one row of the grid per call: every dx at once
        rows = np.broadcast_to(yy + dy, (len(shifts), *yy.shape))
        cols = xx[None] + shifts[:, None, None]
        aligned = ndimage.map_coordinates(test, [rows, cols], order=1)
        sse = np.sum((crop[None] - aligned) ** 2, axis=(1, 2))
        for dx, value in zip(shifts, sse):
            if value < best[0]:
                best = (float(value), (float(dy), float(dx)))
    return best


def test_to_gray_is_matlab_rgb2gray(photo):
    # rgb2gray of pure primaries gives its three weights; they sum to 1 so white stays 1.
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    assert to_gray(primaries)[0] == pytest.approx([0.298936021293775, 0.587043074451121, 0.114020904255103, 1.0], abs=1e-12)
    gray = to_gray(photo)
    assert gray.shape == photo.shape[:2] and gray.dtype == np.float64
    # OpenCV's BT.601 rounds the weights to 0.299/0.587/0.114 and the result to 8 bits: within half a level.
    opencv = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY) / 255.0
    assert np.abs(gray - opencv).max() < 0.6 / 255
    assert to_gray(photo.astype(np.float32) / 255) == pytest.approx(gray, abs=1e-6)
    assert to_gray(photo.astype(np.uint16) * 257) == pytest.approx(gray, abs=1e-12)
    rgba = np.dstack([photo, np.zeros(photo.shape[:2], np.uint8)])
    assert np.array_equal(to_gray(rgba), gray)  # alpha ignored
    assert np.array_equal(to_gray(photo[..., 1]), photo[..., 1] / 255.0)  # gray: only scaled
    assert np.array_equal(to_gray(photo[..., 1:2]), photo[..., 1] / 255.0)
    with pytest.raises(ValueError, match="shape"):
        to_gray(photo[..., :2])
    with pytest.raises(ValueError, match="dtype"):
        to_gray(photo.astype(np.int16))


@pytest.mark.parametrize("name", ["kodim03.png", "kodim12.png"])
def test_a_known_subpixel_shift_is_found_exactly(data_dir, name):
    photo = _kodak_gray(data_dir, name)
    # The reference is the photo sampled at (y + 2.25, x - 3.5): the photo itself, resampled at that
    # shift, reproduces it exactly, so the answer is known and the error is rounding only.
    reference = _bilinear_at(photo, 2.25, -3.5)
    ref_crop, aligned, shift = align_upto_shift(reference, photo)
    assert shift == (2.25, -3.5)
    assert np.array_equal(ref_crop, reference[15:-15, 15:-15])  # the 15-pixel border is cropped
    assert psnr_upto_shift(reference, photo) > 250  # float rounding only
    assert psnr(reference, photo, data_range=1.0) < 30  # plain PSNR of the same images
    assert ssim_upto_shift(reference, photo) == pytest.approx(1.0, abs=1e-9)
    # A whole-pixel shift made by slicing: exactly zero error.
    moved = np.zeros_like(photo)
    moved[3:, :-5] = photo[:-3, 5:]  # content 3 px lower, 5 px to the left
    assert align_upto_shift(photo, moved)[2] == (3.0, -5.0)
    assert psnr_upto_shift(photo, moved) == float("inf") and sse_upto_shift(photo, moved) == 0.0


def test_a_bilinearly_warped_test_is_found_within_one_step(data_dir):
    # The other way round, the test photo warped by (2.25, -3.5): resampling it again blurs it twice,
    # and on a real photo a neighbouring grid shift can then match better (it trades a quarter pixel
    # of phase for less smoothing); the exhaustive search agrees (next test). Within one step, and far
    # above the plain score.
    photo = _kodak_gray(data_dir)
    warped = ndimage.shift(photo, (2.25, -3.5), order=1, mode="nearest")
    _, _, (dy, dx) = align_upto_shift(photo, warped)
    assert abs(dy - 2.25) <= 0.25 and abs(dx + 3.5) <= 0.25
    assert psnr_upto_shift(photo, warped) > psnr(photo, warped) + 10


def test_fast_search_finds_the_exhaustive_optimum_on_real_photos(data_dir, levin_kernels):
    rng = np.random.default_rng(0)
    sharp = _read_rgb(data_dir / "photos" / "kodak24" / "kodim05.png")[200:272, 220:292]  # 72x72: 6561 shifts in seconds
    gray = to_gray(sharp)
    kernel = levin_kernels[2]
    blurred = cv2.filter2D(sharp, -1, kernel[::-1, ::-1].astype(np.float32), borderType=cv2.BORDER_REFLECT)
    off_centre = np.roll(np.pad(kernel, 4), (3, -2), axis=(0, 1))  # the same kernel, moved: a shifted restoration
    cases = {
        "off-grid shift and noise": _bilinear_at(gray, -1.37, 4.61) + rng.normal(0, 0.02, gray.shape),
        "Levin-kernel blur": blurred,
        "Wiener with a shifted kernel": classical.wiener(blurred, off_centre / off_centre.sum(), balance=0.01),
        "unrelated photo": to_gray(_read_rgb(data_dir / "photos" / "kodak24" / "kodim20.png")[100:172, 100:172]),
    }
    for case, test in cases.items():
        expected_sse, expected_shift = _exhaustive_upto_shift(gray, to_gray(test))
        ref_crop, aligned, shift = align_upto_shift(sharp, test)
        assert shift == expected_shift, case
        assert float(np.sum((ref_crop - aligned) ** 2)) == pytest.approx(expected_sse, rel=1e-9), case
        assert sse_upto_shift(sharp, test) == pytest.approx(expected_sse, rel=1e-9), case


def test_identical_gray_and_rgb_inputs(photo):
    gray = to_gray(photo)
    for a, b in ((photo, photo), (photo, gray), (gray.astype(np.float32), photo), (photo.astype(np.uint16) * 257, photo)):
        assert align_upto_shift(a, b)[2] == (0.0, 0.0)
        assert sse_upto_shift(a, b) == pytest.approx(0.0, abs=1e-6)
        assert psnr_upto_shift(a, b) > 60
    assert psnr_upto_shift(photo, photo) == float("inf")
    assert ssim_upto_shift(photo, photo) == pytest.approx(1.0, abs=1e-12)
    assert error_ratio(photo, photo, photo) == 1.0


def test_border_and_shift_range_are_respected(data_dir):
    photo = _kodak_gray(data_dir)
    reference, test = photo[12:], photo[:-12]  # the test's content sits 12 px lower
    ref_crop, aligned, (dy, dx) = align_upto_shift(reference, test)
    assert abs(dy) <= 10 and abs(dx) <= 10  # 12 px is outside +-10: not recovered
    assert psnr(ref_crop, aligned, data_range=1.0) < 35
    assert align_upto_shift(reference, test, max_shift=12)[2] == (12.0, 0.0)
    assert psnr_upto_shift(reference, test, max_shift=12) == float("inf")
    # Only the inner frame counts: the reference's 15-pixel border and the test's outer 5 pixels
    # (never reached by a shift of at most 10) can hold anything.
    rng = np.random.default_rng(1)
    noisy_ref, noisy_test = photo.copy(), photo.copy()
    for image, width in ((noisy_ref, 15), (noisy_test, 5)):
        frame = np.ones_like(image, dtype=bool)
        frame[width:-width, width:-width] = False
        image[frame] = rng.random(int(frame.sum()))
    assert psnr_upto_shift(noisy_ref, noisy_test) == float("inf")
    assert psnr_upto_shift(noisy_ref, noisy_test, border=14) < 60  # one more row of the noise counts


def test_align_refuses_what_it_cannot_score(photo):
    with pytest.raises(ValueError, match="leaves nothing"):
        align_upto_shift(photo[:30, :40], photo[:30, :40])
    with pytest.raises(ValueError, match="differ in size"):
        align_upto_shift(photo, photo[:-1])
    with pytest.raises(ValueError, match="exceeds the border"):
        align_upto_shift(photo, photo, max_shift=16)
    with pytest.raises(ValueError, match="step"):
        align_upto_shift(photo, photo, step=0.3)
    with pytest.raises(ValueError, match="whole number"):
        align_upto_shift(photo, photo, max_shift=2.5)


def test_error_ratio_of_real_restorations(photo, levin_kernels):
    sharp = photo[100:356, 100:356]
    kernel = levin_kernels[1]
    blurred = cv2.filter2D(sharp, -1, kernel[::-1, ::-1].astype(np.float32), borderType=cv2.BORDER_REFLECT)
    with_true = classical.wiener(blurred, kernel, balance=0.01)
    # Up to shift: the same restoration moved by whole pixels has the same error, ratio 1.
    moved = np.roll(with_true, (2, -3), axis=(0, 1))
    assert error_ratio(sharp, moved, with_true) == pytest.approx(1.0, abs=1e-9)
    assert psnr(sharp, moved) < psnr(sharp, with_true) - 3  # while plain PSNR punishes the shift
    # A wrong kernel (another of Levin's) restores worse than the true one: ratio well above 1.
    with_wrong = classical.wiener(blurred, levin_kernels[6], balance=0.01)
    ratio = error_ratio(sharp, with_wrong, with_true)
    assert ratio > 2
    assert ratio == pytest.approx(sse_upto_shift(sharp, with_wrong) / sse_upto_shift(sharp, with_true), rel=1e-12)
    assert error_ratio(sharp, sharp, with_true) == 0.0 and error_ratio(sharp, with_true, sharp) == float("inf")


def test_evaluate_adds_the_levin_protocol_and_the_error_ratio(photo_paths, levin_kernels):
    pairs = []
    for path, kernel in zip(photo_paths[:3], levin_kernels[:3]):
        sharp = _read_rgb(path)[:128, :128]
        blurred = cv2.filter2D(sharp, -1, kernel[::-1, ::-1].astype(np.float32), borderType=cv2.BORDER_REFLECT)
        pairs.append((path.stem, blurred, sharp, kernel))
    methods = {
        "blurred input": lambda blurred, kernel: blurred,
        "wiener (true kernel)": lambda blurred, kernel: classical.wiener(blurred, kernel, balance=0.01),
        "wiener (true kernel, moved)": lambda blurred, kernel: np.roll(classical.wiener(blurred, kernel, balance=0.01), (1, 2), (0, 1)),
    }
    plain = evaluate(pairs, methods, protocol="plain")
    assert all(r.levin_psnr is None and r.error_ratio is None for r in plain)
    assert format_table(plain).splitlines()[0] == "| method | PSNR (dB) | SSIM | median latency (ms) | images |"
    rows = {r.method: r for r in evaluate(pairs, methods, ratio_reference="wiener (true kernel)")}
    for plain_row in plain:  # "both" keeps the plain scores as they were
        assert (rows[plain_row.method].psnr, rows[plain_row.method].ssim) == pytest.approx((plain_row.psnr, plain_row.ssim))
    reference, moved, blurred = rows["wiener (true kernel)"], rows["wiener (true kernel, moved)"], rows["blurred input"]
    assert reference.error_ratio is None and reference.ratio_reference is None
    assert moved.error_ratio == pytest.approx(1.0, abs=1e-9) and moved.success_rate == 1.0  # shift-invariant
    assert moved.levin_psnr == pytest.approx(reference.levin_psnr, abs=1e-6) and moved.psnr < reference.psnr - 3
    assert blurred.error_ratio > 3 and blurred.success_rate == 0.0 and blurred.ratio_reference == "wiener (true kernel)"
    table = format_table(list(rows.values()))
    assert "Levin PSNR (dB)" in table and "error ratio vs wiener (true kernel)" in table and "ratio <= 3" in table
    levin_only = evaluate(pairs, methods, protocol="levin")
    assert all(r.ssim is None and r.levin_ssim is not None and r.psnr is not None for r in levin_only)
    assert EvalRow("x", 1.0, 0.5, 2.0, 1).levin_psnr is None  # the old positional form still works
    with pytest.raises(Exception, match="not one of the methods"):
        evaluate(pairs, methods, ratio_reference="rl")
    with pytest.raises(Exception, match="needs protocol"):
        evaluate(pairs, methods, protocol="plain", ratio_reference="blurred input")
    tiny = [(n, b[:30, :30], s[:30, :30], k) for n, b, s, k in pairs]
    with pytest.raises(Exception, match="too small"):
        evaluate(tiny, methods)
