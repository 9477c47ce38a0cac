"""Teachers of every origin (``converters.distill.load_teacher_source``) and what ``edge-deblur
convert`` does with bad input.

A teacher can be the bundled Keras NAFNet, a user's ``.keras`` file or an ``.onnx`` file, in NHWC or
NCHW, expecting values in [0, 1], [0, 255] or [-1, 1]. Whatever it is, the distiller sees it as a
function of NHWC float32 RGB in [0, 1]. The foreign teachers here are the bundled teacher itself in
other clothes (a transposed, rescaled ONNX graph; a rescaled Keras model), so each must give back
the bundled teacher's output, on real photo crops, to float rounding. Anything that is not an
image-to-image model is refused with a ``ModelError`` that names the problem, before ``convert``
writes anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.convert

import keras  # noqa: E402

from converters.distill import (  # noqa: E402
    PROBE_HW, VALUE_RANGES, Tensor, _onnx_bottleneck, _onnx_macs, bottleneck, detect_value_range, load_teacher_source)
from converters.teacher import build_teacher  # noqa: E402
from edge_deblur.cli import main  # noqa: E402
from edge_deblur.errors import ModelError  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "edge_deblur" / "models"
TEACHER_ONNX = BUNDLE / "teacher.onnx"
TEACHER_MACS = 6.776e9  # per 640x480 frame: 22057 MACs per pixel (teacher.json's macs_per_pixel)
TARGETS = ("rpi4", "rpi5", "jetson-orin", "x86")


# ----------------------------------------------------------------------------------------------
# Fixtures: the bundled teacher (loaded once), real crops, foreign teachers built from the bundle


@pytest.fixture(scope="module")
def bundled():
    return load_teacher_source("teacher")


@pytest.fixture(scope="module")
def crops(photo) -> np.ndarray:
    """Two real 128x128 crops of a Kodak photo (textured areas), float32 in [0, 1]."""
    x = np.stack([photo[100:228, 100:228], photo[250:378, 300:428]]).astype(np.float32) / 255.0
    assert x.std() > 0.05  # not a flat patch
    return x


@pytest.fixture(scope="module")
def expected(bundled, crops) -> np.ndarray:
    """The bundled teacher's restoration of the crops: what every disguised teacher must give back."""
    return bundled.predict(crops)


def _wrapped_onnx(path: Path, layout: str, value_range: str) -> Path:
    """The bundled teacher.onnx inside a graph that takes and gives ``layout`` images in
    ``value_range``: x -> [Transpose NCHW->NHWC] -> (x - offset) / scale -> teacher -> y * scale +
    offset -> [Transpose NHWC->NCHW]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(TEACHER_ONNX))
    graph = model.graph
    (old_in,), (old_out,) = graph.input, graph.output
    scale, offset = VALUE_RANGES[value_range]
    shape = [1, 3, "H", "W"] if layout == "NCHW" else [1, "H", "W", 3]
    pre = [helper.make_node("Transpose", ["x"], ["x_nhwc"], perm=[0, 2, 3, 1])] if layout == "NCHW" else []
    pre += [helper.make_node("Sub", [pre[0].output[0] if pre else "x", "wrap_offset"], ["x_shifted"]),
            helper.make_node("Mul", ["x_shifted", "wrap_inv_scale"], [old_in.name])]
    post = [helper.make_node("Mul", [old_out.name, "wrap_scale"], ["y_scaled"]),
            helper.make_node("Add", ["y_scaled", "wrap_offset"], ["y_nhwc" if layout == "NCHW" else "y"])]
    if layout == "NCHW":
        post.append(helper.make_node("Transpose", ["y_nhwc"], ["y"], perm=[0, 3, 1, 2]))
    nodes = [*pre, *graph.node, *post]  # stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), name) for name, v in
                              (("wrap_offset", offset), ("wrap_scale", scale), ("wrap_inv_scale", 1.0 / scale))])
    del graph.input[:], graph.output[:]
    graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, shape))
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, shape))
    onnx.checker.check_model(model)  # same opset and ir_version as the bundled export
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def nchw_255_onnx(tmp_path_factory) -> Path:
    return _wrapped_onnx(tmp_path_factory.mktemp("onnx") / "nchw255.onnx", "NCHW", "0-255")


def _onnx_classifier(path: Path) -> Path:
    """Conv + GlobalAveragePool + Flatten + Gemm: an NCHW image in, ten class scores out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["image", "k"], ["features"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 3, 3)).astype(np.float32), "k"),
         numpy_helper.from_array(rng.normal(0, 0.1, (8, 10)).astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _corrupt_onnx(path: Path, kind: str) -> Path:
    if kind == "truncated":
        path.write_bytes(TEACHER_ONNX.read_bytes()[:1000])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        path.write_bytes(b"")
    return path


# ----------------------------------------------------------------------------------------------
# The bundled teacher and its ONNX export


def test_bundled_teacher(bundled, crops, expected):
    assert (bundled.kind, bundled.layout, bundled.value_range, bundled.multiple) == ("bundled", "NHWC", "0-1", 8)
    assert bundled.macs == pytest.approx(TEACHER_MACS, rel=0.01)
    assert bundled.source == "teacher" and len(bundled.fingerprint) == 64
    assert expected.shape == crops.shape and expected.dtype == np.float32 and np.all(np.isfinite(expected))
    # A deblurrer corrects its input a little: on these (sharp) crops the bundled teacher changes
    # them by 0.031 on average (measured; it sharpens edges further). Under 1e-3 would be an
    # untrained (identity) teacher; a teacher fed the wrong value range is off by far more than 0.05.
    change = float(np.abs(expected - crops).mean())
    assert 1e-3 < change < 0.05
    restored, features = bundled.predict_features(crops)
    assert features.shape == (2, 16, 16, 128)  # the bottleneck: 1/8 resolution, 16 * 2**3 channels
    assert np.all(np.isfinite(features)) and features.std() > 0
    np.testing.assert_allclose(restored, expected, atol=1e-6)  # the same pass, not another model


def test_bundled_onnx_export_as_teacher(bundled, crops, expected):
    teacher = load_teacher_source(TEACHER_ONNX)
    assert (teacher.kind, teacher.layout, teacher.value_range) == ("onnx", "NHWC", "0-1")
    assert teacher.multiple == 8  # from the sidecar teacher.json next to it
    out = teacher.predict(crops)
    assert out.shape == crops.shape
    # The same float32 maths in onnxruntime and TensorFlow: measured 3e-7 apart, 300x under 1e-4.
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_onnx_teacher_gives_the_same_hint_features_as_keras(bundled, crops):
    """The export keeps its convolutions in NCHW inside (tf2onnx): the bottleneck is found by shape
    inference (the last residual addition at 1/8), turned back to NHWC and equals the Keras
    teacher's ``middle_3_res2`` output (measured 1.6e-6 apart)."""
    import onnx

    name, perm = _onnx_bottleneck(onnx.load(str(TEACHER_ONNX)), "NHWC")
    assert "middle_3_res2" in name and perm == (0, 2, 3, 1)
    restored, features = load_teacher_source(TEACHER_ONNX).predict_features(crops)
    keras_restored, keras_features = bundled.predict_features(crops)
    assert features.shape == keras_features.shape == (2, 16, 16, 128)
    np.testing.assert_allclose(features, keras_features, atol=1e-4)
    np.testing.assert_allclose(restored, keras_restored, atol=1e-4)


def test_bottleneck_is_the_last_residual_addition_at_the_lowest_resolution():
    h, w = PROBE_HW
    t = lambda name, stride, add=False, nchw=False, c=8: Tensor(
        name, (1, c, h // stride, w // stride) if nchw else (1, h // stride, w // stride, c), add)
    unet = [t("enc", 2, True), t("down", 4), t("mid0", 4, True), t("mid1", 4, True), t("up", 4, c=32),
            t("dec", 2, True), t("out", 1, True)]
    assert bottleneck(unet) == ("mid1", (0, 1, 2, 3))
    assert bottleneck([t("down", 8, nchw=True), t("up", 8, nchw=True, c=32)]) == ("up", (0, 2, 3, 1))
    assert bottleneck([t("conv1", 1), t("conv2", 1, True)]) is None  # nothing to hint


def test_onnx_teacher_macs_match_the_keras_count(bundled):
    """Convolutions after the decoder's depth-to-space (a Reshape of a computed shape) count too.
    The export has exactly the Keras model's 74 convolutions, so the counts agree (2% for rounding)."""
    assert _onnx_macs(TEACHER_ONNX, "NHWC") == pytest.approx(bundled.macs, rel=0.02)


# ----------------------------------------------------------------------------------------------
# Foreign teachers: other layouts and value ranges


def test_nchw_0_255_onnx_teacher(nchw_255_onnx, crops, expected):
    teacher = load_teacher_source(nchw_255_onnx)
    assert (teacher.kind, teacher.layout, teacher.value_range) == ("onnx", "NCHW", "0-255")
    assert teacher.predict_features(crops)[1].shape == (2, 16, 16, 128)  # NHWC, whatever the model's layout
    out = teacher.predict(crops)  # NHWC [0, 1] in and out, whatever the model wants
    assert out.shape == crops.shape
    # x * 255 then * (1/255) in the graph, and back: a few float32 ulps (~1e-7) on top of the
    # export's own 3e-7 (measured in all: 3.6e-7); 1e-4 is far above that and far below any real
    # disagreement (a wrong range or layout is off by 0.1 and more).
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_nchw_onnx_teacher_macs(nchw_255_onnx, bundled):
    """The MAC count fixes the input at 480x640 in the model's own layout (here [1, 3, 480, 640])."""
    assert _onnx_macs(nchw_255_onnx, "NCHW") == pytest.approx(bundled.macs, rel=0.02)


def test_onnx_teacher_in_minus_one_to_one(tmp_path, crops, expected):
    teacher = load_teacher_source(_wrapped_onnx(tmp_path / "pm1.onnx", "NHWC", "-1-1"))
    assert (teacher.layout, teacher.value_range) == ("NHWC", "-1-1")
    np.testing.assert_allclose(teacher.predict(crops), expected, atol=1e-4)  # measured 3e-7, as above


def test_onnx_sidecar_input_range_minus_one_to_one(tmp_path, crops, expected):
    """A sidecar's ``input_range`` is taken as given (no detection), [-1, 1] included."""
    path = _wrapped_onnx(tmp_path / "pm1.onnx", "NHWC", "-1-1")
    path.with_suffix(".json").write_text(json.dumps({"input_range": [-1, 1], "multiple": 8}))
    teacher = load_teacher_source(path)
    assert teacher.value_range == "-1-1"
    np.testing.assert_allclose(teacher.predict(crops), expected, atol=1e-4)


@pytest.fixture(scope="module")
def keras_minus_one_to_one(tmp_path_factory):
    """The bundled Keras teacher behind (x + 1) / 2 and 2y - 1, saved as a .keras file, and that
    file loaded as a teacher."""
    architecture = json.loads((BUNDLE / "teacher.json").read_text())["architecture"]
    inner = build_teacher(**architecture)
    inner.load_weights(BUNDLE / "teacher.weights.h5")
    x = keras.Input((None, None, 3), name="image")
    y = keras.layers.Rescaling(2.0, -1.0, name="to_pm1")(inner(keras.layers.Rescaling(0.5, 0.5, name="to_01")(x)))
    path = tmp_path_factory.mktemp("keras") / "pm1.keras"
    keras.Model(x, y, name="pm1_teacher").save(path)
    return path, load_teacher_source(path)


def test_keras_teacher_in_minus_one_to_one(keras_minus_one_to_one, crops, expected):
    path, teacher = keras_minus_one_to_one
    assert (teacher.kind, teacher.layout, teacher.value_range) == ("keras", "NHWC", "-1-1")
    assert teacher.source == str(path)
    # The same TensorFlow kernels on the same values, rescaled twice: measured 2e-7 apart.
    np.testing.assert_allclose(teacher.predict(crops), expected, atol=1e-4)


def test_keras_teacher_wrapping_a_model_counts_its_macs(keras_minus_one_to_one, bundled):
    """A user's teacher is often a model nested in a pre/post-processing wrapper: its MACs and its
    stride (height and width multiple of 8) are those of the model inside."""
    _, teacher = keras_minus_one_to_one
    assert teacher.multiple == 8
    assert teacher.macs == pytest.approx(bundled.macs, rel=0.01)
    # Its bottleneck is inside the nested model, out of reach of the outer graph: no hint, and
    # distillation runs on the output and ground-truth losses alone.
    assert teacher.predict_features is None


def test_detect_value_range_recovers_each_convention():
    rng = np.random.default_rng(0)
    sharp = rng.uniform(0.1, 0.9, (4, 16, 16, 3)).astype(np.float32)
    blurred = np.clip(sharp + rng.normal(0, 0.05, sharp.shape), 0, 1).astype(np.float32)

    def deblurrer(convention):
        """A perfect deblurrer of these crops in ``convention``: reads its input back in [0, 1]
        that way, and returns the sharp crop, also in that convention, where the input matches
        the blurred crops; fed them in another range it returns garbage (its input plus noise)."""
        scale, offset = VALUE_RANGES[convention]

        def run(x):
            if np.allclose((x - offset) / scale, blurred, atol=1e-5):
                return sharp * scale + offset
            return x + rng.normal(0, 0.2 * scale, x.shape).astype(np.float32)

        return run

    for convention in VALUE_RANGES:
        found = detect_value_range(deblurrer(convention), (blurred, sharp))
        assert found.chosen == convention and not found.ambiguous
        # Fed its own range it restores the sharp crops; in the others it gives noisy images, each
        # far from the sharp crops (or saturated): the margin is many dB or a runner-up that is no image.
        assert found.margin is None or found.margin > 3
    identity = detect_value_range(lambda x: x, (blurred, sharp))  # changes nothing under any convention
    assert identity.chosen == "0-1" and identity.ambiguous and "less than half a grey level" in identity.summary
    broken = detect_value_range(lambda x: np.full_like(x, np.nan), (blurred, sharp))
    assert broken.ambiguous and "no image" in broken.summary


# ----------------------------------------------------------------------------------------------
# Bad teachers


@pytest.mark.parametrize("kind", ["truncated", "random", "empty"])
def test_corrupt_onnx_is_refused(tmp_path, kind):
    path = _corrupt_onnx(tmp_path / "broken.onnx", kind)
    with pytest.raises(ModelError, match="not a readable ONNX model") as e:
        load_teacher_source(path)
    assert str(path) in str(e.value)


def test_onnx_classifier_is_refused(tmp_path):
    path = _onnx_classifier(tmp_path / "classifier.onnx")
    with pytest.raises(ModelError) as e:
        load_teacher_source(path)
    message = str(e.value)
    assert str(path) in message and "output" in message and "[1, 10]" in message and "image-to-image" in message


def test_keras_classifier_is_refused(tmp_path):
    x = keras.Input((32, 32, 3))
    y = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(x)))
    path = tmp_path / "classifier.keras"
    keras.Model(x, y).save(path)
    with pytest.raises(ModelError) as e:
        load_teacher_source(path)
    assert "output" in str(e.value) and "10]" in str(e.value) and "image-to-image" in str(e.value)


def test_unreadable_keras_file_is_refused(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(ModelError, match="not a loadable Keras model"):
        load_teacher_source(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_teacher_source(tmp_path / "absent.onnx")


def test_unsupported_format_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02 a pickle, say")
    with pytest.raises(ModelError, match=r"unsupported teacher format '.pt' \(expected a bundled name, .keras, .onnx, .tflite"):
        load_teacher_source(path)


def test_a_folder_that_is_no_savedmodel_is_refused(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="a folder, but not a TensorFlow SavedModel"):
        load_teacher_source(tmp_path / "export")


def test_unknown_bundled_name_is_refused():
    with pytest.raises(ModelError, match="nosuchteacher: no bundled teacher"):
        load_teacher_source("nosuchteacher")


# ----------------------------------------------------------------------------------------------
# The command line: refused before anything is written


def test_convert_unknown_target(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "--target", "nowhere", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and all(name in err for name in TARGETS)
    assert not out.exists()


@pytest.mark.parametrize("teacher, problem", [("corrupt", "not a readable ONNX model"),
                                              ("classifier", "image-to-image")])
def test_convert_refuses_a_bad_teacher_before_writing(tmp_path, capsys, teacher, problem):
    path = (_corrupt_onnx(tmp_path / "corrupt.onnx", "truncated") if teacher == "corrupt"
            else _onnx_classifier(tmp_path / "classifier.onnx"))
    out = tmp_path / "out2"
    assert main(["convert", "--teacher", str(path), "--target", "rpi5", "-o", str(out), "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and problem in err and str(path) in err
    assert "Traceback" not in err
    assert not out.exists()
