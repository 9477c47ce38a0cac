"""Blur synthesis (converters.blur) and the data split (converters.data), on real photos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from converters import data
from converters.blur import (
    BlurConfig, add_sensor_noise, center_kernel, linear_to_srgb, random_kernel, srgb_to_linear, synthesize_pair,
    trajectory_kernel,
)

ONLY = {kind: BlurConfig(**{f"p_{k}": float(k == kind) for k in ("trajectory", "motion", "defocus", "gaussian")})
        for kind in ("trajectory", "motion", "defocus", "gaussian")}


@pytest.mark.parametrize("kind", sorted(ONLY))
def test_every_kernel_type_is_a_normalised_psf(kind):
    rng = np.random.default_rng(1)
    for _ in range(20):
        k = random_kernel(rng, ONLY[kind])
        assert k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert k.min() >= 0
        assert k.sum() == pytest.approx(1.0, abs=1e-9)


def test_trajectory_kernel_is_centred_and_spread():
    rng = np.random.default_rng(2)
    for size in (9, 21, 31):
        k = trajectory_kernel(rng, size=size)
        yy, xx = np.indices(k.shape)
        # The path is centred on its centroid and bilinear splatting keeps the centroid exactly, so
        # the blur does not shift the image.
        assert (k * yy).sum() == pytest.approx((size - 1) / 2, abs=1e-9)
        assert (k * xx).sum() == pytest.approx((size - 1) / 2, abs=1e-9)
        assert np.count_nonzero(k > 1e-3) >= 4  # a path, not a delta: length is at least size/4


def test_srgb_transfer_roundtrip_and_known_values():
    x = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    assert srgb_to_linear(np.array(0.5)) == pytest.approx(0.21404, abs=1e-5)  # IEC 61966-2-1
    assert linear_to_srgb(np.array(0.18)) == pytest.approx(0.46136, abs=1e-5)


def test_seeded_pairs_repeat_and_seeds_differ(photo):
    a = synthesize_pair(photo, np.random.default_rng(7))
    b = synthesize_pair(photo, np.random.default_rng(7))
    c = synthesize_pair(photo, np.random.default_rng(8))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    blurred, sharp, kernel = a
    assert blurred.shape == sharp.shape == (128, 128, 3) and blurred.dtype == sharp.dtype == np.float32
    assert 0 <= blurred.min() and blurred.max() <= 1 and kernel.sum() == pytest.approx(1.0)


def test_blur_happens_in_linear_light():
    # Black/white one-pixel stripes under a Gaussian of sigma >= 2 average to half the light: in linear
    # light that is 0.5, shown as sRGB 1.055 * 0.5^(1/2.4) - 0.055 = 0.7354, where averaging sRGB
    # values would give 0.5. The PSF's truncation at 3 sigma leaves a ripple of ~2e-4, hence 1e-3.
    stripes = np.zeros((200, 200, 3), np.uint8)
    stripes[:, ::2] = 255
    config = replace(ONLY["gaussian"], crop=64, gaussian_sigma=(2, 3), shot_noise=(0, 0), read_noise=(0, 0),
                     exposure_stops=(0, 0), p_jpeg=0)
    blurred, sharp, _ = synthesize_pair(stripes, np.random.default_rng(0), config)
    np.testing.assert_allclose(blurred, 1.055 * 0.5 ** (1 / 2.4) - 0.055, atol=1e-3)
    np.testing.assert_allclose(np.unique(sharp), [0.0, 1.0], atol=1e-6)  # the target stays sharp


def test_sensor_noise_matches_requested_levels():
    rng = np.random.default_rng(3)
    flat = np.full((256, 256, 3), 0.25, np.float32)
    noisy = add_sensor_noise(flat, rng, shot=1e-3, read=2e-3)
    expected = np.sqrt(1e-3 * 0.25 + 2e-3**2)
    # 196608 samples: the sample std has a relative standard error of 1/sqrt(2N) = 0.16%.
    assert noisy.std() == pytest.approx(expected, rel=0.02)
    assert noisy.mean() == pytest.approx(0.25, abs=4 * expected / np.sqrt(noisy.size))


def test_evaluation_noise_matches_sigma():
    gray = np.full((256, 256, 3), 128, np.uint8)
    out = data.blur_photo(gray, np.ones((1, 1)), noise_sigma=0.01, rng=np.random.default_rng(4)) / 255.0
    # Gaussian sigma 0.01 plus 8-bit rounding noise (1/255/sqrt(12)) gives 0.01006.
    assert out.std() == pytest.approx(np.hypot(0.01, 1 / 255 / np.sqrt(12)), rel=0.03)


def test_training_never_draws_levin_kernels(levin_kernels, monkeypatch):
    def refuse():
        raise AssertionError("training touched the Levin kernels")

    monkeypatch.setattr(data, "levin_kernels", refuse)
    rng = np.random.default_rng(5)
    photos = [("photo", np.full((200, 200, 3), 100, np.uint8))]
    next(data.training_batches(photos, BlurConfig(crop=32), 4, rng))
    for _ in range(300):
        k = random_kernel(rng)
        assert not any(k.shape == lk.shape and np.allclose(k, lk, atol=1e-4) for lk in levin_kernels)


def test_split_is_disjoint_fixed_and_written_down(data_dir):
    parts = [set(data.TRAINING), set(data.VALIDATION), set(data.HELDOUT)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 85 + 6 + 24
    assert data.HELDOUT == tuple(f"kodak24/{p.name}" for p in sorted((data_dir / "photos" / "kodak24").iterdir()))
    assert not any(name.startswith("kodak24/") for name in data.TRAINING + data.VALIDATION)
    for name in data.TRAINING + data.VALIDATION:
        assert name.startswith("skimage/") or (data_dir / "photos" / name).is_file(), name
    written = (Path(data.REPO) / "docs" / "DATA.md").read_text()
    for name in data.TRAINING + data.VALIDATION + data.HELDOUT:
        assert Path(name).stem in written or name.startswith("kodak24/"), name


def test_eval_pairs_are_deterministic_and_use_levin(tmp_path, levin_kernels):
    names = data.make_eval_pairs(tmp_path / "a", "levin", crop=64)
    data.make_eval_pairs(tmp_path / "b", "levin", crop=64)
    assert names == [f"kodim{i:02d}" for i in range(1, 25)]
    for sub, ext in (("blur", "png"), ("sharp", "png"), ("kernels", "npy")):
        for name in names:
            first, second = (tmp_path / run / sub / f"{name}.{ext}" for run in ("a", "b"))
            assert first.read_bytes() == second.read_bytes()
    for i, name in enumerate(names):
        saved = np.load(tmp_path / "a" / "kernels" / f"{name}.npy")
        np.testing.assert_array_equal(saved, center_kernel(levin_kernels[i % 8]))


def test_shake_validation_pairs_are_validation_photos_blurred_alike_every_time(data_dir):
    """The set for choosing between models without the held-out photos or kernels: the 6 validation
    photos, one trajectory kernel of each Levin size, the held-out forward model, fixed."""
    pairs, again = data.shake_validation_pairs(crop=64), data.shake_validation_pairs(crop=64)
    assert len(pairs) == len(data.VALIDATION) * len(data.SHAKE_SIZES) == 48
    for (blurred, sharp), (blurred2, sharp2) in zip(pairs, again):
        assert blurred.shape == sharp.shape == (64, 64, 3) and blurred.dtype == sharp.dtype == np.uint8
        np.testing.assert_array_equal(blurred, blurred2)
    validation = [photo for _, photo in data.validation_photos()]
    for i, (blurred, sharp) in enumerate(pairs):
        photo = validation[i // len(data.SHAKE_SIZES)]
        y, x = (photo.shape[0] - 64) // 2, (photo.shape[1] - 64) // 2
        np.testing.assert_array_equal(sharp, photo[y : y + 64, x : x + 64])  # centre crops of validation photos
        assert np.abs(blurred.astype(int) - sharp).mean() > 1  # blurred and noised, not a copy
    # a larger kernel blurs more: the 27-pixel ones lose more detail than the 13-pixel ones on average
    detail = [float(np.abs(np.diff(b.astype(float), axis=1)).mean()) for b, _ in pairs]
    per_size = np.reshape(detail, (len(data.VALIDATION), len(data.SHAKE_SIZES))).mean(axis=0)
    assert per_size[-1] < per_size[0]


def test_center_kernel_only_translates(levin_kernels):
    for k in levin_kernels:
        c = center_kernel(k)
        yy, xx = np.indices(c.shape)
        assert abs((c * yy).sum() - (c.shape[0] - 1) / 2) <= 0.5 and abs((c * xx).sum() - (c.shape[1] - 1) / 2) <= 0.5
        assert c.shape[0] % 2 == 1 and c.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_array_equal(np.sort(c[c > 0]), np.sort(k[k > 0]))  # same values, moved


def test_the_teachers_mix_draws_the_stream_it_always_drew(photo):
    """Issue 14's options (identity kernels, sRGB noise, 8-bit rounding) are off in the default mix
    and cost it no random draw: the kernel sizes and the generator's position after 12 pairs are
    those of the code before them (measured on it), so the teacher's training stream and the
    validation pairs did not move."""
    rng = np.random.default_rng(7)
    sizes = [synthesize_pair(photo, rng, BlurConfig(crop=48))[2].shape[0] for _ in range(12)]
    assert sizes == [27, 31, 35, 11, 15, 17, 17, 33, 31, 9, 27, 31]
    assert rng.integers(1 << 30) == 2612894


def test_identity_pairs_are_the_sharp_crop_with_srgb_noise_on_8_bit_steps(photo):
    """A no-blur pair with the evaluation's noise (Gaussian on sRGB) is the sharp crop plus noise of
    the drawn sigma, rounded to 8-bit steps like a frame."""
    config = BlurConfig(crop=96, p_trajectory=0.0, p_motion=0.0, p_defocus=0.0, p_gaussian=0.0, p_identity=1.0,
                        p_srgb_noise=1.0, srgb_noise=(3 / 255, 3 / 255), p_jpeg=0.0, exposure_stops=(0.0, 0.0),
                        quantize_8bit=True)
    rng = np.random.default_rng(5)
    for _ in range(3):
        blurred, sharp, kernel = synthesize_pair(photo, rng, config)
        assert kernel.shape == (1, 1)
        np.testing.assert_allclose(blurred * 255, np.round(blurred * 255), atol=1e-3)
        noise = (blurred - sharp)[(sharp > 0.05) & (sharp < 0.95)]  # away from the clip
        # 3 levels of Gaussian noise plus rounding's 1/sqrt(12) level, sharp crop itself on 8-bit steps
        assert np.std(noise) * 255 == pytest.approx(np.hypot(3, 12 ** -0.5), rel=0.05)
        assert abs(np.mean(noise)) * 255 < 0.1


def test_the_students_mix_follows_the_validation_classes():
    """``BlurConfig.by_class_mix``: a sixth of the kernels is no blur, a sixth each defocus and
    Gaussian, the rest shake, with shake sizes from below the smallest validation class (11 px) to
    above the largest (31 px); half the pairs take the sRGB noise."""
    config = BlurConfig.by_class_mix()
    rng = np.random.default_rng(3)
    kernels = [random_kernel(rng, config) for _ in range(1200)]
    identity = np.mean([k.shape == (1, 1) for k in kernels])
    assert identity == pytest.approx(1 / 6, abs=0.03)
    assert config.p_defocus == config.p_gaussian == pytest.approx(1 / 6)
    assert config.p_trajectory + config.p_motion == pytest.approx(0.5)
    assert config.kernel_sizes[0] <= 11 and config.kernel_sizes[1] >= 31  # trajectory sides, odd
    assert max(k.shape[0] for k in kernels) >= 31
    assert config.p_srgb_noise == 0.5 and config.quantize_8bit and config.p_jpeg < BlurConfig().p_jpeg


@pytest.mark.parametrize("bad", [dict(p_identity=0.2), dict(p_trajectory=1.1, p_motion=-0.2),
                                 dict(p_srgb_noise=1.5), dict(srgb_noise=(0.02, 0.01))])
def test_a_mix_that_is_no_distribution_is_refused(bad):
    with pytest.raises(ValueError):
        BlurConfig(**bad)
