"""The student family: small U-shaped deblurring networks built for XNNPACK's INT8 kernels.

Every op maps onto an XNNPACK quantized kernel: 1x1 convolutions, 3x3 depthwise convolutions,
2x2 stride-2 convolutions going down (space-to-depth + 1x1 at the stem), ReLU6 fused into them,
additions, and 1x1 convolution + depth-to-space going up. Channel counts are multiples of 8
(XNNPACK's INT8 micro-kernels pack 8 or 16 channels). There is no normalisation. The one thing
that is not local is channel attention at the lowest levels (``attention``; NAFNet's simplified
channel attention, ``channel_attention``: MEAN, a 1x1 convolution and MUL, which XNNPACK also runs
in INT8). A uniform blur is the same over the whole frame; the frame's channel means let every
pixel use that, which a network of local filters cannot. Without attention a pixel's output
depends only on its neighbourhood and tiles agree with whole frames; with it, each tile of a frame
larger than the target's tile sees its own means, as the teacher's attention does.

Nothing but the stem and the head touches full resolution: the stem folds each 2x2 pixel block
into ``widths[0]`` channels (a learned space-to-depth) and the head unfolds 12 channels back into
a 2x2 block of RGB corrections. Full-resolution element-wise work is what INT8 speeds up least
(DESIGN.md), and it is where a U-Net at 640x480 spends most of its MACs. For LiteRT the stem is
written as what it is, SPACE_TO_DEPTH and a 1x1 convolution (``litert_student``): the same
arithmetic, which XNNPACK's INT8 kernels run faster than a 2x2 stride-2 convolution reading 3
channels.

The network is a sequence of named stages, so any stage boundary can be cut for partitioned
execution (``stage_models``)::

    enc1 (1/2) -> enc2 (1/4) -> ... -> encL (1/2^L) -> bottleneck (1/2^(L+1), then up to 1/2^L)
         -> decL -> ... -> dec1 -> head (1/1),   dec{n} also takes enc{n}'s output (skip)

Level ``n`` runs ``blocks[n-1]`` inverted-residual blocks (MobileNetV2's 1x1 expand, depthwise 3x3,
linear 1x1 project, plus the input) at ``widths[n-1]`` channels, in the encoder and again in the
decoder; the bottleneck runs ``middle`` blocks at ``widths[-1]``. The head adds the correction to
the input image (global residual), so INT8 error lands on the correction, not on the image, and
with its last convolution initialised to zero an untrained student is exactly the identity.
``widths`` is the knob structured pruning shrinks: ``build_student(narrower_widths, ...)`` builds
the narrower copy and ``student_widths(model)`` reads a model's widths back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras
from keras import layers

from converters.teacher import DepthToSpace, count_macs

EXPANSION = 2  # inverted-residual expansion: MobileNetV2 uses 6; 2 keeps high-resolution tensors small


@keras.saving.register_keras_serializable(package="edge_deblur")
class DepthToSpaceOp(DepthToSpace):
    """The teacher's ``DepthToSpace`` through ``tf.nn.depth_to_space``: it lowers to TFLite's single
    DEPTH_TO_SPACE op, which XNNPACK runs in INT8 (the backend-agnostic reshape/transpose lowers to
    shape arithmetic and TRANSPOSE)."""

    def call(self, x):
        import tensorflow as tf

        return tf.nn.depth_to_space(x, self.block)


@keras.saving.register_keras_serializable(package="edge_deblur")
class SpaceToDepthOp(layers.Layer):
    """``tf.nn.space_to_depth``: (H, W, C) to (H/r, W/r, r*r*C), channels in (row, column, channel)
    order within each r x r block; TFLite's single SPACE_TO_DEPTH op, which XNNPACK runs in INT8."""

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        import tensorflow as tf

        return tf.nn.space_to_depth(x, self.block)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        r = self.block
        return (b, None if h is None else h // r, None if w is None else w // r, c * r * r)

    def get_config(self):
        return {**super().get_config(), "block": self.block}


def stem(image, width: int, folded: bool = False):
    """The first level's input: a 2x2 stride-2 convolution of the image to ``width`` channels with
    ReLU6, or (``folded``) the same map as space-to-depth and a 1x1 convolution, whose kernel is
    the 2x2 kernel reshaped (``litert_student``)."""
    if folded:
        return layers.Conv2D(width, 1, activation="relu6", name="enc1_stem")(SpaceToDepthOp(2, name="enc1_fold")(image))
    return layers.Conv2D(width, 2, strides=2, activation="relu6", name="enc1_stem")(image)


def inverted_residual(x, name: str, attention: bool = False):
    """MobileNetV2's block at the channel count of ``x``: 1x1 expand + ReLU6, depthwise 3x3 + ReLU6,
    linear 1x1 project, plus the input: a 3x3 receptive field at about half a 3x3 convolution's MACs.
    With ``attention``, the sum then goes through ``channel_attention``."""
    c = x.shape[-1]
    y = layers.Conv2D(EXPANSION * c, 1, activation="relu6", name=f"{name}_expand")(x)
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu6", name=f"{name}_dw")(y)
    y = layers.Conv2D(c, 1, name=f"{name}_project")(y)
    y = layers.Add(name=f"{name}_add")([x, y])
    return channel_attention(y, name) if attention else y


def channel_attention(x, name: str):
    """NAFNet's simplified channel attention, ``x * (W mean_hw(x) + b)``: every channel rescaled by
    a linear map of the frame's channel means (TFLite MEAN, a 1x1 convolution and MUL, all in
    XNNPACK's INT8 kernels). The means summarise the whole frame, the blur included, which a
    network of local filters cannot see; it starts as the identity (``W = 0``, ``b = 1``)."""
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_mean")(x)
    s = layers.Conv2D(x.shape[-1], 1, kernel_initializer="zeros", bias_initializer="ones", name=f"{name}_attention")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def down(x, width: int, name: str):
    """Halve the resolution with a 2x2 stride-2 convolution (as the teacher does): each output sees
    its 2x2 patch exactly once, at a quarter of a 3x3 stride-2 convolution's cost."""
    return layers.Conv2D(width, 2, strides=2, activation="relu6", name=name)(x)


def up(x, width: int, name: str):
    """Double the resolution: 1x1 convolution to ``4 * width`` channels, then depth-to-space (a
    sub-pixel convolution; no transposed convolution, which gains little from INT8)."""
    x = layers.Conv2D(4 * width, 1, name=f"{name}_conv")(x)
    return DepthToSpaceOp(2, name=f"{name}_shuffle")(x)


def _validate(widths: tuple[int, ...], blocks: tuple[int, ...], middle: int, attention: int = 0) -> None:
    if len(widths) != len(blocks) or not widths:
        raise ValueError(f"widths {widths} and blocks {blocks} need the same, non-zero number of levels")
    if any(w <= 0 or w % 8 for w in widths):
        raise ValueError(f"widths must be positive multiples of 8 (XNNPACK's INT8 packing), got {widths}")
    if any(b < 0 for b in blocks) or middle < 0:
        raise ValueError(f"block counts must be >= 0, got blocks={blocks}, middle={middle}")
    if not 0 <= attention <= len(widths) + 1:
        raise ValueError(f"attention counts levels from the bottleneck up: 0 to {len(widths) + 1}, got {attention}")


def _wiring(levels: int) -> dict[str, list[str]]:
    """Each stage in execution order, with the stages (or ``"image"``) whose outputs it consumes."""
    wiring = {"enc1": ["image"]}
    for n in range(2, levels + 1):
        wiring[f"enc{n}"] = [f"enc{n - 1}"]
    wiring["bottleneck"] = [f"enc{levels}"]
    previous = "bottleneck"
    for n in range(levels, 0, -1):
        wiring[f"dec{n}"] = [previous, f"enc{n}"]
        previous = f"dec{n}"
    wiring["head"] = ["dec1", "image"]
    return wiring


def _attends(stage: str, levels: int, attention: int) -> bool:
    """Whether ``stage``'s blocks end in channel attention: the ``attention`` lowest levels do,
    counting the bottleneck as the lowest."""
    if stage == "bottleneck":
        return attention > 0
    return stage[:3] in ("enc", "dec") and int(stage[3:]) >= levels + 2 - attention


def _stage(stage: str, inputs: list, widths: tuple[int, ...], blocks: tuple[int, ...], middle: int,
           folded_stem: bool = False, attention: int = 0):
    """Build one stage's layers on ``inputs`` (as ``_wiring`` lists them); returns its output. Every
    layer is named after its stage and the stage ends in a layer named ``stage`` (an identity,
    free in TFLite, except the head's final addition), which marks the cut points."""
    if stage == "head":
        x, image = inputs
        correction = layers.Conv2D(12, 1, kernel_initializer="zeros", name="head_correction")(x)
        correction = DepthToSpaceOp(2, name="head_shuffle")(correction)
        return layers.Add(name="head")([image, correction])
    if stage == "bottleneck":
        x = down(inputs[0], widths[-1], "bottleneck_down")
        for b in range(middle):
            x = inverted_residual(x, f"bottleneck_block{b}", _attends(stage, len(widths), attention))
        return layers.Identity(name=stage)(up(x, widths[-1], "bottleneck_up"))
    n = int(stage[3:])
    if stage.startswith("enc"):
        if n == 1:
            x = stem(inputs[0], widths[0], folded_stem)
        else:
            x = down(inputs[0], widths[n - 1], f"{stage}_down")
    else:
        x = layers.Add(name=f"{stage}_merge")(inputs)
    for b in range(blocks[n - 1]):
        x = inverted_residual(x, f"{stage}_block{b}", _attends(stage, len(widths), attention))
    if stage.startswith("dec") and n > 1:
        x = up(x, widths[n - 2], f"{stage}_up")
    return layers.Identity(name=stage)(x)


def build_student(
    widths: tuple[int, ...] = (16, 32, 64), blocks: tuple[int, ...] = (1, 1, 2), middle: int = 2, name: str = "student",
    folded_stem: bool = False, attention: int = 0,
) -> keras.Model:
    """The student: RGB float in [0, 1] in and out, any height and width multiple of
    ``2**(len(widths) + 1)`` (``multiple_of``; 16 for three levels). One flat functional model,
    built stage by stage (``_stage``) in the order ``_wiring`` gives. ``folded_stem``: the stem as
    space-to-depth and a 1x1 convolution (``stem``), the form ``litert_student`` exports.
    ``attention``: the blocks of that many of the lowest levels (the bottleneck first) end in
    ``channel_attention``."""
    widths, blocks = tuple(widths), tuple(blocks)
    _validate(widths, blocks, middle, attention)
    values = {"image": keras.Input((None, None, 3), name="image")}
    for stage, inputs in _wiring(len(widths)).items():
        values[stage] = _stage(stage, [values[n] for n in inputs], widths, blocks, middle, folded_stem, attention)
    return keras.Model(values["image"], values["head"], name=name)


def litert_student(model: keras.Model) -> keras.Model:
    """``model`` as it is exported to LiteRT: the same network and weights with the stem folded
    (``stem``). A 2x2 kernel's (row, column, channel) order is space-to-depth's channel order, so
    the 1x1 kernel is the 2x2 kernel reshaped and every output, float or INT8, is unchanged. XNNPACK
    runs the folded stem as a plain matrix product instead of a 3-channel convolution: about 5% less
    INT8 time for the whole Pi students at 640x480 (docs/BENCHMARKS.md)."""
    folded = student_spec(model).build(model.name, folded_stem=True)
    for layer in folded.layers:
        if layer.weights:
            weights = model.get_layer(layer.name).get_weights()
            layer.set_weights([w.reshape(layer_w.shape) for w, layer_w in zip(weights, layer.get_weights())])
    return folded


def _levels(model: keras.Model) -> int:
    return sum(1 for layer in model.layers if re.fullmatch(r"enc\d+", layer.name))


def stage_names(model: keras.Model) -> list[str]:
    """The stages in execution order: ``enc1 ... encL, bottleneck, decL ... dec1, head``."""
    return list(_wiring(_levels(model)))


def stage_inputs(model: keras.Model) -> dict[str, list[str]]:
    """What each stage consumes, by the name of the stage (or ``"image"``) that produced it:
    ``dec{n}`` takes the previous stage and the skip from ``enc{n}``; ``head`` takes ``dec1`` and
    the image (the global residual). This is what a cut at a stage boundary must carry across."""
    return _wiring(_levels(model))


def stage_models(model: keras.Model) -> dict[str, keras.Model]:
    """Each stage as its own model, in execution order, with one input per entry of
    ``stage_inputs`` (named ``{stage}_{producer}``, free height and width), holding a copy of
    ``model``'s current weights. Chaining them (``run_stages``) is the whole model.

    The stages are rebuilt on fresh inputs rather than cut out of ``model``'s graph: Keras models
    whose inputs are another model's intermediate tensors cannot be serialised (nor, afterwards,
    can the model they were cut from)."""
    spec = student_spec(model)
    channels = {"image": 3, **{stage: int(model.get_layer(stage).output.shape[-1]) for stage in stage_names(model)}}
    stages = {}
    for stage, producers in stage_inputs(model).items():
        inputs = [keras.Input((None, None, channels[p]), name=f"{stage}_{p}") for p in producers]
        stages[stage] = keras.Model(inputs, _stage(stage, inputs, spec.widths, spec.blocks, spec.middle,
                                                   attention=spec.attention), name=stage)
        for layer in stages[stage].layers:
            if layer.weights:
                layer.set_weights(model.get_layer(layer.name).get_weights())
    return stages


def run_stages(model: keras.Model, stages: dict[str, keras.Model], image):
    """Chain stage models on an image batch, each fed the outputs ``stage_inputs`` names: the
    reference arithmetic for partitioned execution, whatever runs where."""
    values = {"image": keras.ops.convert_to_tensor(image)}
    for stage, inputs in stage_inputs(model).items():
        values[stage] = stages[stage]([values[n] for n in inputs])
    return values["head"]


def student_widths(model: keras.Model) -> tuple[int, ...]:
    """The per-level channel widths of a student (``build_student``'s ``widths``), read from the
    model, so a pruned copy can be described and rebuilt."""
    return tuple(int(model.get_layer(f"enc{n}").output.shape[-1]) for n in range(1, _levels(model) + 1))


def student_blocks(model: keras.Model) -> tuple[tuple[int, ...], int]:
    """``(blocks, middle)`` of a student, counted from its layer names."""
    def count(stage: str) -> int:
        return sum(1 for layer in model.layers if re.fullmatch(rf"{stage}_block\d+_add", layer.name))

    return tuple(count(f"enc{n}") for n in range(1, _levels(model) + 1)), count("bottleneck")


def student_attention(model: keras.Model) -> int:
    """``build_student``'s ``attention``, read from the layer names (0 without channel attention)."""
    levels = _levels(model)
    attending = {m.group(1) for layer in model.layers if (m := re.fullmatch(r"(\w+?)_block\d+_attention", layer.name))}
    lowest = min((int(s[3:]) for s in attending if s != "bottleneck"), default=levels + 1)
    return levels + 2 - lowest if lowest <= levels else int("bottleneck" in attending)


def student_spec(model: keras.Model) -> "StudentSpec":
    """The architecture of a student (pruned or not), read from the model, to rebuild it."""
    blocks, middle = student_blocks(model)
    return StudentSpec(student_widths(model), blocks, middle, student_attention(model))


def multiple_of(model: keras.Model) -> int:
    """Input height and width must be multiples of this: 2 per stride-2 convolution (the stem, the
    levels below it and the bottleneck)."""
    return 2 ** (_levels(model) + 1)


def student_macs(model: keras.Model, h: int = 480, w: int = 640) -> int:
    """Multiply-accumulates of all convolutions for one ``h`` x ``w`` frame (the teacher's counter)."""
    return count_macs(model, h, w)


@dataclass(frozen=True)
class StudentSpec:
    """``build_student``'s architecture arguments, as a named preset."""

    widths: tuple[int, ...]
    blocks: tuple[int, ...] = (1, 1, 2)
    middle: int = 2
    attention: int = 0

    def build(self, name: str = "student", folded_stem: bool = False) -> keras.Model:
        return build_student(self.widths, self.blocks, self.middle, name=name, folded_stem=folded_stem,
                             attention=self.attention)


# Per-target starting points for ``edge-deblur convert``: the unpruned students that distillation
# trains and structured pruning (converters.prune) then narrows to the target's ``mac_budget``
# (targets/*.json), and never above a tenth of the teacher's MACs (DESIGN.md). Only the widths
# shrink; the depth is chosen here. Measured (benchmarks/expected_latency.py, INT8, 2 threads):
# blocks at level 1 (half resolution) cost the most time per MAC, so the Raspberry Pi students have
# none there; 8-channel levels reach only 40% of MobileNetV2's MAC rate (16+ channels: 55-80%), so
# pruning stops at 16 channels (``converters.prune.choose_widths``' ``min_width``).
STUDENTS: dict[str, StudentSpec] = {
    # The Pi 4 runs one block, not two, at 1/8 resolution: about 10% less INT8 time, which its 100 ms needs.
    "rpi4": StudentSpec(widths=(16, 32, 64), blocks=(0, 1, 1)),  # 616M before pruning, budget 341M
    "rpi5": StudentSpec(widths=(16, 32, 64), blocks=(0, 1, 2), attention=2),  # 784M before pruning, budget 682M: the teacher rule (678M) binds
    "jetson-orin": StudentSpec(widths=(16, 32, 64)),  # 986M: pruned to the teacher rule (678M), budget 5876M
    "x86": StudentSpec(widths=(16, 32, 64)),  # 986M: pruned to the teacher rule (678M), budget 1314M
}
