"""The teacher: a NAFNet-style U-shaped restoration network (Chen et al., ECCV 2022) in Keras 3.

NAFBlock: ``y = x + beta * conv1x1(SCA(SG(dwconv3x3(conv1x1(LN(x))))))`` then
``z = y + gamma * conv1x1(SG(conv1x1(LN(y))))``, with SimpleGate ``SG(a, b) = a * b`` over the two
channel halves and simplified channel attention ``SCA(x) = x * conv1x1(mean_hw(x))``. Levels go down
by a stride-2 2x2 convolution (doubling channels) and up by a 1x1 convolution and depth-to-space, with
skip additions. The output is the input plus a predicted correction; the last convolution starts at
zero so the untrained network is the identity. Only ``keras.ops`` is used: any Keras backend works.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="edge_deblur")
class SimpleGate(layers.Layer):
    """Splits the channels in two halves and multiplies them: NAFNet's non-linearity."""

    def call(self, x):
        a, b = ops.split(x, 2, axis=-1)
        return a * b


@keras.saving.register_keras_serializable(package="edge_deblur")
class ChannelScale(layers.Layer):
    """Multiplies by a learnable per-channel scale (NAFNet's beta/gamma), initialised to ``init``."""

    def __init__(self, init: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init))

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init": self.init}


@keras.saving.register_keras_serializable(package="edge_deblur")
class DepthToSpace(layers.Layer):
    """Rearranges ``(H, W, r*r*C)`` into ``(r*H, r*W, C)``, in TensorFlow's ``depth_to_space`` order."""

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        r = self.block
        b, h, w, c = ops.shape(x)
        x = ops.reshape(x, (b, h, w, r, r, c // (r * r)))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (b, h * r, w * r, c // (r * r)))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        r = self.block
        return (b, None if h is None else h * r, None if w is None else w * r, c // (r * r))

    def get_config(self):
        return {**super().get_config(), "block": self.block}


def naf_block(x, name: str):
    """One NAFBlock (see the module docstring) at the channel count of ``x``."""
    c = x.shape[-1]
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
    y = layers.Conv2D(2 * c, 1, name=f"{name}_expand")(y)
    y = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(y)
    y = SimpleGate(name=f"{name}_gate1")(y)
    attention = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(y)
    attention = layers.Conv2D(c, 1, name=f"{name}_sca")(attention)
    y = layers.Multiply(name=f"{name}_attend")([y, attention])
    y = layers.Conv2D(c, 1, name=f"{name}_project")(y)
    x = layers.Add(name=f"{name}_res1")([x, ChannelScale(name=f"{name}_beta")(y)])
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)
    y = layers.Conv2D(2 * c, 1, name=f"{name}_ffn1")(y)
    y = SimpleGate(name=f"{name}_gate2")(y)
    y = layers.Conv2D(c, 1, name=f"{name}_ffn2")(y)
    return layers.Add(name=f"{name}_res2")([x, ChannelScale(name=f"{name}_gamma")(y)])


def build_teacher(
    width: int = 16,
    enc_blocks: tuple[int, ...] = (1, 1, 2),
    middle_blocks: int = 4,
    dec_blocks: tuple[int, ...] = (1, 1, 1),
) -> keras.Model:
    """The teacher, RGB float in [0, 1] in and out, any size that is a multiple of ``2**len(enc_blocks)``.

    ``width`` channels at full resolution, doubled at each of the ``len(enc_blocks)`` levels down;
    ``enc_blocks[i]``/``dec_blocks[i]`` NAFBlocks at level ``i`` going down/up, ``middle_blocks`` at the
    bottom. ``dec_blocks`` is listed top level first, like ``enc_blocks``.
    """
    if len(enc_blocks) != len(dec_blocks):
        raise ValueError(f"enc_blocks {enc_blocks} and dec_blocks {dec_blocks} need the same number of levels")
    image = keras.Input((None, None, 3), name="image")
    x = layers.Conv2D(width, 3, padding="same", name="intro")(image)
    skips = []
    for level, n in enumerate(enc_blocks):
        for i in range(n):
            x = naf_block(x, f"enc{level}_{i}")
        skips.append(x)
        x = layers.Conv2D(2 * x.shape[-1], 2, strides=2, name=f"down{level}")(x)
    for i in range(middle_blocks):
        x = naf_block(x, f"middle_{i}")
    for level in reversed(range(len(dec_blocks))):
        x = layers.Conv2D(2 * x.shape[-1], 1, use_bias=False, name=f"up{level}")(x)
        x = DepthToSpace(2, name=f"up{level}_shuffle")(x)
        x = layers.Add(name=f"skip{level}")([x, skips[level]])
        for i in range(dec_blocks[level]):
            x = naf_block(x, f"dec{level}_{i}")
    correction = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="ending")(x)
    output = layers.Add(name="residual")([image, correction])
    return keras.Model(image, output, name="teacher")


def multiple_of(model: keras.Model) -> int:
    """The factor input height and width must be multiples of: 2 per stride-2 level."""
    # Recursively: a user's teacher may wrap the network as a nested model.
    every = model._flatten_layers(include_self=False, recursive=True)
    return 2 ** sum(1 for layer in every if isinstance(layer, layers.Conv2D) and layer.strides == (2, 2))


def count_macs(model: keras.Model, h: int, w: int) -> int:
    """Multiply-accumulates of all convolutions and dense layers for one ``h`` x ``w`` frame:
    ``H_out * W_out * k_h * k_w * C_in * C_out / groups`` per convolution (depthwise: ``C_out = C_in *
    multiplier``, ``groups = C_in``). Element-wise work (norms, gates, additions) is not counted."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = (1, h, w, layer["config"]["batch_shape"][-1])
    fixed = keras.Model.from_config(config)  # a fixed-size twin, so every layer's output shape is known
    macs = 0
    for layer in fixed.layers:
        if isinstance(layer, keras.Model):  # a nested network (a user's wrapper around a teacher)
            shape = layer._inbound_nodes[0].input_tensors[0].shape
            macs += count_macs(layer, shape[1], shape[2])
        elif isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
            out = layer.output.shape
            kernel = layer.kernel.shape  # (kh, kw, c_in, c_out) or (kh, kw, c_in, multiplier) or (c_in, c_out)
            per_output = kernel[0] * kernel[1] if isinstance(layer, layers.DepthwiseConv2D) else math.prod(kernel[:-1])
            macs += math.prod(out[1:]) * per_output
    return macs
