"""Cutting a frame into overlapping model-sized tiles and blending the results without seams.

A fully convolutional model gives the same value for a pixel whatever window it sees, provided the
pixel lies further inside the window than the model's receptive radius and the window starts on the
model's stride grid. So tiles start on multiples of the model's ``multiple`` (its total stride), and
in the overlap between two tiles each one's weight is zero over the quarter of the overlap nearest
its own edge, then ramps linearly to one: every pixel is taken from windows in which it sits at
least ``overlap / 4`` pixels from an inner edge. Per axis the weights form a partition of unity, so
the 2-D weights (their outer product) do too and no normalisation pass is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisPlan:
    """How one image axis of ``length`` pixels is covered: windows of ``window`` pixels at ``starts``
    over the image padded to ``padded`` pixels, and each window's blending weights."""

    length: int
    padded: int
    window: int
    starts: tuple[int, ...]
    weights: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class TilePlan:
    rows: AxisPlan
    cols: AxisPlan

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.rows.window, self.cols.window

    @property
    def count(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    @property
    def pixels_processed(self) -> int:
        return self.count * self.rows.window * self.cols.window


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def plan_axis(length: int, tile: int, overlap: int, multiple: int, fixed: bool) -> AxisPlan:
    """Cover ``length`` pixels with as few windows of at most ``tile`` pixels as an overlap of at
    least ``overlap`` allows. A resizable model (``fixed=False``) gets windows shrunk to share the
    length evenly, which keeps the pixels processed close to the pixels in the frame; a fixed-size
    model gets windows of exactly ``tile`` pixels."""
    if tile % multiple:
        raise ValueError(f"tile {tile} is not a multiple of the model's stride {multiple}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be at least 0 and below the tile size {tile}")
    padded = _round_up(length, multiple)
    if padded <= tile:
        window = tile if fixed else padded
        return AxisPlan(length, max(padded, window), window, (0,), (np.ones(window, np.float32),))
    n = math.ceil((padded - overlap) / (tile - overlap))
    while True:
        window = tile if fixed else min(tile, _round_up(math.ceil((padded + (n - 1) * overlap) / n), multiple))
        step = (padded - window) / (n - 1)
        starts = [int(i * step) // multiple * multiple for i in range(n - 1)] + [padded - window]
        if all(window - (b - a) >= overlap for a, b in zip(starts, starts[1:])):
            break
        n += 1
    return AxisPlan(length, padded, window, tuple(starts), _blend_weights(starts, window, padded))


def _blend_weights(starts: list[int], window: int, padded: int) -> tuple[np.ndarray, ...]:
    ramps = []
    for i, start in enumerate(starts):
        w = np.ones(window, np.float32)
        pos = np.arange(window, dtype=np.float32)
        if i > 0:  # inner edge on the left: overlap with the previous window
            ov = starts[i - 1] + window - start
            w = np.minimum(w, np.clip((pos - ov / 4) / (ov / 2), 0, 1))
        if i < len(starts) - 1:  # inner edge on the right
            ov = start + window - starts[i + 1]
            w = np.minimum(w, np.clip((window - 1 - pos - ov / 4) / (ov / 2), 0, 1))
        ramps.append(w)
    total = np.zeros(padded, np.float32)
    for start, w in zip(starts, ramps):
        total[start : start + window] += w
    return tuple(w / total[s : s + window] for s, w in zip(starts, ramps))


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1,
               fixed_size: tuple[int, int] | None = None) -> TilePlan:
    """Plan the windows for an ``height`` x ``width`` frame. ``fixed_size`` is the (h, w) of a model
    that cannot be resized; otherwise windows are at most ``tile`` pixels square."""
    if fixed_size:
        return TilePlan(plan_axis(height, fixed_size[0], min(overlap, fixed_size[0] // 2), multiple, True),
                        plan_axis(width, fixed_size[1], min(overlap, fixed_size[1] // 2), multiple, True))
    return TilePlan(plan_axis(height, tile, overlap, multiple, False),
                    plan_axis(width, tile, overlap, multiple, False))


def run_tiled(image: np.ndarray, plan: TilePlan, infer) -> np.ndarray:
    """Apply ``infer`` (HxWxC float32 window -> HxWxC' float32 window of the same size) over ``image``
    according to ``plan`` and blend. The image is reflect-padded to the plan's padded size, so
    border pixels see mirrored context, as a one-pass run over a padded frame would."""
    h, w = image.shape[:2]
    ph, pw = plan.rows.padded, plan.cols.padded
    if (ph, pw) != (h, w):
        mode = "reflect" if ph - h < h and pw - w < w else "symmetric"
        image = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode=mode)
    if plan.count == 1:
        return infer(image)[:h, :w]
    out = None
    for y0, wy in zip(plan.rows.starts, plan.rows.weights):
        for x0, wx in zip(plan.cols.starts, plan.cols.weights):
            pred = infer(image[y0 : y0 + plan.rows.window, x0 : x0 + plan.cols.window])
            if out is None:
                out = np.zeros((ph, pw, pred.shape[2]), np.float32)
            out[y0 : y0 + plan.rows.window, x0 : x0 + plan.cols.window] += pred * (wy[:, None, None] * wx[None, :, None])
    return out[:h, :w]
