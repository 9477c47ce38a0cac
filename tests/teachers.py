"""Small real teachers in every form a user exports, for the ``edge-deblur convert`` tests.

One tiny residual CNN (3x3 convolutions 3-16-16-3 with ReLUs, the output its input plus a
correction; receptive radius 3 pixels) is trained for real, in seconds, to deblur synthesised crops
of the training photos (``converters.blur``), in [0, 1]. Each exported teacher is that network
behind its own value convention, as a network trained on such values is: ``model = scale * x +
offset`` is undone on the way in and applied on the way out, so the trained weights see [0, 1]
images only when the teacher is fed its own convention. Fed another one, the inside sees an
affinely distorted image, as a network trained on other values would.

Builders return paths; weights are seeded, so the models are the same on every run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

# Conventions the tests build teachers in: (scale, offset) per channel, model = scale * x + offset.
CONVENTIONS = {
    "0-1": ((1.0,) * 3, (0.0,) * 3),
    "0-255": ((255.0,) * 3, (0.0,) * 3),
    "-1-1": ((2.0,) * 3, (-1.0,) * 3),  # x / 127.5 - 1
    "0.45,0.225": ((1 / 0.225,) * 3, (-0.45 / 0.225,) * 3),  # MEAN,STD
}


def training_pairs(count: int = 192, crop: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blurred/sharp crops of the training photos, as the distillation set makes them."""
    from converters.blur import BlurConfig, synthesize_pair
    from converters.data import training_photos

    rng = np.random.default_rng(seed)
    photos = [p for _, p in training_photos() if min(p.shape[:2]) > crop + 64][:40]
    config = BlurConfig(crop=crop)
    pairs = [synthesize_pair(photos[rng.integers(len(photos))], rng, config)[:2] for _ in range(count)]
    return np.stack([p[0] for p in pairs]).astype(np.float32), np.stack([p[1] for p in pairs]).astype(np.float32)


def train_inner(steps: int = 300, seed: int = 0, correction_scale: float = 1.0):
    """The trained residual CNN in [0, 1] (a ``keras.Model`` of any size); ``correction_scale``
    scales its correction (1e-3: a near-identity teacher)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    x = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    correction = keras.layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="correction")(h)
    model = keras.Model(x, keras.layers.Add()([x, correction]))
    if steps:
        blurred, sharp = training_pairs(seed=seed)
        optimizer = keras.optimizers.Adam(2e-3)
        rng = np.random.default_rng(seed)

        @tf.function
        def step(b, s):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(b, training=True) - s))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        for _ in range(steps):
            idx = rng.integers(0, len(blurred), 16)
            step(tf.constant(blurred[idx]), tf.constant(sharp[idx]))
    if correction_scale != 1.0:
        layer = model.get_layer("correction")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * correction_scale, bias * correction_scale])
    return model


def wrapped(inner, convention: str, size: tuple[int, int] | None = None):
    """``inner`` behind ``convention`` (see the module docstring), with an input of ``size`` (h, w)
    or any size, NHWC."""
    import keras

    scale, offset = (np.asarray(v, np.float32) for v in CONVENTIONS[convention])
    u = keras.Input((*(size or (None, None)), 3), batch_size=1 if size else None, name="image")
    x = keras.layers.Rescaling(1.0 / scale, -offset / scale, name="from_convention")(u)
    y = inner(x)
    return keras.Model(u, keras.layers.Rescaling(scale, offset, name="to_convention")(y))


def tflite(model, path: Path, representative: np.ndarray | None = None) -> Path:
    """A Keras model as a ``.tflite`` file; with ``representative`` (NHWC model values) full INT8."""
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape)
    spec = tf.TensorSpec((1, *shape[1:]), tf.float32)
    concrete = tf.function(lambda x: model(x)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([r[None].astype(np.float32)] for r in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def onnx_from_tflite(tflite_path: Path, path: Path, nchw: bool = False) -> Path:
    """The user's route from a TFLite model to ONNX: ``python -m tf2onnx.convert --tflite``
    (input and output turned NCHW by tf2onnx itself with ``nchw``)."""
    command = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite_path), "--output", str(path),
               "--opset", "17"]
    if nchw:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(tflite_path))
        name_in = interpreter.get_input_details()[0]["name"]
        name_out = interpreter.get_output_details()[0]["name"]
        command += ["--inputs-as-nchw", name_in, "--outputs-as-nchw", name_out]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return path


def savedmodel(model, path: Path) -> Path:
    """A Keras model as a TensorFlow SavedModel folder (``serving_default`` signature)."""
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path
