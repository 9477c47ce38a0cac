"""The student family: small U-shaped deblurring networks built for XNNPACK's INT8 kernels.

Every op maps onto an XNNPACK quantized kernel: 3x3 and 1x1 convolutions, 3x3 depthwise
convolutions, ReLU6 fused into them, additions, 2x2 stride-2 convolutions going down and 1x1
convolution + depth-to-space going up. There is no normalisation, no global pooling and no
attention, so a pixel's output depends only on its neighbourhood and tiles agree with whole
frames. Channel counts are multiples of 8 (XNNPACK's INT8 micro-kernels pack 8 or 16 channels).

The network is a sequence of named stages, so any stage boundary can be cut for partitioned
execution (``stage_models``)::

    enc1 (1/1) -> enc2 (1/2) -> ... -> encL (1/2^(L-1)) -> bottleneck (1/2^L)
         -> decL -> ... -> dec1 -> head,   decoder i also takes encoder i's output (skip)

Level ``i`` runs ``blocks[i]`` inverted-residual blocks (MobileNetV2's 1x1 expand, depthwise 3x3,
1x1 project, plus the input) at ``widths[i]`` channels, in the encoder and again in the decoder;
the bottleneck runs ``middle`` blocks at ``widths[-1]``. The head adds a predicted correction to
the input image (global residual), so INT8 error lands on the correction, not on the image, and
with its last convolution initialised to zero an untrained student is exactly the identity.
``widths`` is the knob structured pruning shrinks: ``build_student(student_widths(m) ...)``.
"""

from __future__ import annotations

import keras
from keras import layers

from converters.teacher import count_macs

EXPANSION = 2  # inverted-residual expansion: MobileNetV2 uses 6; 2 keeps full-resolution tensors small


@keras.saving.register_keras_serializable(package="edge_deblur")
class DepthToSpace(layers.Layer):
    """``tf.nn.depth_to_space``: lowers to TFLite's single DEPTH_TO_SPACE op, which XNNPACK runs in
    INT8 (a reshape/transpose formulation would lower to shape arithmetic and TRANSPOSE)."""

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        import tensorflow as tf

        return tf.nn.depth_to_space(x, self.block)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        r = self.block
        return (b, None if h is None else h * r, None if w is None else w * r, c // (r * r))

    def get_config(self):
        return {**super().get_config(), "block": self.block}


def inverted_residual(x, name: str):
    """MobileNetV2's block at the channel count of ``x``: 1x1 expand + ReLU6, depthwise 3x3 + ReLU6,
    linear 1x1 project, plus the input. Cheap per pixel, which matters at full resolution."""
    c = x.shape[-1]
    y = layers.Conv2D(EXPANSION * c, 1, activation="relu6", name=f"{name}_expand")(x)
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu6", name=f"{name}_dw")(y)
    y = layers.Conv2D(c, 1, name=f"{name}_project")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def down(x, width: int, name: str):
    """Halve the resolution with a 2x2 stride-2 convolution (as the teacher does): each output sees
    its 2x2 patch exactly once, at a quarter of a 3x3 stride-2 convolution's cost."""
    return layers.Conv2D(width, 2, strides=2, activation="relu6", name=name)(x)


def up(x, width: int, name: str):
    """Double the resolution: 1x1 convolution to ``4 * width`` channels, then depth-to-space (a
    sub-pixel convolution; no transposed convolution, which gains little from INT8)."""
    x = layers.Conv2D(4 * width, 1, name=f"{name}_conv")(x)
    return DepthToSpace(2, name=f"{name}_shuffle")(x)


def _stage(inputs: list, outputs, name: str) -> keras.Model:
    return keras.Model(inputs, outputs, name=name)


def _validate(widths: tuple[int, ...], blocks: tuple[int, ...], middle: int) -> None:
    if len(widths) != len(blocks) or not widths:
        raise ValueError(f"widths {widths} and blocks {blocks} need the same, non-zero number of levels")
    if any(w <= 0 or w % 8 for w in widths):
        raise ValueError(f"widths must be positive multiples of 8 (XNNPACK's INT8 packing), got {widths}")
    if any(b < 0 for b in blocks) or middle < 0:
        raise ValueError(f"block counts must be >= 0, got blocks={blocks}, middle={middle}")


def build_student(
    widths: tuple[int, ...] = (16, 32, 64), blocks: tuple[int, ...] = (1, 1, 2), middle: int = 2, name: str = "student"
) -> keras.Model:
    """The student: RGB float in [0, 1] in and out, any height and width multiple of ``2**len(widths)``.

    Built as nested stage models (see the module docstring), so the whole model is a chain of
    ``model.get_layer(stage)`` calls and each stage keeps its own weights.
    """
    widths, blocks = tuple(widths), tuple(blocks)
    _validate(widths, blocks, middle)
    levels = len(widths)
    image = keras.Input((None, None, 3), name="image")

    stages: dict[str, keras.Model] = {}
    x_in = keras.Input((None, None, 3), name="enc1_in")
    x = layers.Conv2D(widths[0], 3, padding="same", activation="relu6", name="enc1_stem")(x_in)
    for b in range(blocks[0]):
        x = inverted_residual(x, f"enc1_block{b}")
    stages["enc1"] = _stage([x_in], x, "enc1")
    for level in range(1, levels):
        x_in = keras.Input((None, None, widths[level - 1]), name=f"enc{level + 1}_in")
        x = down(x_in, widths[level], f"enc{level + 1}_down")
        for b in range(blocks[level]):
            x = inverted_residual(x, f"enc{level + 1}_block{b}")
        stages[f"enc{level + 1}"] = _stage([x_in], x, f"enc{level + 1}")

    x_in = keras.Input((None, None, widths[-1]), name="bottleneck_in")
    x = down(x_in, widths[-1], "bottleneck_down")
    for b in range(middle):
        x = inverted_residual(x, f"bottleneck_block{b}")
    x = up(x, widths[-1], "bottleneck_up")
    stages["bottleneck"] = _stage([x_in], x, "bottleneck")

    for level in reversed(range(levels)):
        n = level + 1
        x_in = keras.Input((None, None, widths[level]), name=f"dec{n}_in")
        skip = keras.Input((None, None, widths[level]), name=f"dec{n}_skip")
        x = layers.Add(name=f"dec{n}_merge")([x_in, skip])
        for b in range(blocks[level]):
            x = inverted_residual(x, f"dec{n}_block{b}")
        if level > 0:
            x = up(x, widths[level - 1], f"dec{n}_up")
        stages[f"dec{n}"] = _stage([x_in, skip], x, f"dec{n}")

    x_in = keras.Input((None, None, widths[0]), name="head_in")
    head_image = keras.Input((None, None, 3), name="head_image")
    correction = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="head_correction")(x_in)
    stages["head"] = _stage([x_in, head_image], layers.Add(name="head_residual")([head_image, correction]), "head")

    skips = []
    x = image
    for level in range(levels):
        x = stages[f"enc{level + 1}"](x)
        skips.append(x)
    x = stages["bottleneck"](x)
    for level in reversed(range(levels)):
        x = stages[f"dec{level + 1}"]([x, skips[level]])
    output = stages["head"]([x, image])
    return keras.Model(image, output, name=name)


def stage_names(model: keras.Model) -> list[str]:
    """The stages in execution order: ``enc1 ... encL, bottleneck, decL ... dec1, head``."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.Model)]


def stage_models(model: keras.Model) -> dict[str, keras.Model]:
    """Each stage as its own model, in execution order. Inputs: ``enc*`` and ``bottleneck`` take the
    previous stage's output; ``dec{n}`` takes ``[previous output, enc{n} output]``; ``head`` takes
    ``[dec1 output, image]``. They share weights with ``model``: cutting at any boundary and
    chaining the pieces is the whole model."""
    return {name: model.get_layer(name) for name in stage_names(model)}


def run_stages(stages: dict[str, keras.Model], image):
    """Chain the stage models on an image batch exactly as ``build_student`` wires them: the
    reference for partitioned execution (whatever runs where, this is the arithmetic)."""
    levels = sum(1 for name in stages if name.startswith("enc"))
    skips, x = [], image
    for level in range(levels):
        x = stages[f"enc{level + 1}"](x)
        skips.append(x)
    x = stages["bottleneck"](x)
    for level in reversed(range(levels)):
        x = stages[f"dec{level + 1}"]([x, skips[level]])
    return stages["head"]([x, image])


def student_widths(model: keras.Model) -> tuple[int, ...]:
    """The per-level channel widths of a student (``build_student``'s ``widths``), read from the
    weights, so a pruned copy can be described and rebuilt."""
    stages = stage_models(model)
    levels = sum(1 for name in stages if name.startswith("enc"))
    return tuple(int(stages[f"enc{level + 1}"].output.shape[-1]) for level in range(levels))


def student_blocks(model: keras.Model) -> tuple[tuple[int, ...], int]:
    """``(blocks, middle)`` of a student, counted from its layer names."""
    stages = stage_models(model)
    levels = sum(1 for name in stages if name.startswith("enc"))

    def count(stage: str) -> int:
        return sum(1 for layer in stages[stage].layers if layer.name.endswith("_add"))

    return tuple(count(f"enc{level + 1}") for level in range(levels)), count("bottleneck")


def multiple_of(model: keras.Model) -> int:
    """Input height and width must be multiples of this: 2 per level plus 2 for the bottleneck."""
    return 2 ** len(student_widths(model))


def student_macs(model: keras.Model, h: int = 480, w: int = 640) -> int:
    """Multiply-accumulates for one ``h`` x ``w`` frame (``converters.teacher.count_macs`` on the
    flattened graph: its fixed-size rebuild needs plain layers, not nested stage models)."""
    return count_macs(flatten(model), h, w)


def flatten(model: keras.Model) -> keras.Model:
    """The same network as one flat functional model (shared weights): calling each stage's layers
    in order on the outer tensors. Needed by tools that walk ``model.layers`` (MAC counting)."""
    stages = stage_models(model)

    def apply(stage: keras.Model, inputs: list):
        values = {id(t): v for t, v in zip(stage.inputs, inputs)}
        for layer in stage.layers[len(stage.inputs):] if False else stage.layers:
            if isinstance(layer, layers.InputLayer):
                continue
            node = layer._inbound_nodes[0]
            args = [values[id(t)] for t in node.input_tensors]
            values[id(node.output_tensors[0])] = layer(args if len(args) > 1 else args[0])
        return values[id(stage.outputs[0])]

    image = keras.Input((None, None, 3), name="image")
    levels = len(student_widths(model))
    skips, x = [], image
    for level in range(levels):
        x = apply(stages[f"enc{level + 1}"], [x])
        skips.append(x)
    x = apply(stages["bottleneck"], [x])
    for level in reversed(range(levels)):
        x = apply(stages[f"dec{level + 1}"], [x, skips[level]])
    return keras.Model(image, apply(stages["head"], [x, image]), name=f"{model.name}_flat")
