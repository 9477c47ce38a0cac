"""Full-integer INT8 post-training quantization of a Keras image-to-image model for LiteRT/XNNPACK.

Weights are quantized per channel and activations per tensor, from the values a representative set
of real blurred crops drives through the float model. Input and output are int8 too, so nothing
runs in float on the board: the runtime (``edge_deblur.model``) reads the input/output scale and
zero point from the file.

The TFLite converter's calibration takes each activation's range as the minimum and maximum over
the whole set: one extreme pixel in millions widens the range, and every value of that tensor then
rounds to coarser steps. ``ranges="mse"`` (the default) instead gives each activation the range
that minimises its own quantization error over the calibration values (``mse_range``), clipping
rare extremes: on the rpi5 student it halves the PSNR INT8 loses to its float twin
(docs/BENCHMARKS.md). The model's input keeps its calibrated range (the image's [0, 1]).

The INT8 flatbuffer keeps free height and width (signature ``[1, -1, -1, 3]``, checked with TF 2.21):
calibration fixes value ranges, not shapes, so one file serves any tile size that is a multiple of
the model's stride; ``tile`` is only the size of the calibration crops.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import keras
import numpy as np

from converters.blur import BlurConfig, synthesize_pair
from converters.data import training_photos
from converters.export import _replace_atomic


def representative_crops(count: int = 64, crop: int = 256, seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` blurred ``crop`` x ``crop`` float32 RGB crops of the training photos, synthesised as
    in training (``converters.blur.synthesize_pair``): calibration must see the blur, noise and JPEG
    the model will see, not sharp photos, or activation ranges come out too narrow."""
    rng = np.random.default_rng(seed)
    photos = [photo for _, photo in training_photos() if min(photo.shape[:2]) > crop + 32]
    config = BlurConfig(crop=crop)
    for _ in range(count):
        yield synthesize_pair(photos[rng.integers(len(photos))], rng, config)[0]


RANGES = ("mse", "minmax")
RANGE_SCALES = np.linspace(0.3, 1.0, 36)  # the shrink factors ``mse_range`` tries on a calibrated range
MOVES = {"SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "RESHAPE", "TRANSPOSE"}  # ops that rearrange values, never change them


def quantization_mse(values: np.ndarray, low: float, high: float) -> float:
    """Mean squared error of 8-bit affine quantization of ``values`` over ``[low, high]`` (which
    holds 0): step ``s = (high - low) / 255``, ``q = clip(round(v / s) + z, -128, 127)`` with zero
    point ``z = round(-128 - low / s)``, error ``(q - z) s - v``: rounding inside the range,
    clipping outside it."""
    step = (high - low) / 255.0
    zero = np.round(-128.0 - low / step)
    q = np.clip(np.round(values / step) + zero, -128, 127)
    return float(np.mean(((q - zero) * step - values) ** 2))


def mse_range(values: np.ndarray, low: float, high: float, scales: np.ndarray = RANGE_SCALES) -> tuple[float, float]:
    """The range ``[a low, a high]``, ``a`` in ``scales``, with the least ``quantization_mse`` of
    ``values``: a min/max range ``[low, high]`` shrunk to trade rare clipped extremes for finer
    rounding everywhere else (the MSE calibration of TensorRT's and OpenVINO's post-training
    quantizers). ``a = 1`` keeps the min/max range."""
    values = np.asarray(values, np.float64).ravel()
    errors = [quantization_mse(values, min(a * low, 0.0), max(a * high, 0.0)) for a in scales]
    a = float(scales[int(np.argmin(errors))])
    return min(a * low, 0.0), max(a * high, 0.0)


def _mse_ranges(calibrated: bytes, images: list[np.ndarray], samples: int = 20_000, seed: int = 0) -> bytes:
    """The converter's calibrated float model (min/max per activation) with every activation's range
    replaced by its ``mse_range`` over values sampled from ``images`` run through that model. The
    model's inputs keep theirs, and ops that only move values (``MOVES``) pass their input's range
    on, as INT8 kernels need (one scale in and out) and as min/max calibration gives."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    inputs = set(int(i) for i in graph.inputs)
    ranged = [i for i, t in enumerate(graph.tensors) if i not in inputs and t.quantization is not None
              and t.quantization.min is not None and len(t.quantization.min) == 1]
    with warnings.catch_warnings():  # "for debugging purposes only": reading every activation is the point here
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True)
    index = interpreter.get_input_details()[0]["index"]
    values: dict[int, list[np.ndarray]] = {i: [] for i in ranged}
    for image in images:
        interpreter.resize_tensor_input(index, image.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, image)
        interpreter.invoke()
        for i in ranged:
            v = interpreter.get_tensor(i).ravel()
            # the same draw for every tensor of a size: a tensor's range depends on its values only
            values[i].append(np.random.default_rng(seed).choice(v, min(v.size, samples), replace=False))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for op in graph.operators:  # in execution order, so an op's input already has its final range
        code = model.operatorCodes[op.opcodeIndex]
        moves = names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) in MOVES
        for i in (int(o) for o in op.outputs if int(o) in values):
            q = graph.tensors[i].quantization
            source = graph.tensors[int(op.inputs[0])].quantization
            if moves and source is not None and source.min is not None and len(source.min) == 1:
                q.min, q.max = list(source.min), list(source.max)
            else:
                low, high = mse_range(np.concatenate(values[i]), float(q.min[0]), float(q.max[0]))
                q.min, q.max = [low], [high]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantize_int8(model: keras.Model, representative: Iterable[np.ndarray], path: str | os.PathLike,
                  *, tile: tuple[int, int] = (256, 256), ranges: str = "mse", range_images: int = 32) -> Path:
    """Write a full-INT8 TFLite flatbuffer of ``model`` (int8 in, int8 out, TFLITE_BUILTINS_INT8 only)
    to ``path``, calibrated on ``representative`` (HxWxC float32, C at least the model's input
    channels: RGB in [0, 1] for a student).

    Each calibration image is centre-cropped to ``tile`` (h, w), which must be a multiple of the
    model's stride. The file keeps the model's input shape with batch 1: a student's free height and
    width stay free. ``ranges``: ``"mse"`` gives each activation its least-error range over the
    first ``range_images`` calibration images (module docstring), ``"minmax"`` keeps the
    converter's. Raises if the converter would have to keep any op in float.
    """
    import tensorflow as tf
    from tensorflow.lite.python.optimize import calibrator

    if ranges not in RANGES:
        raise ValueError(f"ranges must be one of {RANGES}, got {ranges!r}")
    th, tw = tile
    channels = model.input_shape[-1]  # 3 for the students; 4 (image and noise map) for the denoiser
    images = []
    for image in representative:
        h, w = image.shape[:2]
        if h < th or w < tw:
            raise ValueError(f"representative image {w}x{h} is smaller than the {tw}x{th} calibration tile")
        y, x = (h - th) // 2, (w - tw) // 2
        images.append(np.ascontiguousarray(image[None, y : y + th, x : x + tw, :channels], dtype=np.float32))

    def dataset():
        for image in images:
            yield [image]

    # Through a SavedModel: a concrete function converted with the model as its trackable object
    # keeps Keras 3's weights as READ_VARIABLE ops, which the calibrator cannot run.
    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec([1, *model.input_shape[1:]], tf.float32, name="image")])
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # The converter has no hook between calibrating and quantizing, so its calibrator's output
        # is rewritten on the way (for this call only); everything after it is the converter's own.
        calibrate = calibrator.Calibrator.calibrate
        if ranges == "mse":
            calibrator.Calibrator.calibrate = lambda self, gen: _mse_ranges(calibrate(self, gen), images[:range_images])
        try:
            flatbuffer = converter.convert()
        finally:
            calibrator.Calibrator.calibrate = calibrate
    return _replace_atomic(path, lambda tmp: Path(tmp).write_bytes(flatbuffer))


def tflite_ops(path: str | os.PathLike) -> list[str]:
    """The distinct op names of a TFLite model, in graph order (for checking what XNNPACK will run)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    names = [op["op_name"] for op in interpreter._get_ops_details()]
    return list(dict.fromkeys(names))
