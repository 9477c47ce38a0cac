"""The teacher network, its trainer and its exports (needs the host toolchain: TensorFlow/Keras)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from converters.blur import BlurConfig, synthesize_pair  # noqa: E402
from converters.data import make_eval_pairs  # noqa: E402
from converters.export import export_onnx, export_tflite, onnx_predict, tflite_predict  # noqa: E402
from converters.teacher import build_teacher, count_macs, multiple_of  # noqa: E402
from converters.train import TrainConfig, compile_teacher, psnr, train  # noqa: E402
from edge_deblur import Deblurrer, metrics  # noqa: E402
from edge_deblur.pipeline import read_pairs  # noqa: E402

pytestmark = pytest.mark.convert
BUNDLE = Path(__file__).resolve().parents[1] / "edge_deblur" / "models"
TINY = {"width": 8, "enc_blocks": (1, 1), "middle_blocks": 1, "dec_blocks": (1, 1)}


def _randomised(model):
    """Give every weight (also the zero-initialised scales and last layer) a random value."""
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.2, w.shape).astype("float32"))
    return model


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (64, 24)])
def test_output_shape_equals_input_shape(size):
    model = _randomised(build_teacher(8, (1, 1, 1), 1, (1, 1, 1)))
    x = np.random.default_rng(1).uniform(size=(2, *size, 3)).astype("float32")
    assert model.predict_on_batch(x).shape == x.shape
    assert multiple_of(model) == 8


def test_untrained_teacher_is_identity_plus_global_residual(photo):
    model = build_teacher()
    crop = photo[:64, :96].astype("float32")[None] / 255.0
    np.testing.assert_array_equal(model.predict_on_batch(crop), crop)  # zero last layer: identity
    bias = np.array([0.1, -0.2, 0.05], "float32")
    model.get_layer("ending").bias.assign(bias)
    np.testing.assert_allclose(model.predict_on_batch(crop) - crop, np.broadcast_to(bias, crop.shape), atol=1e-6)


def test_count_macs_matches_hand_count():
    c, h, w = 8, 32, 32
    model = build_teacher(c, (1,), 0, (1,))
    # intro 27c + ending 27c, two NAFBlocks of (6c^2 + 18c) per pixel plus a c^2 attention on the
    # pooled vector, the stride-2 down (2c^2 per input pixel) and the 1x1 up (2c^2 per input pixel).
    expected = h * w * (16 * c * c + 90 * c) + 2 * c * c
    assert count_macs(model, h, w) == expected


def test_training_lowers_the_loss_on_a_fixed_batch(photo, tmp_path):
    keras.utils.set_random_seed(0)
    model = compile_teacher(build_teacher(**TINY), replace(TrainConfig.quick(str(tmp_path)), learning_rate=3e-3))
    rng = np.random.default_rng(0)
    pairs = [synthesize_pair(photo, rng, BlurConfig(crop=32))[:2] for _ in range(4)]
    blurred, sharp = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    losses = [float(model.train_on_batch(blurred, sharp)) for _ in range(40)]
    # From the identity start the loss is the blur's error. On a fixed batch there is no sampling
    # noise: it falls steadily (measured: 12% over these 40 steps); 7% leaves room for other CPUs.
    assert np.mean(losses[-5:]) < 0.93 * np.mean(losses[:5])


@pytest.mark.slow
def test_quick_run_checkpoints_and_resumes(tmp_path):
    config = TrainConfig.quick(str(tmp_path / "run"))
    first = train(config)
    assert first.steps == config.steps and (tmp_path / "run" / "best.weights.h5").is_file()
    assert [s for s, _ in first.history] == [15, 30] and np.isfinite(first.best_val_psnr)
    again = train(replace(config, steps=45))
    assert again.steps == 45 and [s for s, _ in again.history] == [15, 30, 45]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # tf2onnx probes the removed np.object
def test_tflite_and_onnx_agree_with_keras(photo, tmp_path):
    model = _randomised(build_teacher(**TINY))
    tflite, onnx = export_tflite(model, tmp_path / "t.tflite"), export_onnx(model, tmp_path / "t.onnx")
    for h, w in ((64, 96), (96, 64)):  # resizing the same graph to other shapes
        crop = photo[100 : 100 + h, 50 : 50 + w].astype("float32") / 255.0
        expected = model.predict_on_batch(crop[None])[0]
        assert np.abs(expected - crop).max() > 0.05  # a non-trivial function of the input
        # float32 graphs of the same maths: they differ by rounding (~1e-6), far below 1e-4.
        np.testing.assert_allclose(tflite_predict(tflite, crop), expected, atol=1e-4)
        np.testing.assert_allclose(onnx_predict(onnx, crop), expected, atol=1e-4)


@pytest.mark.skipif(not (BUNDLE / "teacher.tflite").exists(), reason="no bundled teacher yet")
def test_bundled_teacher_improves_heldout_levin_blur_through_the_runtime(tmp_path):
    """The shipped teacher, loaded by name through the runtime alone, on the first 8 held-out pairs
    (one per real Levin kernel, never seen in training). Measured: mean gain +0.59 dB here, +0.75 dB
    on all 24 (docs/BENCHMARKS.md); issue 3's +4 dB bar is NOT met yet, and this test does not
    pretend it is: it guards that the bundle loads, runs blind, and helps on average."""
    sidecar = json.loads((BUNDLE / "teacher.json").read_text())
    assert set(sidecar) == {"name", "layout", "input_range", "multiple", "tile", "macs_per_pixel", "params",
                            "architecture", "training"}
    make_eval_pairs(tmp_path, kernels="levin")
    pairs = read_pairs(tmp_path)[:8]
    teacher = Deblurrer.load("teacher", threads=2)
    gains = [metrics.psnr(sharp, teacher(blurred)) - metrics.psnr(sharp, blurred) for _, blurred, sharp, _ in pairs]
    assert np.mean(gains) > 0.3
    assert sum(g > 0 for g in gains) >= 5  # helps on most kernels, not through one lucky image
