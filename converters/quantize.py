"""Full-integer INT8 post-training quantization of a Keras image-to-image model for LiteRT/XNNPACK.

Weights are quantized per channel and activations per tensor from the ranges a representative set
of real blurred crops drives through the float model (the TFLite converter's calibration). Input
and output are int8 too, so nothing runs in float on the board: the runtime
(``edge_deblur.model``) reads the input/output scale and zero point from the file.

The INT8 flatbuffer keeps free height and width (signature ``[1, -1, -1, 3]``, checked with TF 2.21):
calibration fixes value ranges, not shapes, so one file serves any tile size that is a multiple of
the model's stride; ``tile`` is only the size of the calibration crops.
"""

from __future__ import annotations

import os
import tempfile
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


def quantize_int8(model: keras.Model, representative: Iterable[np.ndarray], path: str | os.PathLike,
                  *, tile: tuple[int, int] = (256, 256)) -> Path:
    """Write a full-INT8 TFLite flatbuffer of ``model`` (int8 in, int8 out, TFLITE_BUILTINS_INT8 only)
    to ``path``, calibrated on ``representative`` (HxWx3 float32 RGB in [0, 1]).

    Each calibration image is centre-cropped to ``tile`` (h, w), which must be a multiple of the
    model's stride. The file keeps the model's input shape with batch 1: a student's free height and
    width stay free. Raises if the converter would have to keep any op in float.
    """
    import tensorflow as tf

    th, tw = tile

    def dataset():
        for image in representative:
            h, w = image.shape[:2]
            if h < th or w < tw:
                raise ValueError(f"representative image {w}x{h} is smaller than the {tw}x{th} calibration tile")
            y, x = (h - th) // 2, (w - tw) // 2
            yield [np.ascontiguousarray(image[None, y : y + th, x : x + tw, :3], dtype=np.float32)]

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
        flatbuffer = converter.convert()
    return _replace_atomic(path, lambda tmp: Path(tmp).write_bytes(flatbuffer))


def tflite_ops(path: str | os.PathLike) -> list[str]:
    """The distinct op names of a TFLite model, in graph order (for checking what XNNPACK will run)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    names = [op["op_name"] for op in interpreter._get_ops_details()]
    return list(dict.fromkeys(names))
