"""The runtime on real small models (tests/tiny_models.py) and real photos."""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import tiny_models as tm
from edge_deblur import Deblurrer, ModelError
from edge_deblur.model import onnx_providers, read_sidecar, resolve_model

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def models(tmp_path_factory, photo):
    d = tmp_path_factory.mktemp("models")
    crops = [photo[y : y + 64, x : x + 64].astype(np.float32) / 255 for y in (0, 200, 400) for x in (0, 200, 400)]
    return {
        "identity": tm.identity(d / "identity.tflite"),
        "unsharp": tm.unsharp(d / "unsharp.tflite"),
        "unsharp_int8": tm.unsharp(d / "unsharp_int8.tflite", representative=crops),
        "unsharp_fixed": tm.unsharp(d / "unsharp_fixed.tflite", shape=(1, 96, 96, 3)),
        "unsharp_onnx": tm.unsharp_onnx_nchw(d / "unsharp.onnx"),
        "strided": tm.strided(d / "strided.tflite"),
        "classifier": tm.classifier(d / "classifier.tflite"),
        "two_inputs": tm.two_inputs(d / "two_inputs.tflite"),
    }


def test_reads_layout_quantization_and_range(models):
    f = Deblurrer.load(models["unsharp"]).info
    assert (f.layout, f.channels, f.fixed_size, f.input_quant, f.value_range) == ("NHWC", 3, None, None, 1.0)
    q = Deblurrer.load(models["unsharp_int8"]).info
    assert q.input_dtype == np.int8 and q.input_quant is not None and q.output_quant is not None
    assert q.value_range == 1.0  # int8 with scale ~1/255 and zero point -128 covers [0, 1]
    assert q.input_quant.real_range() == pytest.approx((0.0, 1.0), abs=0.02)
    o = Deblurrer.load(models["unsharp_onnx"]).info
    assert (o.backend, o.layout, o.channels, o.fixed_size) == ("onnxruntime", "NCHW", 3, None)
    assert Deblurrer.load(models["unsharp_fixed"]).info.fixed_size == (96, 96)


def test_float_model_matches_its_reference_away_from_the_border(models, photo):
    x = photo.astype(np.float32) / 255
    out = Deblurrer.load(models["unsharp"])(x)
    ref = np.clip(tm.unsharp_reference(x), 0, 1)
    # inside a 3-pixel band the model sees reflected padding where the reference sees zeros
    np.testing.assert_allclose(out[3:-3, 3:-3], ref[3:-3, 3:-3], atol=1e-5)


@pytest.mark.parametrize("name", ["unsharp", "strided", "unsharp_onnx"])
def test_tiled_and_untiled_agree_within_one_level(models, photo, name):
    """The numerical contract: tiling changes no pixel by more than 1/255."""
    one_pass = Deblurrer.load(models[name], tile=512)
    tiled = Deblurrer.load(models[name], tile=128, overlap=32)
    assert one_pass.plan(*photo.shape[:2]).count == 1 and tiled.plan(*photo.shape[:2]).count == 25
    a = one_pass(photo.astype(np.float32) / 255)
    b = tiled(photo.astype(np.float32) / 255)
    assert np.abs(a - b).max() <= 1 / 255


def test_fixed_size_model_tiles_large_frames_and_pads_small_ones(models, photo):
    fixed, free = Deblurrer.load(models["unsharp_fixed"]), Deblurrer.load(models["unsharp"])
    x = photo.astype(np.float32) / 255
    assert fixed.plan(500, 500).count > 1
    assert np.abs(fixed(x) - free(x))[3:-3, 3:-3].max() <= 1 / 255
    small = x[:40, :50]
    assert fixed(small).shape == small.shape
    assert np.abs(fixed(small) - free(small))[3:-3, 3:-3].max() <= 1 / 255


def test_int8_model_stays_close_to_its_float_twin(models, photo):
    f = Deblurrer.load(models["unsharp"])(photo)
    q = Deblurrer.load(models["unsharp_int8"])(photo)
    mse = np.mean((f.astype(float) - q.astype(float)) ** 2)
    # 8-bit activations of a sharpening filter: errors of a few levels, PSNR well above 35 dB
    assert 10 * np.log10(255**2 / mse) > 35


@pytest.mark.parametrize("model", ["unsharp_int8", "student-rpi5"])
def test_8bit_lookup_path_gives_exactly_the_float_path(models, photo, model):
    """8-bit frames through an INT8 model go through lookup tables (``Deblurrer._deblur_u8``); the
    result must be bit-identical to the general path it replaces, tiled, gray, RGBA and odd sizes."""
    fast = Deblurrer.load(models.get(model, model), threads=2, tile=128 if model == "unsharp_int8" else None)
    general = Deblurrer.load(models.get(model, model), threads=2, tile=128 if model == "unsharp_int8" else None)
    general._tables = None
    rgba = np.dstack([photo, np.full(photo.shape[:2], 200, np.uint8)])
    for frame in (photo, photo[:237, :301], rgba):
        np.testing.assert_array_equal(fast(frame), general(frame))
    assert fast._tables is not None and np.unique(fast(photo)).size > 100


def test_8bit_lookup_path_on_a_one_channel_int8_model(photo, tmp_path):
    """One-channel frames keep their shape through the lookups (OpenCV would drop the channel axis)."""
    keras = pytest.importorskip("keras")
    from converters.quantize import quantize_int8

    gray = photo.mean(axis=2).astype(np.uint8)
    # A fixed unsharp mask (not a random init, which can push most pixels below zero).
    detail = np.full((3, 3, 1, 1), -0.0625, np.float32)
    detail[1, 1] = 0.5
    x = keras.Input((None, None, 1))
    conv = keras.layers.Conv2D(1, 3, padding="same", kernel_initializer=keras.initializers.Constant(detail))
    model = keras.Model(x, keras.layers.Add()([x, conv(x)]))
    crops = [gray[y : y + 64, c : c + 64, None].astype(np.float32) / 255 for y in (0, 200) for c in (0, 200)]
    path = quantize_int8(model, crops, tmp_path / "gray_int8.tflite", tile=(64, 64))
    fast, general = Deblurrer.load(path, threads=1), Deblurrer.load(path, threads=1)
    general._tables = None
    assert fast.info.channels == 1 and fast._tables is not None
    out = fast(gray)
    assert out.shape == gray.shape and np.unique(out).size > 100
    np.testing.assert_array_equal(out, general(gray))


def test_onnx_and_tflite_give_the_same_result(models, photo):
    x = photo.astype(np.float32) / 255
    a = Deblurrer.load(models["unsharp"])(x)
    b = Deblurrer.load(models["unsharp_onnx"])(x)
    np.testing.assert_allclose(a, b, atol=1e-5)


JETSON = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_onnx_providers_keep_the_preferred_order_that_this_build_can_run(tmp_path):
    on_jetson = onnx_providers(JETSON, JETSON + ["AzureExecutionProvider"], "fp16", tmp_path)
    assert [name for name, _ in on_jetson] == JETSON
    assert on_jetson[0][1] == {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                               "trt_engine_cache_path": str(tmp_path)}
    assert onnx_providers(JETSON, JETSON, "fp32")[0][1] == {"trt_fp16_enable": False}
    # A laptop build has neither TensorRT nor CUDA: the same call runs on the CPU.
    assert onnx_providers(JETSON, ["AzureExecutionProvider", "CPUExecutionProvider"]) == [("CPUExecutionProvider", {})]
    # The CPU closes every list, once, even when the caller forgot it.
    assert onnx_providers(["CUDAExecutionProvider", "CUDAExecutionProvider"], JETSON) == [
        ("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})]
    assert onnx_providers(None, JETSON) == [("CPUExecutionProvider", {})]


def test_shipped_jetson_student_runs_here_on_the_cpu(photo):
    """Its sidecar asks for TensorRT FP16 then CUDA; this host's onnxruntime has neither."""
    pytest.importorskip("onnxruntime")
    model = Deblurrer.load("student-jetson-orin", threads=2)
    assert read_sidecar(resolve_model("student-jetson-orin"))["providers"] == JETSON
    assert model.runner.providers == ["CPUExecutionProvider"]
    out = model(photo)
    assert out.shape == photo.shape and np.abs(out.astype(int) - photo).mean() > 0.5  # it changed the frame


def test_an_accelerator_that_fails_to_start_falls_back_to_the_cpu(models, photo, monkeypatch, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    real = ort.InferenceSession

    def no_gpu(path, opts, providers):
        if any((p[0] if isinstance(p, tuple) else p) != "CPUExecutionProvider" for p in providers):
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(path, opts, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: JETSON)
    monkeypatch.setattr(ort, "InferenceSession", no_gpu)
    with pytest.warns(UserWarning, match="no CUDA-capable device.*running on the CPU"):
        model = Deblurrer.load(models["unsharp_onnx"], providers=JETSON)
    reference = Deblurrer.load(models["unsharp"])
    np.testing.assert_allclose(model(photo.astype(np.float32) / 255), reference(photo.astype(np.float32) / 255), atol=1e-5)
    corrupt = tmp_path / "truncated.onnx"
    corrupt.write_bytes(models["unsharp_onnx"].read_bytes()[:200])
    with warnings.catch_warnings():  # a bad file is still a bad file, not a GPU that failed
        warnings.simplefilter("error")
        with pytest.raises(ModelError, match="not a valid ONNX model"):
            Deblurrer.load(corrupt, providers=JETSON)


def test_shapes_and_dtypes_round_trip(models, photo):
    ident = Deblurrer.load(models["identity"])
    rng = np.random.default_rng(0)
    deep = (photo.astype(np.uint16) * 257 + rng.integers(0, 257, photo.shape)).astype(np.uint16)
    np.testing.assert_array_equal(ident(deep), deep)  # 16 bits survive a float model exactly
    gray = photo[..., 1]
    assert ident(gray).shape == gray.shape and ident(gray).dtype == np.uint8
    np.testing.assert_array_equal(ident(gray), gray)
    rgba = np.dstack([photo, rng.integers(0, 256, photo.shape[:2], dtype=np.uint8)])
    out = Deblurrer.load(models["unsharp"])(rgba)
    assert out.shape == rgba.shape
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    assert ident(photo.astype(np.float32) / 255).dtype == np.float32


def test_int8_model_keeps_16_bit_precision(models, photo):
    rng = np.random.default_rng(1)
    deep = (photo.astype(np.uint16) * 257 + rng.integers(0, 257, photo.shape)).astype(np.uint16)
    out = Deblurrer.load(models["unsharp_int8"])(deep)
    assert out.dtype == np.uint16
    # the correction is added at full precision: far more than 256 distinct levels survive
    assert len(np.unique(out[..., 0])) > 2000


def test_thread_count_does_not_change_results(models, photo):
    a = Deblurrer.load(models["strided"], threads=1)(photo)
    b = Deblurrer.load(models["strided"], threads=2)(photo)
    np.testing.assert_array_equal(a, b)


def test_bad_models_are_refused_with_the_reason(models, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Deblurrer.load(tmp_path / "missing.tflite")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00not a flatbuffer" * 20)
    with pytest.raises(ModelError, match="garbage.tflite.*not a valid TFLite"):
        Deblurrer.load(garbage)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match="not a valid ONNX"):
        Deblurrer.load(bad_onnx)
    with pytest.raises(ModelError, match=r"shape \[1, 10\]"):
        Deblurrer.load(models["classifier"])
    with pytest.raises(ModelError, match="2 inputs"):
        Deblurrer.load(models["two_inputs"])
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(ModelError, match="unsupported model format"):
        Deblurrer.load(tmp_path / "model.pb")
    with pytest.raises(ModelError, match="no such bundled model"):
        resolve_model("no-such-model")


def test_bad_frames_are_refused(models):
    d = Deblurrer.load(models["identity"])
    with pytest.raises(ValueError, match="shape"):
        d(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        d(np.zeros((4, 4, 3), np.int32))


def test_runtime_never_imports_tensorflow(models, photo_paths):
    code = textwrap.dedent(f"""
        import sys
        import edge_deblur, edge_deblur.cli, edge_deblur.video, edge_deblur.classical, edge_deblur.pipeline
        from edge_deblur import Deblurrer, read_image
        out = Deblurrer.load({str(models['unsharp'])!r}, threads=1)(read_image({str(photo_paths[0])!r}))
        assert out.shape == (500, 500, 3)
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in {{'tensorflow', 'keras', 'scipy', 'skimage', 'PIL', 'tqdm'}})
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _real_frames(photo):
    """The example images (a real motion-blurred photo and two blurred Kodak ones), a 640x480 frame,
    an odd-sized crop (padded to the stride) and an RGBA frame."""
    import cv2

    from edge_deblur import read_image
    from pathlib import Path

    examples = [read_image(p) for p in sorted((Path(__file__).parents[1] / "examples" / "images").glob("*.png"))]
    frames = [f for f in examples if f.ndim == 3] + [cv2.resize(photo, (640, 480), interpolation=cv2.INTER_CUBIC),
                                                     photo[:237, :301]]
    return frames + [np.dstack([photo, np.full(photo.shape[:2], 200, np.uint8)])]


@pytest.mark.parametrize("model", ["unsharp_int8", "student-rpi5", "student-rpi4"])
def test_fused_frame_path_is_bit_identical_to_the_plain_path(models, photo, model):
    """Issue 14: 8-bit frames through an INT8 LiteRT model take ``edge_deblur.framepath`` (one pass in,
    one out, the blend only on the overlaps' ramps). On real images, in one window and in many
    (tiles of 512, 256 and 128 pixels, padded and not), it must give exactly the plain path's bytes,
    call after call (its buffers are reused) and frame size after frame size."""
    path = models.get(model, model)
    frames = _real_frames(photo)
    for tile in (None, 512, 256, 128):
        fused = Deblurrer.load(path, threads=2, tile=tile)
        plain = Deblurrer.load(path, threads=2, tile=tile)
        plain.fused = False
        assert fused._fused is not None and fused.fused
        windows = set()
        for frame in frames + frames[:2]:  # sizes alternate: plans and buffers per size are reused
            got = fused(frame)
            np.testing.assert_array_equal(got, plain(frame))
            assert got.shape == frame.shape and got.dtype == np.uint8
            windows.add(fused.plan(*frame.shape[:2]).count)
        assert tile != 128 or max(windows) > 10  # really tiled
    assert np.unique(fused(photo)).size > 100


def test_fused_path_returns_a_fresh_array_each_call(photo):
    """The result is the caller's: a later call must not overwrite it (the interpreter's buffers are
    reused, the result never is)."""
    d = Deblurrer.load("student-rpi5", threads=1)
    first = d(photo)
    kept = first.copy()
    second = d(photo[::-1].copy())
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)


def test_fused_tables_cover_both_output_forms(models):
    """The bundled students see every 8-bit value exactly (input scale 1/255, zero point -128): their
    input is one XOR and their output one 256-entry lookup. A model whose input scale is not 1/255
    (the tiny INT8 unsharp mask) needs the 256 x 256 table of output code and input value; both
    are the plain arithmetic, checked on all 65,536 pairs here."""
    from edge_deblur.framepath import final_table

    student = Deblurrer.load("student-rpi5", threads=1)._fused
    assert student.xor and student.final1d is not None
    tiny = Deblurrer.load(models["unsharp_int8"], threads=1)
    codes, real, residual = tiny._tables
    table = final_table(real, residual)
    y = real[:, None] + residual[None, :]
    expected = np.rint(np.clip(y, 0.0, 1.0) * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(table, expected)
    print("unsharp_int8: xor", tiny._fused.xor, "1-d output table", tiny._fused.final1d is not None)
