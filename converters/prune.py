"""Structured channel pruning of a student to a MAC budget: the network really gets narrower.

A student (``converters.student``) carries one residual stream per level, ``L1 ... Ln``, at
``widths[n-1]`` channels: the level's stem or down convolution writes it, every inverted-residual
block reads and adds to it, in the encoder and again in the decoder (the decoder's merge adds the
upsampled features to the skip, so both halves share the channel set), and the next level's down
convolution, the up convolution above and the head read it; a block with channel attention also
reads the stream's channel means and rescales it, channel for channel. The bottleneck has a stream
of its own, ``B``, at ``widths[-1]``. Inside each block the expanded (hidden) channels are a private group of
``EXPANSION * width``.

A channel's importance is what it contributes downstream, measured on real blurred crops:

    I(c) = sum over convolutions k reading the group of  E|a_k[..., c]| * ||W_k[:, :, c, :]||_2

(``a_k`` the convolution's input). ``choose_widths`` removes 8 channels at a time (XNNPACK's INT8
packing) from the level whose 8 least important channels carry the smallest share of that level's
importance per MAC saved, until the student fits the budget; ``prune_student`` then builds the
narrower student with ``build_student`` and copies the kept channels' weights, hidden channels
kept by the same measure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import keras
import numpy as np

from converters.student import EXPANSION, student_macs, student_spec, student_widths


def _stream(layer: str, levels: int) -> str | None:
    """The residual stream a block layer belongs to (``L{n}`` or ``B``)."""
    if layer.startswith("bottleneck_block"):
        return "B"
    m = re.match(r"(enc|dec)(\d+)_block", layer)
    return f"L{m.group(2)}" if m else None


def _readers(model: keras.Model) -> dict[str, list[str]]:
    """Per stream, the convolutions that read it (whose input channels are its channels)."""
    levels = len(student_widths(model))
    readers: dict[str, list[str]] = {f"L{n}": [] for n in range(1, levels + 1)} | {"B": []}
    for layer in model.layers:
        name = layer.name
        if name.endswith(("_expand", "_attention")):  # attention reads the stream's channel means
            readers[_stream(name, levels)].append(name)
        elif m := re.fullmatch(r"enc(\d+)_down", name):
            readers[f"L{int(m.group(1)) - 1}"].append(name)
        elif name == "bottleneck_down":
            readers[f"L{levels}"].append(name)
        elif name == "bottleneck_up_conv":
            readers["B"].append(name)
        elif m := re.fullmatch(r"dec(\d+)_up_conv", name):
            readers[f"L{m.group(1)}"].append(name)
        elif name == "head_correction":
            readers["L1"].append(name)
    return readers


def _blocks(model: keras.Model) -> list[str]:
    return [layer.name[: -len("_expand")] for layer in model.layers if layer.name.endswith("_expand")]


def channel_importance(model: keras.Model, blurred: np.ndarray) -> dict[str, np.ndarray]:
    """Importance of every channel of every stream (``L1``... ``B``) and of every block's hidden
    channels (keyed by block name), from the activations ``blurred`` (B, H, W, 3) drives through."""
    readers = _readers(model)
    hidden = {block: f"{block}_project" for block in _blocks(model)}
    names = sorted({n for group in readers.values() for n in group} | set(hidden.values()))
    probe = keras.Model(model.input, [model.get_layer(n).input for n in names])
    sums = {n: 0.0 for n in names}
    for i in range(0, len(blurred), 8):
        for n, a in zip(names, probe(blurred[i : i + 8], training=False)):
            sums[n] = sums[n] + np.abs(np.asarray(a)).mean(axis=(0, 1, 2)) * len(a)
    score = {}
    for n in names:
        kernel = np.asarray(model.get_layer(n).kernel)  # (kh, kw, C_in, C_out)
        score[n] = sums[n] / len(blurred) * np.sqrt((kernel**2).sum(axis=(0, 1, 3)))
    importance = {group: np.sum([score[n] for n in members], axis=0) for group, members in readers.items()}
    importance.update({block: score[project] for block, project in hidden.items()})
    return importance


@dataclass(frozen=True)
class PruningPlan:
    base_widths: tuple[int, ...]
    widths: tuple[int, ...]
    base_macs: int
    macs: int
    steps: list[tuple[int, float]]  # (level index removed from, share of that level's importance lost)


def choose_widths(model: keras.Model, importance: dict[str, np.ndarray], mac_budget: int,
                  min_width: int = 16) -> PruningPlan:
    """Greedy widths under ``mac_budget`` (MACs per 640x480 frame): repeatedly take 8 channels from
    the level whose least important 8 cost the least importance share per MAC saved (the last
    level's share counts its own stream and the bottleneck's, which share ``widths[-1]``). No level
    goes below ``min_width``: XNNPACK's INT8 kernels reach only 40% of MobileNetV2's MAC rate on
    8-channel levels (converters/student.py), so 8 fewer channels there would save MACs, not time."""
    spec = student_spec(model)
    base, levels = spec.widths, len(spec.widths)

    def macs(widths):
        return student_macs(replace(spec, widths=widths).build())

    def share_lost(level: int, widths: tuple[int, ...]) -> float:
        groups = [f"L{level + 1}"] + (["B"] if level == levels - 1 else [])
        lost = 0.0
        for g in groups:
            ranked = np.sort(importance[g])  # the channels already removed are the least important
            removed = base[level] - widths[level]
            lost += ranked[removed : removed + 8].sum() / max(ranked.sum(), 1e-12)
        return lost

    widths, current, steps = base, macs(base), []
    base_macs = current
    while current > mac_budget:
        options = []
        for level in range(levels):
            if widths[level] - 8 < min(min_width, base[level]):
                continue
            narrower = widths[:level] + (widths[level] - 8,) + widths[level + 1 :]
            saved = current - macs(narrower)
            options.append((share_lost(level, widths) / max(saved, 1), level, narrower, saved))
        if not options:
            raise ValueError(f"cannot prune {base} below {current / 1e6:.0f}M MACs; budget {mac_budget / 1e6:.0f}M")
        cost, level, widths, saved = min(options)
        steps.append((level, float(cost * saved)))
        current -= saved
    return PruningPlan(base, widths, base_macs, current, steps)


def _keep(importance: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` most important channels, in their original order."""
    return np.sort(np.argsort(-importance, kind="stable")[:count])


def prune_student(model: keras.Model, widths: tuple[int, ...], importance: dict[str, np.ndarray]) -> keras.Model:
    """A student at ``widths`` (same blocks) holding ``model``'s weights for the kept channels."""
    spec = student_spec(model)
    base, levels = spec.widths, len(spec.widths)
    keep = {f"L{n + 1}": _keep(importance[f"L{n + 1}"], widths[n]) for n in range(levels)}
    keep["B"] = _keep(importance["B"], widths[-1])
    hidden = {b: _keep(importance[b], EXPANSION * widths[levels - 1 if b.startswith("bottleneck") else
                                                            int(re.match(r"\w{3}(\d+)", b).group(1)) - 1])
              for b in _blocks(model)}
    all_rgb = np.arange(3)

    def unfold(idx: np.ndarray, width: int) -> np.ndarray:
        """Depth-to-space reads input channel ``p * width + c`` for output channel ``c`` at 2x2 position p."""
        return np.concatenate([p * width + idx for p in range(4)])

    def slices(name: str) -> tuple[np.ndarray, np.ndarray]:
        """(input channel indices, output channel indices) kept for layer ``name``."""
        if name == "enc1_stem":
            return all_rgb, keep["L1"]
        if m := re.fullmatch(r"enc(\d+)_down", name):
            n = int(m.group(1))
            return keep[f"L{n - 1}"], keep[f"L{n}"]
        if name == "bottleneck_down":
            return keep[f"L{levels}"], keep["B"]
        if name == "bottleneck_up_conv":
            return keep["B"], unfold(keep[f"L{levels}"], base[-1])
        if m := re.fullmatch(r"dec(\d+)_up_conv", name):
            n = int(m.group(1))
            return keep[f"L{n}"], unfold(keep[f"L{n - 1}"], base[n - 2])
        if name == "head_correction":
            return keep["L1"], np.arange(12)
        block, part = name.rsplit("_", 1)
        stream = keep[_stream(name, levels)]
        return {"expand": (stream, hidden[block]), "dw": (hidden[block], hidden[block]),
                "project": (hidden[block], stream), "attention": (stream, stream)}[part]

    pruned = replace(spec, widths=tuple(widths)).build(model.name)
    for layer in pruned.layers:
        if not layer.weights:
            continue
        cin, cout = slices(layer.name)
        kernel, bias = model.get_layer(layer.name).get_weights()
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # (kh, kw, C, 1): one filter per channel
            layer.set_weights([kernel[:, :, cin, :], bias[cin]])
        else:
            layer.set_weights([kernel[:, :, cin][..., cout], bias[cout]])
    return pruned
