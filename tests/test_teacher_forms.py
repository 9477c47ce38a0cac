"""Teachers as users export them (issue 16): fixed-size ONNX from tf2onnx (NHWC and NCHW), float
and INT8 TFLite, SavedModel folders, in each value convention (0-1, 0-255, x/127.5-1, MEAN/STD);
a weak and a near-identity teacher; sizes a teacher cannot take; the value range in the
conversion's fingerprint.

Every teacher is one small residual CNN trained here for real (``tests/teachers.py``) behind its
convention, so each form must give back the trained network's own output on real crops.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytestmark = [pytest.mark.convert, pytest.mark.slow]

import keras  # noqa: E402

import teachers as T  # noqa: E402
from converters.ranges import ACTIVE, AMBIGUOUS_DB, parse_input_range  # noqa: E402
from converters.sources import load_teacher_source  # noqa: E402
from edge_deblur.cli import main  # noqa: E402
from edge_deblur.errors import ModelError  # noqa: E402

NAMED = ("0-1", "0-255", "-1-1")
TILE = 64  # the fixed teachers' input side: windows of 64 overlapping by 32 keep 8 px around each pixel


@pytest.fixture(scope="module")
def inner():
    """The trained residual CNN in [0, 1] (300 steps: +0.17 dB on the validation crops, measured)."""
    # seed 1: with seed 0 the CPU kernels of one host trained a network that reads as well under
    # -1-1 as under its own 0-1 (margin +0.00 dB, rightly called ambiguous); seed 1 passes there (not yet run on another host)
    return T.train_inner(300, seed=1)


@pytest.fixture(scope="module")
def weak():
    """The same network after 15 steps: it barely deblurs (-0.02 dB on the validation crops)."""
    return T.train_inner(15)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture(scope="module")
def image(photo) -> np.ndarray:
    """A real 160x208 crop of a Kodak photo in [0, 1]: several 64-pixel windows each way."""
    return photo[100:260, 120:328].astype(np.float32)[None] / 255.0


def _keras_file(model, path: Path) -> Path:
    model.save(path)
    return path


@pytest.mark.parametrize("convention", NAMED)
def test_detection_picks_each_convention_with_a_margin(inner, folder, convention, capsys):
    """A fixed-size float TFLite teacher in each named convention: detected with a clear margin.
    Measured: 0-1 +0.23 dB over -1-1; 0-255: -1-1 saturates (no image); -1-1 +0.26 dB over 0-255."""
    path = T.tflite(T.wrapped(inner, convention, (TILE, TILE)), folder / f"good_{convention}.tflite")
    teacher = load_teacher_source(path)
    assert (teacher.kind, teacher.layout, teacher.fixed_size) == ("tflite", "NHWC", (TILE, TILE))
    assert teacher.value_range == convention and teacher.range_decided == "detected"
    detection = teacher.detection
    assert not detection["ambiguous"] and "warning" not in capsys.readouterr().err
    assert detection["margin"] is None or detection["margin"] > AMBIGUOUS_DB
    chosen = next(c for c in detection["candidates"] if c["name"] == convention)
    assert chosen["verdict"] == "active image" and chosen["gain_db"] > 0.1


def test_weak_teacher_is_reported_ambiguous(weak, folder, capsys):
    """A teacher that barely deblurs: under its own range (x/127.5-1) and under 0-255 it gives
    images of about the same small gain (measured 0.01 dB apart), so detection warns and asks."""
    path = T.tflite(T.wrapped(weak, "-1-1", (TILE, TILE)), folder / "weak.tflite")
    teacher = load_teacher_source(path)
    assert teacher.detection["ambiguous"]
    err = capsys.readouterr().err
    assert "warning" in err and "ambiguous" in err and "--input-range" in err
    # Stated, it is taken as given and the output is the weak network's own.
    stated = load_teacher_source(path, "-1-1")
    assert stated.range_decided == "stated (--input-range)" and stated.detection is None


def test_near_identity_teacher_is_ambiguous(inner, folder):
    """A teacher whose correction is a thousandth of the trained one changes its input by less
    than half a grey level under every convention: ambiguous by nature, and said so."""
    near = keras.models.clone_model(inner)
    near.set_weights(inner.get_weights())
    kernel, bias = near.get_layer("correction").get_weights()
    near.get_layer("correction").set_weights([kernel * 1e-3, bias * 1e-3])
    teacher = load_teacher_source(_keras_file(T.wrapped(near, "-1-1"), folder / "near.keras"))
    detection = teacher.detection
    assert detection["ambiguous"] and "less than half a grey level" in detection["summary"]
    assert all(c["change_rms"] < ACTIVE for c in detection["candidates"] if c["verdict"] == "inactive")


def test_mean_std_teacher_stated_by_flag_and_by_sidecar(inner, folder, image):
    """(x - 0.45) / 0.225 is no named convention: stated, the teacher gives the trained network's
    output (float32 rescaling both ways: measured 5e-7; 1e-5 allowed)."""
    path = _keras_file(T.wrapped(inner, "0.45,0.225"), folder / "meanstd.keras")
    expected = np.asarray(inner(image))
    teacher = load_teacher_source(path, "0.45,0.225")
    assert teacher.value_range == "0.45,0.225" and teacher.range_decided == "stated (--input-range)"
    np.testing.assert_allclose(teacher.predict(image), expected, atol=1e-5)
    path.with_suffix(".json").write_text(json.dumps({"input_range": "0.45,0.225"}))
    by_sidecar = load_teacher_source(path)
    assert by_sidecar.range_decided == "stated (sidecar)"
    np.testing.assert_allclose(by_sidecar.predict(image), expected, atol=1e-5)
    # The flag wins over the sidecar.
    assert load_teacher_source(path, "0-255").value_range == "0-255"


def test_parse_input_range():
    assert parse_input_range("-1-1").scale == (2.0,) * 3
    r = parse_input_range("0.5,0.25")
    np.testing.assert_allclose(r.to_model(np.array([0.5, 1.0], np.float32)[:, None]), [[0.0] * 3, [2.0] * 3])
    per_channel = parse_input_range("0.485,0.456,0.406,0.229,0.224,0.225")
    assert per_channel.offset[0] == pytest.approx(-0.485 / 0.229)
    for bad in ("2-3", "0.5", "0.5,0", "a,b", "1,2,3"):
        with pytest.raises(ModelError, match="input-range|STD"):
            parse_input_range(bad)


def test_bad_input_range_flag_is_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "--target", "rpi5", "--quick", "-o", str(out), "--input-range", "0-2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "0-2" in err and "Traceback" not in err
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# Fixed sizes: windows of the teacher's own size, blended, against one run of the whole image


@pytest.fixture(scope="module")
def dynamic_tflite(inner, folder) -> Path:
    return T.tflite(T.wrapped(inner, "-1-1"), folder / "dynamic.tflite")


@pytest.fixture(scope="module")
def fixed_tflite(inner, folder) -> Path:
    return T.tflite(T.wrapped(inner, "-1-1", (TILE, TILE)), folder / "fixed.tflite")


def test_fixed_size_windows_match_a_whole_run(dynamic_tflite, fixed_tflite, image):
    """The network's receptive radius is 3 px, under the 8 px each window keeps around the pixels
    taken from it, so the blended windows give the whole-image result to float rounding (measured
    max 6e-8; 1e-5 allowed), on a frame of 4x5 windows and on one smaller than a window."""
    whole = load_teacher_source(dynamic_tflite, "-1-1")
    tiled = load_teacher_source(fixed_tflite, "-1-1")
    assert whole.fixed_size is None and tiled.fixed_size == (TILE, TILE) and tiled.overlap == TILE // 2
    np.testing.assert_allclose(tiled.predict(image), whole.predict(image), atol=1e-5)
    small = image[:, :40, :50]  # reflect-padded to one 64x64 window: equal away from the padded edges
    out = tiled.predict(small)
    assert out.shape == small.shape
    np.testing.assert_allclose(out[:, :-3, :-3], whole.predict(small)[:, :-3, :-3], atol=1e-5)


def test_fixed_size_keras_teacher(inner, folder, image):
    """A ``.keras`` model with a fixed 1x64x64x3 input: windows too, no hint features (they would
    be the windows', not the image's), MACs per 640x480 frame from the per-window count."""
    teacher = load_teacher_source(_keras_file(T.wrapped(inner, "0-1", (TILE, TILE)), folder / "fixed.keras"))
    assert (teacher.kind, teacher.fixed_size, teacher.value_range) == ("keras", (TILE, TILE), "0-1")
    assert teacher.predict_features is None
    assert teacher.macs == pytest.approx(3168 * 640 * 480, rel=0.01)
    np.testing.assert_allclose(teacher.predict(image), np.asarray(inner(image)), atol=1e-5)


def test_fixed_onnx_from_tf2onnx_nhwc_and_nchw(fixed_tflite, folder, image):
    """The user's route: ``python -m tf2onnx.convert --tflite`` on a fixed 1x64x64x3 model, and the
    same with tf2onnx's NCHW input and output. Both are run on 64x64 windows, detected as -1-1
    and agree with the TFLite teacher (onnxruntime against XNNPACK float: measured 1e-6)."""
    reference = load_teacher_source(fixed_tflite, "-1-1").predict(image)
    for nchw in (False, True):
        path = T.onnx_from_tflite(fixed_tflite, folder / f"fixed_{'nchw' if nchw else 'nhwc'}.onnx", nchw=nchw)
        teacher = load_teacher_source(path)
        assert (teacher.kind, teacher.layout, teacher.fixed_size) == ("onnx", "NCHW" if nchw else "NHWC", (TILE, TILE))
        assert teacher.value_range == "-1-1" and not teacher.detection["ambiguous"]
        assert teacher.macs == pytest.approx(3168 * 640 * 480, rel=0.01)  # (27*16 + 144*16 + 144*3) per pixel
        np.testing.assert_allclose(teacher.predict(image), reference, atol=1e-5)


def test_int8_tflite_teacher(inner, folder, image):
    """Full INT8 (int8 in and out), calibrated on real crops in its own range: the teacher
    quantizes its input and dequantizes its output with the model's parameters, the range is
    still detected, and it stays within INT8 rounding of the float network (measured mean
    |difference| 0.005, max 0.16 at a few edge pixels)."""
    blurred, _ = T.training_pairs(count=16, crop=TILE, seed=3)
    model = T.wrapped(inner, "-1-1", (TILE, TILE))
    path = T.tflite(model, folder / "int8.tflite", representative=blurred * 2 - 1)
    teacher = load_teacher_source(path)
    assert teacher.kind == "tflite (int8)" and teacher.value_range == "-1-1"
    out = teacher.predict(image)
    assert out.shape == image.shape
    assert float(np.abs(out - np.asarray(inner(image))).mean()) < 0.01


def test_savedmodel_teacher(inner, folder, image):
    path = T.savedmodel(T.wrapped(inner, "0-255"), folder / "saved")
    teacher = load_teacher_source(path)
    assert (teacher.kind, teacher.layout, teacher.fixed_size, teacher.value_range) == ("savedmodel", "NHWC", None, "0-255")
    assert teacher.macs == pytest.approx(3168 * 640 * 480, rel=0.01)
    np.testing.assert_allclose(teacher.predict(image), np.asarray(inner(image)), atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Sizes a teacher cannot take: a clear error, never a traceback


def _onnx(path: Path, nodes, in_shape, out_shape, initializers=()) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_sizes_a_teacher_cannot_take(tmp_path, capsys):
    from onnx import helper, numpy_helper

    identity = [helper.make_node("Identity", ["x"], ["y"])]
    tiny = _onnx(tmp_path / "tiny.onnx", identity, [1, 16, 16, 3], [1, 16, 16, 3])
    with pytest.raises(ModelError, match="fixed at 16x16, too small"):
        load_teacher_source(tiny)
    half = _onnx(tmp_path / "half.onnx", identity, [1, 64, "W", 3], [1, 64, "W", 3])
    with pytest.raises(ModelError, match="fixes one side only"):
        load_teacher_source(half)
    # A strided convolution and nothing to bring the size back: its output is not its input's size.
    k = numpy_helper.from_array(np.full((3, 3, 2, 2), 0.25 / 3, np.float32), "k")
    shrink = _onnx(tmp_path / "shrink.onnx", [helper.make_node("Conv", ["x", "k"], ["y"], strides=[2, 2])],
                   [1, 3, "H", "W"], [1, 3, "h", "w"], [k])
    with pytest.raises(ModelError, match="gives a .* output.*of its input's size"):
        load_teacher_source(shrink, "0-1")
    out = tmp_path / "out"
    assert main(["convert", "--teacher", str(shrink), "--target", "rpi5", "--quick", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(shrink) in err and "Traceback" not in err
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# The range in the conversion's fingerprint, in place and through --reuse


def test_a_changed_range_redoes_the_data_in_place_and_through_reuse(inner, folder, tmp_path, capsys):
    from converters.convert import Conversion, ConvertConfig

    path = _keras_file(T.wrapped(inner, "-1-1"), folder / "pm1.keras")
    quick = dict(teacher=str(path), target="rpi5", crops=8, finetune_crops=4)
    first = Conversion(ConvertConfig.quick_config(out=str(tmp_path / "a"), input_range="-1-1", **quick))
    assert first.mac_budget() == 159_822_336  # a tenth of 973M is below the smallest student: that one
    fp_first, _ = first.data()
    again = Conversion(ConvertConfig.quick_config(out=str(tmp_path / "a"), input_range="-1-1", **quick))
    assert again.data()[0] == fp_first and "[data] done earlier" in capsys.readouterr().err
    other = Conversion(ConvertConfig.quick_config(out=str(tmp_path / "a"), input_range="0-255", **quick))
    fp_other, _ = other.data()
    err = capsys.readouterr().err
    assert fp_other != fp_first and "[data] done earlier" not in err and "[data] done in" in err
    taken = Conversion(ConvertConfig.quick_config(out=str(tmp_path / "b"), input_range="-1-1", reuse=str(tmp_path / "a"), **quick))
    taken.data()  # the folder now holds the 0-255 set: nothing to take for -1-1
    assert "[data] taken from" not in capsys.readouterr().err
    same = Conversion(ConvertConfig.quick_config(out=str(tmp_path / "c"), input_range="0-255", reuse=str(tmp_path / "a"), **quick))
    assert same.data()[0] == fp_other and "[data] taken from" in capsys.readouterr().err


def test_quick_conversion_of_a_fixed_size_tflite_teacher(fixed_tflite, tmp_path, capsys):
    """The whole chain on a fixed 64x64 TFLite teacher in x/127.5-1, as a user runs it: the range is
    detected, every teacher run goes through 64x64 windows (data, validation, the latency on a
    640x480 frame), and the card and report say so. The teacher (973M MACs) is too small for a
    student with 10x fewer MACs: the smallest student is made and the 10x check fails, saying by
    how much."""
    out = tmp_path / "fixed"
    assert main(["convert", "--teacher", str(fixed_tflite), "--target", "rpi5", "--quick", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "value range detected: -1-1" in captured.err and "fixed 64x64 input" in captured.err
    assert "below the smallest student (160M" in captured.err
    card = json.loads((out / "model_card.json").read_text())
    teacher = card["teacher"]
    assert (teacher["kind"], teacher["fixed_size"], teacher["overlap"], teacher["value_range"],
            teacher["range_decided"]) == ("tflite", [TILE, TILE], TILE // 2, "-1-1", "detected")
    assert card["student"]["widths"] == [16, 16, 16]
    ten_x = next(c for c in card["checks"] if "10x" in c["name"])
    assert not ten_x["passed"] and "160M vs 973M" in ten_x["detail"]
    rows = {r["method"]: r for r in card["quality"]["rows"]}
    assert rows["teacher"]["latency_ms_here"] > 0 and rows["teacher"]["expected_ms"] is None  # fixed: not on LiteRT's frame
    assert teacher["timing"] == "tflite runtime on this host"
    md = (out / "report.md").read_text()
    assert "fixed input 64x64, run on windows of that size overlapping by 32 px, values -1-1 (detected: -1-1" in md
    svg = (out / "quality_latency.svg").read_text()
    assert "teacher " in svg and "(latency on this host)" in svg
