"""The fused frame path: an 8-bit frame through an INT8 LiteRT model with one pass in, one pass out.

The plain path (``Deblurrer._deblur_u8`` and ``__call__``) makes about ten passes over every pixel
of a frame: look up the model's input codes, pad, copy each window into the interpreter
(``set_tensor``) and out of it (``get_tensor``), look up each output code's real value, blend the
windows in float, add the residual ``x - seen(x)``, clip, scale, round and convert to 8 bits. For a
small INT8 student those passes cost as much as a good part of the model (docs/BENCHMARKS.md).

Here the same numbers come from:

* one table ``final[c, x]`` (256 x 256 uint8) computed once per model by the very arithmetic of the
  plain path, ``uint8(rint(clip(real[c] + residual[x], 0, 1) * 255))`` in float32, for output code
  ``c`` and input value ``x``. When it does not depend on ``x`` (an input scale of 1/255 sees every
  8-bit value exactly, so the residual is 0: the bundled students) the output is one 256-entry
  lookup of the output codes, ``final1d[c]``;
* for a model whose output is on its input's grid (``converters.output_grid``), ``final1d`` is
  that XOR again, and the output side is one XOR too;
* the input codes written straight into the interpreter's own input buffer (its ``tensor()`` view):
  for ``zero_point = -128`` and scale 1/255 they are the 8-bit value with its top bit flipped, one
  XOR, otherwise one lookup; buffers are allocated once per frame size;
* the output codes read from the interpreter's output buffer (no ``get_tensor`` copy) and looked up
  straight into the result;
* with several windows, the blend done only where it changes anything: a pixel that one window
  alone covers with weight 1 (the others 0) is that window's value exactly (``0 + 1 * v == v`` in
  float32), so it is looked up from that window like a one-window frame; only the ramps of the
  overlaps (half of each overlap) are blended in float32, with the plain path's weights and order.
  Windows of weight exactly 0 on a block are left out of its sum: ``a + 0 * v`` is ``a`` (at most
  the sign of a zero differs, which rounds to the same 8-bit value).

The result is bit-identical to the plain path (``tests/test_model.py`` checks it on real images,
one window and several, padded and not). Views of the interpreter's buffers are dropped before each
``invoke``: LiteRT refuses to run while numpy holds one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .tiling import AxisPlan, TilePlan


def final_table(real: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """``final[c, x]``: the plain path's 8-bit result for output code ``c`` (``real[c]``, already in
    [0, 1]) and input value ``x`` (``residual[x]``), in the same float32 operations and order:
    ``real + residual``, clip to [0, 1], times 255, round half to even, to uint8."""
    y = real.astype(np.float32)[:, None] + residual.astype(np.float32)[None, :]
    np.clip(y, 0.0, 1.0, out=y)
    y *= np.float32(255.0)
    return np.rint(y, out=y).astype(np.uint8)


def _segments(axis: AxisPlan) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """The axis cut into runs ``(start, end, owner, covering)`` over ``[0, length)``: ``covering`` the
    windows whose extent holds the run, ``owner`` the window whose weight is exactly 1 there while
    every other covering window's is exactly 0, or -1 where weights are shared (a ramp)."""
    n, length = len(axis.starts), axis.length
    weights = np.zeros((n, axis.padded), np.float32)
    covers = np.zeros((n, axis.padded), bool)
    for i, (s, w) in enumerate(zip(axis.starts, axis.weights)):
        weights[i, s : s + axis.window] = w
        covers[i, s : s + axis.window] = True
    owner = np.full(axis.padded, -1)
    for p in range(length):
        ones = np.flatnonzero(weights[:, p] == 1.0)
        others = np.delete(weights[:, p], ones)
        if len(ones) == 1 and not others.any():
            owner[p] = ones[0]
    runs, start = [], 0
    for p in range(1, length + 1):  # a solo run may cross another window's edge; a shared one may not
        if p == length or owner[p] != owner[start] or (owner[p] < 0 and (covers[:, p] != covers[:, start]).any()):
            runs.append((start, p, int(owner[start]), tuple(int(i) for i in np.flatnonzero(covers[:, start]))))
            start = p
    return runs


@dataclass(frozen=True)
class _Solo:
    """A block of the frame taken from one window alone: frame ``dst`` = window ``src``."""

    window: int
    dst: tuple[slice, slice]
    src: tuple[slice, slice]


@dataclass(frozen=True)
class _Shared:
    """A block of the frame blended from several windows: per window (in the plain path's order)
    its index, its source slices and its float32 2-D weights."""

    dst: tuple[slice, slice]
    parts: tuple[tuple[int, tuple[slice, slice], np.ndarray], ...]


@dataclass(frozen=True)
class FusedPlan:
    """A ``TilePlan`` precomputed for the fused path: windows, solo and shared blocks, the source
    index of every padded row and column (``np.pad``'s reflection, as index arrays)."""

    windows: tuple[tuple[int, int], ...]  # (y0, x0), row-major like run_tiled
    window_shape: tuple[int, int]
    solos: tuple[tuple[_Solo, ...], ...]  # per window
    shared: tuple[_Shared, ...]
    pad_rows: np.ndarray | None  # source row of each padded row (rows length..padded-1), or None
    pad_cols: np.ndarray | None


def _pad_index(length: int, padded: int, mode: str) -> np.ndarray | None:
    if padded == length:
        return None
    return np.pad(np.arange(length), (0, padded - length), mode=mode)[length:]


def fused_plan(plan: TilePlan) -> FusedPlan:
    """Blocks and weights for ``plan``, computed once per frame size."""
    rows, cols = plan.rows, plan.cols
    h, w = rows.length, cols.length
    mode = "reflect" if rows.padded - h < h and cols.padded - w < w else "symmetric"  # as run_tiled
    row_runs, col_runs = _segments(rows), _segments(cols)
    n_cols = len(cols.starts)
    windows = tuple((y0, x0) for y0 in rows.starts for x0 in cols.starts)
    solos: list[list[_Solo]] = [[] for _ in windows]
    shared = []
    for r0, r1, ro, rcover in row_runs:
        for c0, c1, co, ccover in col_runs:
            dst = (slice(r0, r1), slice(c0, c1))
            if ro >= 0 and co >= 0:
                k = ro * n_cols + co
                y0, x0 = windows[k]
                solos[k].append(_Solo(k, dst, (slice(r0 - y0, r1 - y0), slice(c0 - x0, c1 - x0))))
                continue
            # The windows run_tiled adds here, row-major, less those of weight exactly 0 on the block
            # (along an axis where one window owns the run): adding 0 * v changes no value.
            parts = []
            for i in (rcover if ro < 0 else (ro,)):
                for j in (ccover if co < 0 else (co,)):
                    y0, x0 = rows.starts[i], cols.starts[j]
                    src = (slice(r0 - y0, r1 - y0), slice(c0 - x0, c1 - x0))
                    # run_tiled's weight, wy[:, None, None] * wx[None, :, None], on this block
                    weight = rows.weights[i][src[0], None, None] * cols.weights[j][None, src[1], None]
                    parts.append((i * n_cols + j, src, weight))
            shared.append(_Shared(dst, tuple(parts)))
    return FusedPlan(windows, plan.window_shape, tuple(tuple(s) for s in solos), tuple(shared),
                     _pad_index(h, rows.padded, mode), _pad_index(w, cols.padded, mode))


class FusedU8:
    """``Deblurrer(frame)`` for HxWxC uint8 frames through an NHWC INT8 LiteRT model, fused.

    ``codes``, ``real`` and ``residual`` are the Deblurrer's lookup tables (input code of each
    8-bit value, real value in [0, 1] of each output code, residual of each value)."""

    def __init__(self, runner, codes: np.ndarray, real: np.ndarray, residual: np.ndarray):
        self.runner = runner
        self.codes = codes
        self.real = np.ascontiguousarray(real, np.float32)
        self.residual = np.ascontiguousarray(residual, np.float32)
        self.final = final_table(self.real, self.residual)
        # Independent of the input value (a residual of 0, or too small to move a rounding):
        self.final1d = self.final[:, 0].copy() if (self.final == self.final[:, :1]).all() else None
        self.residual_zero = not self.residual.any()
        flip = np.arange(256, dtype=np.uint8) ^ 0x80  # int8 code -> 8-bit value for scale 1/255, zero point -128
        self.xor = bool(np.array_equal(codes.view(np.uint8), flip))
        # An output on the frame's own grid (converters.output_grid): the output side is the same XOR.
        self.out_xor = self.final1d is not None and bool(np.array_equal(self.final1d, flip))
        self._plans: dict[tuple[int, int], FusedPlan] = {}
        self._buffers: dict[tuple[int, ...], np.ndarray] = {}

    def _plan(self, plan: TilePlan) -> FusedPlan:
        key = (plan.rows.length, plan.cols.length)
        if key not in self._plans:
            self._plans[key] = fused_plan(plan)
        return self._plans[key]

    def _buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A reused buffer of the padded frame's input codes (one per frame size)."""
        if shape not in self._buffers:
            self._buffers[shape] = np.empty(shape, self.codes.dtype)
        return self._buffers[shape]

    @staticmethod
    def _lookup(values: np.ndarray, table: np.ndarray) -> np.ndarray:
        """``table[values]`` for uint8 ``values``: OpenCV's LUT where it keeps the shape (3 or 4
        channels), numpy's take otherwise; the same numbers either way."""
        return cv2.LUT(values, table) if values.shape[-1] in (3, 4) else np.take(table, values)

    def _encode(self, rgb: np.ndarray, out: np.ndarray) -> None:
        """The model's input codes of ``rgb`` into ``out`` (same shape, the model's int8)."""
        if self.xor:
            np.bitwise_xor(rgb, np.uint8(0x80), out=out.view(np.uint8))
        else:
            cv2.LUT(rgb, self.codes, dst=out) if rgb.shape[-1] in (3, 4) else np.take(self.codes, rgb, out=out)

    def _decode(self, codes: np.ndarray, rgb: np.ndarray, dst: np.ndarray) -> None:
        """The final 8-bit values of a block: output ``codes`` (int8) for input values ``rgb``."""
        c = codes.view(np.uint8)
        if self.out_xor:
            np.bitwise_xor(c, np.uint8(0x80), out=dst)
        elif self.final1d is not None:
            if c.shape[-1] in (3, 4):
                cv2.LUT(c, self.final1d, dst=dst)
            else:
                np.take(self.final1d, c, out=dst)
        else:
            np.take(self.final, c.astype(np.intp) * 256 + rgb, out=dst)

    def __call__(self, rgb: np.ndarray, plan: TilePlan) -> np.ndarray:
        rgb = np.ascontiguousarray(rgb)  # a view of RGBA's colour: OpenCV takes no channel stride
        h, w, ch = rgb.shape
        fp = self._plan(plan)
        wh, ww = fp.window_shape
        runner, interp = self.runner, self.runner.interp
        runner.prepare((1, wh, ww, ch))
        result = np.empty((h, w, ch), np.uint8)
        # Unpadded frames are encoded window by window straight into the interpreter (the overlaps
        # twice); padded ones once into a reused buffer, padded there, and copied in per window.
        padded = fp.pad_rows is not None or fp.pad_cols is not None
        if padded:
            frame = self._buffer((plan.rows.padded, plan.cols.padded, ch))
            self._encode(rgb, frame[:h, :w])
            if fp.pad_rows is not None:
                frame[h:, :w] = frame[fp.pad_rows, :w]
            if fp.pad_cols is not None:
                frame[:, w:] = frame[:, fp.pad_cols]
        acc = [np.zeros((s.dst[0].stop - s.dst[0].start, s.dst[1].stop - s.dst[1].start, ch), np.float32)
               for s in fp.shared]
        for k, (y0, x0) in enumerate(fp.windows):
            view = interp.tensor(runner.input["index"])()
            if padded:
                np.copyto(view[0], frame[y0 : y0 + wh, x0 : x0 + ww])
            else:
                self._encode(rgb[y0 : y0 + wh, x0 : x0 + ww], view[0])
            del view
            interp.invoke()
            out = interp.tensor(runner.output["index"])()[0]
            for solo in fp.solos[k]:
                self._decode(out[solo.src], rgb[solo.dst], result[solo.dst])
            for a, block in zip(acc, fp.shared):
                for index, src, weight in block.parts:
                    if index == k:
                        pred = self._lookup(out[src].view(np.uint8), self.real)
                        pred *= weight
                        a += pred
            del out
        for a, block in zip(acc, fp.shared):  # as _deblur_u8 and __call__: + residual, clip, scale, round
            if not self.residual_zero:  # else adding 0.0 would change no value
                a += self._lookup(rgb[block.dst], self.residual)
            np.maximum(a, np.float32(0.0), out=a)  # np.clip(a, 0, 1)'s values, without its slow dispatch
            np.minimum(a, np.float32(1.0), out=a)
            a *= np.float32(255.0)
            result[block.dst] = np.rint(a, out=a).astype(np.uint8)
        return result
