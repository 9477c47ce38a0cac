"""The student family (converters.student), its INT8 conversion (converters.quantize) and the
MobileNetV2 yardstick (converters.reference, benchmarks/expected_latency.py)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from converters.blur import BlurConfig, synthesize_pair  # noqa: E402
from converters.quantize import quantize_int8, representative_crops, tflite_ops  # noqa: E402
from converters.reference import (MOBILENET_V2_SHAPE, expected_ms, mobilenet_v2_tflite, tflite_macs,  # noqa: E402
                                  time_side_by_side)
from converters.student import (STUDENTS, build_student, litert_student, multiple_of, run_stages, stage_inputs,  # noqa: E402
                                stage_models, stage_names, student_blocks, student_macs, student_spec,
                                student_widths)
from converters.teacher import build_teacher, count_macs  # noqa: E402
from converters.train import TrainConfig  # noqa: E402
from edge_deblur import Deblurrer, psnr  # noqa: E402
from targets import MOBILENET_V2_MACS, load_target  # noqa: E402

pytestmark = pytest.mark.convert
ROOT = Path(__file__).resolve().parents[1]
# What XNNPACK's INT8 path runs as single kernels; anything else (QUANTIZE, DEQUANTIZE, TRANSPOSE,
# RESHAPE, RESIZE_*) would mean a float island or a layout shuffle. MEAN and MUL are channel attention.
XNNPACK_INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "MUL", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"}
# INT8 output against the float twin: the output's own rounding step is 1/255, which alone costs
# about 59 dB (RMSE 1/255/sqrt(12)); allowing 2.5 grey levels RMSE (40 dB) for the error carried
# through ~30 quantized layers keeps it far below what deblurring changes (several dB).
INT8_AGREEMENT_DB = 40.0


def _with_random_head(model, seed: int = 0, scale: float = 0.05):
    """Give the zero-initialised head a random kernel, so the student predicts a real correction
    (an identity student would make the INT8 comparison trivial)."""
    head = model.get_layer("head_correction")
    kernel, bias = head.get_weights()
    head.set_weights([np.random.default_rng(seed).normal(0, scale, kernel.shape).astype("float32"), bias])
    return model


@pytest.fixture(scope="module")
def student():
    return _with_random_head(build_student())


@pytest.fixture(scope="module")
def blurred(photo) -> np.ndarray:
    """A real photo, blurred as in training: 256x384 float32 RGB in [0, 1]."""
    rng = np.random.default_rng(7)
    crop = synthesize_pair(photo, rng, BlurConfig(crop=384, p_jpeg=0.0))[0]
    return np.ascontiguousarray(crop[:256])


@pytest.fixture(scope="module")
def int8_student(student, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("student") / "student_int8.tflite"
    return quantize_int8(student, representative_crops(count=16, crop=128), path, tile=(128, 128))


@pytest.mark.parametrize("size", [(16, 16), (48, 80), (128, 96), (480, 640)])
def test_shape_in_equals_shape_out(student, size):
    x = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
    assert student(x).shape == x.shape


def test_untrained_student_is_the_identity():
    x = np.random.default_rng(1).random((2, 32, 48, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(build_student()(x)), x)


def _randomise(model, seed: int = 0, scale: float = 0.1):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0, scale, w.shape).astype("float32") for w in layer.get_weights()])
    return model


@pytest.mark.parametrize("attention", range(5))
def test_spec_is_read_back_from_the_model(attention):
    spec = student_spec(build_student((16, 24, 32), (1, 1, 2), 1, attention=attention))
    assert (spec.widths, spec.blocks, spec.middle, spec.attention) == ((16, 24, 32), (1, 1, 2), 1, attention)
    # the bottleneck first, then the levels above it: attention 2 is the bottleneck and level 3
    names = {layer.name for layer in spec.build().layers if layer.name.endswith("_attention")}
    expected = {2: {"bottleneck_block0_attention", "enc3_block0_attention", "enc3_block1_attention",
                    "dec3_block0_attention", "dec3_block1_attention"}}
    if attention in expected:
        assert names == expected[attention]


def test_channel_attention_starts_as_the_identity(photo):
    """An untrained attention (W = 0, b = 1) scales every channel by 1: the student computes what
    the same weights compute without it; trained (random) attention changes the output."""
    plain = _randomise(build_student((16, 32, 64), (0, 1, 2), 2))
    attending = build_student((16, 32, 64), (0, 1, 2), 2, attention=2)
    for layer in plain.layers:
        if layer.weights:
            attending.get_layer(layer.name).set_weights(layer.get_weights())
    x = photo[None, :96, :128].astype(np.float32) / 255
    np.testing.assert_allclose(np.asarray(attending(x)), np.asarray(plain(x)), atol=1e-6)
    _randomise(attending, seed=1)
    assert np.abs(np.asarray(attending(x)) - np.asarray(plain(x))).max() > 1e-2
    with pytest.raises(ValueError, match="attention"):
        build_student((16, 32, 64), (0, 1, 2), 2, attention=5)


def test_attention_student_runs_in_xnnpack_int8_and_agrees_with_float(blurred, tmp_path):
    """The rpi5 preset (channel attention at the bottleneck and level 3) with every weight random,
    exported as LiteRT runs it: only XNNPACK INT8 kernels, and within the INT8 agreement bound."""
    model = litert_student(_randomise(STUDENTS["rpi5"].build(), scale=0.05))
    path = quantize_int8(model, representative_crops(count=16, crop=128), tmp_path / "rpi5.tflite", tile=(128, 128))
    ops = tflite_ops(path)
    assert {"MEAN", "MUL"} <= set(ops) <= XNNPACK_INT8_OPS, ops
    expected = np.asarray(model(blurred[None]))[0]
    assert psnr(expected, blurred, data_range=1.0) < INT8_AGREEMENT_DB - 5
    assert psnr(Deblurrer.load(path, threads=2).infer(blurred), expected, data_range=1.0) >= INT8_AGREEMENT_DB


def test_rejects_widths_xnnpack_cannot_pack_and_mismatched_levels():
    with pytest.raises(ValueError, match="multiples of 8"):
        build_student(widths=(12, 32, 64))
    with pytest.raises(ValueError, match="same"):
        build_student(widths=(16, 32), blocks=(1, 1, 2))


def test_stages_in_order_with_their_inputs(student):
    assert stage_names(student) == ["enc1", "enc2", "enc3", "bottleneck", "dec3", "dec2", "dec1", "head"]
    wiring = stage_inputs(student)
    assert wiring["enc1"] == ["image"] and wiring["bottleneck"] == ["enc3"]
    assert wiring["dec3"] == ["bottleneck", "enc3"] and wiring["dec1"] == ["dec2", "enc1"]
    assert wiring["head"] == ["dec1", "image"]
    stages = stage_models(student)
    assert [s.output.shape[-1] for s in stages.values()] == [16, 32, 64, 64, 32, 16, 16, 3]
    assert [t.shape[-1] for t in stages["dec2"].inputs] == [32, 32]


@pytest.mark.parametrize("preset", [None, "rpi5"])
def test_chained_stage_models_reproduce_the_whole_model(student, preset):
    student = student if preset is None else _with_random_head(STUDENTS[preset].build())
    x = np.random.default_rng(2).random((2, 64, 96, 3), dtype=np.float32)
    whole = np.asarray(student(x))
    chained = np.asarray(run_stages(student, stage_models(student), x))
    assert np.abs(whole - x).max() > 1e-2  # the correction is not zero, so the check has teeth
    np.testing.assert_allclose(chained, whole, atol=1e-5, rtol=0)


def test_stage_models_leave_everything_serialisable(student):
    stages = stage_models(student)
    student.get_config()  # cutting a model at intermediate tensors would break this
    for stage in stages.values():
        assert keras.Model.from_config(stage.get_config()).count_params() == stage.count_params()


def test_narrower_student_has_fewer_macs_and_parameters(student):
    narrow = build_student(widths=(8, 16, 32))
    assert student_widths(narrow) == (8, 16, 32) and student_widths(student) == (16, 32, 64)
    assert student_macs(narrow) < 0.5 * student_macs(student)
    assert narrow.count_params() < 0.5 * student.count_params()
    copy = build_student(student_widths(student), *student_blocks(student))
    assert copy.count_params() == student.count_params()
    assert multiple_of(student) == 16


def test_presets_prune_to_their_target_and_the_teacher_rule():
    """Each target's starting student, pruned by the converter's rule, fits the target's MAC budget
    and a tenth of the teacher's MACs, with every level still at least 16 channels wide."""
    from converters.prune import choose_widths

    config = TrainConfig()  # the teacher as it is trained
    teacher = build_teacher(width=config.width, enc_blocks=config.enc_blocks, middle_blocks=config.middle_blocks,
                            dec_blocks=config.dec_blocks)
    teacher_macs = count_macs(teacher, 480, 640)
    for name, spec in STUDENTS.items():
        model = spec.build()
        budget = min(load_target(name).mac_budget, teacher_macs // 10)
        importance = {g: np.ones(64) for g in ("L1", "L2", "L3", "B")}
        plan = choose_widths(model, importance, budget)
        assert plan.base_macs == student_macs(model)
        assert plan.macs <= budget < plan.base_macs, name  # pruning has work to do, and gets under
        assert plan.macs == student_macs(replace(spec, widths=plan.widths).build()), name
        assert min(plan.widths) >= 16, name


def test_int8_model_has_only_xnnpack_int8_ops_and_free_size(int8_student):
    ops = tflite_ops(int8_student)
    assert set(ops) <= XNNPACK_INT8_OPS, f"ops outside XNNPACK's INT8 set: {set(ops) - XNNPACK_INT8_OPS}"
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE"} <= set(ops)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(int8_student))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(inp["shape_signature"]) == [1, -1, -1, 3]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8


def test_litert_export_folds_the_stem_and_changes_no_value(student, int8_student, blurred, tmp_path):
    """The LiteRT form of the student (stem as SPACE_TO_DEPTH + 1x1 convolution) computes the same
    map: in float, and in INT8 after the same calibration, pixel for pixel."""
    folded = litert_student(student)
    assert folded.get_layer("enc1_stem").kernel.shape == (1, 1, 12, 16)
    assert student_macs(folded) == student_macs(student)
    np.testing.assert_allclose(np.asarray(folded(blurred[None])), np.asarray(student(blurred[None])), atol=1e-6)
    path = quantize_int8(folded, representative_crops(count=16, crop=128), tmp_path / "folded.tflite", tile=(128, 128))
    assert tflite_ops(path)[0] == "SPACE_TO_DEPTH" and "SPACE_TO_DEPTH" not in tflite_ops(int8_student)
    assert tflite_macs(path, 480, 640) == tflite_macs(int8_student, 480, 640)
    got, expected = (Deblurrer.load(p, threads=2)(np.rint(blurred * 255).astype(np.uint8)) for p in (path, int8_student))
    np.testing.assert_array_equal(got, expected)


def test_int8_agrees_with_its_float_twin_on_a_real_photo(student, int8_student, blurred):
    expected = np.asarray(student(blurred[None]))[0]
    got = Deblurrer.load(int8_student, threads=2).infer(blurred)
    assert got.shape == blurred.shape
    assert psnr(expected, blurred, data_range=1.0) < INT8_AGREEMENT_DB - 5  # a real correction to get right
    assert psnr(got, expected, data_range=1.0) >= INT8_AGREEMENT_DB


def test_macs_read_from_the_tflite_match_the_keras_count(student, int8_student):
    assert tflite_macs(int8_student, 480, 640) == student_macs(student, 480, 640)


def _expected_latency_script():
    spec = importlib.util.spec_from_file_location("expected_latency", ROOT / "benchmarks" / "expected_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mobilenet_v2_reference_builds_runs_and_scales(int8_student, capsys):
    mobilenet = mobilenet_v2_tflite()  # built once, then cached under .cache/
    assert set(tflite_ops(mobilenet)) == XNNPACK_INT8_OPS - {"DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "MUL"} | {"FULLY_CONNECTED", "SOFTMAX"}
    assert tflite_macs(mobilenet, *MOBILENET_V2_SHAPE[1:3]) == pytest.approx(MOBILENET_V2_MACS, rel=0.01)  # as published
    timing = time_side_by_side({"mobilenet_v2": (mobilenet, MOBILENET_V2_SHAPE)}, threads=2, rounds=3, warmup=1)
    assert timing.medians_ms["mobilenet_v2"] > 0
    assert expected_ms(10.0, 4.0, 22.0) == pytest.approx(55.0)

    result = _expected_latency_script().main(
        ["--student", str(int8_student), "--threads", "2", "--rounds", "2", "--targets", "rpi5", "jetson-orin"])
    here = result["here_ms"]
    rpi5 = load_target("rpi5").reference.mobilenet_ms
    assert result["expected_ms"]["rpi5"] == pytest.approx(here["student"] * rpi5 / here["mobilenet_v2"])
    table = capsys.readouterr().out
    assert "| rpi5 | int8 |" in table and "| jetson-orin | fp16 |" in table


def _student_variants_script():
    spec = importlib.util.spec_from_file_location("student_variants", ROOT / "benchmarks" / "student_variants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_student_variants_benchmark_starts_from_the_shipped_family():
    """The variant sweep's baseline is the rpi5 student itself (same layers, same arithmetic), and
    each variant changes only what it says: its MACs differ from the baseline's by its own layers."""
    variants = _student_variants_script()
    shipped = STUDENTS["rpi5"].build()
    base = variants.build(variants.BASE)
    assert [layer.name for layer in base.layers if layer.weights] == [layer.name for layer in shipped.layers if layer.weights]
    rng = np.random.default_rng(0)
    for layer in shipped.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in layer.get_weights()])
            base.get_layer(layer.name).set_weights(layer.get_weights())
    x = rng.uniform(0, 1, (1, 64, 96, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(base(x)), np.asarray(shipped(x)), atol=1e-6)

    h, w = 480, 640
    base_macs = count_macs(variants.build(variants.SWEEP), h, w)  # the sweep's variants start without attention
    assert count_macs(base, h, w) > base_macs
    # a 3x3 head: 12 x 16 x (9 - 1) more MACs per half-resolution pixel; a full-resolution refinement
    # of 8 channels: 3x3x3x8 + 3x3x8x3 per pixel
    assert count_macs(variants.build(variants.VARIANTS["head3x3"]), h, w) - base_macs == 12 * 16 * 8 * (h // 2) * (w // 2)
    assert count_macs(variants.build(variants.VARIANTS["fullres-refine8"]), h, w) - base_macs == 2 * 9 * 3 * 8 * h * w
    for name, variant in variants.VARIANTS.items():
        model = variants.build(variant)
        if not variant.tail:  # zero-initialised last layers: every such variant starts as the identity
            np.testing.assert_allclose(np.asarray(model(x)), x, atol=1e-6, err_msg=name)
