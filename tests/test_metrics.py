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
