"""Small real models with known behaviour, built with TensorFlow's converter for the runtime tests.

Each builder writes a model file and returns its path. Weights are fixed (seeded), so the models are
the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _tf():
    import tensorflow as tf

    return tf


def gaussian_kernel(sigma: float = 1.0, size: int = 5) -> np.ndarray:
    r = np.arange(size) - size // 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def _convert(fn, path: Path, shape, representative=None) -> Path:
    tf = _tf()
    concrete = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)]).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if representative is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([r[None].astype(np.float32)] for r in representative)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


def identity(path: Path, shape=(1, None, None, 3)) -> Path:
    """y = x, through a 1x1 convolution with identity weights (so the converter keeps an op)."""
    tf = _tf()
    c = shape[-1]
    w = tf.constant(np.eye(c, dtype=np.float32).reshape(1, 1, c, c))
    return _convert(lambda x: tf.nn.conv2d(x, w, 1, "SAME"), path, shape)


def unsharp(path: Path, amount: float = 0.8, shape=(1, None, None, 3), representative=None) -> Path:
    """y = x + amount * (x - G * x), G a 5x5 Gaussian (sigma 1): a known sharpening convolution with a
    receptive radius of 2 pixels."""
    tf = _tf()
    k = np.repeat(gaussian_kernel()[:, :, None, None], 3, axis=2)
    kt = tf.constant(k)
    fn = lambda x: x + amount * (x - tf.nn.depthwise_conv2d(x, kt, [1, 1, 1, 1], "SAME"))
    return _convert(fn, path, shape, representative)


def strided(path: Path, seed: int = 0, representative=None) -> Path:
    """A two-level encoder-decoder with fixed random weights: 3x3 conv, stride-2 3x3 conv, 3x3 conv,
    depth-to-space up, skip addition and a global residual. Total stride 2, receptive radius 5."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    w = lambda *s: tf.constant(rng.normal(0, 0.15, s).astype(np.float32))
    w1, w2, w3, w4 = w(3, 3, 3, 8), w(3, 3, 8, 8), w(3, 3, 8, 32), w(1, 1, 8, 3)

    def fn(x):
        a = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))
        b = tf.nn.relu(tf.nn.conv2d(a, w2, 2, "SAME"))
        up = tf.nn.depth_to_space(tf.nn.conv2d(b, w3, 1, "SAME"), 2)
        return x + 0.1 * tf.nn.conv2d(up + a, w4, 1, "SAME")

    return _convert(fn, path, (1, None, None, 3), representative)


def classifier(path: Path) -> Path:
    """An image classifier (global pooling + dense): not an image-to-image model."""
    tf = _tf()
    w = tf.constant(np.ones((3, 10), np.float32))
    return _convert(lambda x: tf.matmul(tf.reduce_mean(x, axis=[1, 2]), w), path, (1, 64, 64, 3))


def two_inputs(path: Path) -> Path:
    tf = _tf()

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((1, 32, 32, 3)), tf.TensorSpec((1, 32, 32, 3))])
        def __call__(self, a, b):
            return a + b

    m = M()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    path.write_bytes(conv.convert())
    return path


def unsharp_onnx_nchw(path: Path, amount: float = 0.8) -> Path:
    """The unsharp model as an NCHW ONNX graph with dynamic H and W (as PyTorch exports come)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = np.repeat(gaussian_kernel()[None, None], 3, axis=0)  # (3, 1, 5, 5): depthwise
    nodes = [
        helper.make_node("Conv", ["image", "k"], ["blur"], group=3, pads=[2, 2, 2, 2]),
        helper.make_node("Sub", ["image", "blur"], ["detail"]),
        helper.make_node("Mul", ["detail", "amount"], ["boost"]),
        helper.make_node("Add", ["image", "boost"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "unsharp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [numpy_helper.from_array(k, "k"), numpy_helper.from_array(np.array(amount, np.float32), "amount")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def unsharp_reference(x: np.ndarray, amount: float = 0.8) -> np.ndarray:
    """The unsharp model in numpy/cv2 with zero padding at the borders, as the model pads."""
    import cv2

    blur = cv2.filter2D(x, -1, gaussian_kernel(), borderType=cv2.BORDER_CONSTANT)
    return x + amount * (x - blur)
