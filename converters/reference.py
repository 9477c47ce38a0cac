"""MobileNetV2 as a yardstick: we cannot time a Raspberry Pi or a Jetson here, so we time a student
and MobileNetV2 1.0-224 side by side on this host and scale by MobileNetV2's published latency on
the board (``targets/*.json``, ``reference``):

    expected_ms(target) = student_ms_here * mobilenet_ms_on_target / mobilenet_ms_here

This assumes the student runs at the same fraction of the hardware's speed as MobileNetV2 does on
both machines; the achieved MACs per second of both, printed alongside, say how far that holds
(DESIGN.md: full-resolution element-wise work gains less from INT8 than MobileNetV2's convolutions).

MobileNetV2 is built with random weights (timing does not depend on them), quantized to full INT8
like a student and cached under ``<repo>/.cache/``.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
MOBILENET_V2_SIZE = 224
MOBILENET_V2_SHAPE = (1, MOBILENET_V2_SIZE, MOBILENET_V2_SIZE, 3)


def mobilenet_v2_tflite(cache: Path = CACHE) -> Path:
    """MobileNetV2 1.0-224 (Keras applications, ``weights=None``) as a full-INT8 TFLite file (int8 in
    and out, calibrated on real photo crops scaled to [-1, 1] as MobileNetV2 expects), built once
    and cached."""
    path = Path(cache) / "mobilenet_v2_1.0_224_int8.tflite"
    if path.exists():
        return path
    import keras

    from converters.quantize import quantize_int8, representative_crops

    model = keras.applications.MobileNetV2(input_shape=MOBILENET_V2_SHAPE[1:], alpha=1.0, weights=None)
    crops = (2.0 * crop - 1.0 for crop in representative_crops(count=16, crop=MOBILENET_V2_SIZE, seed=1))
    return quantize_int8(model, crops, path, tile=(MOBILENET_V2_SIZE, MOBILENET_V2_SIZE))


def tflite_macs(path: str | os.PathLike, height: int | None = None, width: int | None = None) -> int:
    """Multiply-accumulates of one invoke of a TFLite model, read from the flatbuffer itself (so any
    ``.tflite`` can be measured, not only our Keras models): convolutions ``H_out*W_out*C_out*kh*kw*
    C_in``, depthwise ``H_out*W_out*C_out*kh*kw``, fully connected ``N*C_out*C_in``. A model with free
    spatial dims is resized to ``height`` x ``width`` first."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without XNNPACK: its delegated subgraph hides the intermediate tensors' resized shapes.
    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    if height is not None:
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], [1, height, width, int(inp["shape"][-1])], strict=False)
    interpreter.allocate_tensors()
    shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()}
    macs = 0
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        out, weights = shapes[op["outputs"][0]], shapes[op["inputs"][1]]
        if name == "CONV_2D":  # weights (C_out, kh, kw, C_in)
            macs += math.prod(out) * math.prod(weights[1:])
        elif name == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, C_out)
            macs += math.prod(out) * weights[1] * weights[2]
        else:  # weights (C_out, C_in)
            macs += math.prod(out) * weights[1]
    return macs


class _Timed:
    """One LiteRT interpreter on a fixed input shape with a random input of its own dtype."""

    def __init__(self, path: Path, shape: tuple[int, ...] | None, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        inp = self.interpreter.get_input_details()[0]
        if shape is not None:
            self.interpreter.resize_tensor_input(inp["index"], list(shape), strict=False)
        self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        rng = np.random.default_rng(0)
        dtype = np.dtype(inp["dtype"])
        x = (rng.integers(-128, 128, inp["shape"]) if dtype.kind == "i" else rng.random(inp["shape"])).astype(dtype)
        self.interpreter.set_tensor(inp["index"], x)

    def __call__(self) -> float:
        start = time.perf_counter()
        self.interpreter.invoke()
        return time.perf_counter() - start


@dataclass(frozen=True)
class SideBySide:
    """Median milliseconds of models timed in interleaved rounds on one host, overall and per
    repeat (``repeat_ms[name][r]``: the median of repeat ``r``'s rounds)."""

    medians_ms: dict[str, float]
    rounds: int
    threads: int
    repeat_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def repeats(self) -> int:
        return len(next(iter(self.repeat_ms.values()), [])) or 1


def time_side_by_side(models: dict[str, tuple[Path, tuple[int, ...] | None]], *, threads: int,
                      rounds: int = 20, warmup: int = 3, repeats: int = 1) -> SideBySide:
    """Time each ``name: (tflite path, input shape or None)`` once per round, round after round, with
    the same LiteRT settings and threads; report medians, overall and for each of ``repeats``
    consecutive blocks of ``rounds`` rounds. Interleaving makes a busy host (another job, frequency
    changes) slow all models alike, so their ratio stays meaningful; the spread of the repeats'
    ratios is what is left of the noise."""
    timed = {name: _Timed(Path(path), shape, threads) for name, (path, shape) in models.items()}
    for _ in range(warmup):
        for run in timed.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(rounds * repeats):
        for name, run in timed.items():
            samples[name].append(run())
    per_repeat = {name: [1000.0 * float(np.median(s[r * rounds : (r + 1) * rounds])) for r in range(repeats)]
                  for name, s in samples.items()}
    return SideBySide({name: 1000.0 * float(np.median(s)) for name, s in samples.items()}, rounds * repeats, threads,
                      per_repeat)


def expected_ms(student_ms_here: float, mobilenet_ms_here: float, mobilenet_ms_target: float) -> float:
    """The student's expected latency on a target, scaled by MobileNetV2's speed ratio."""
    return student_ms_here * mobilenet_ms_target / mobilenet_ms_here


def host_cpu() -> str:
    """The host's CPU model name and core count, for the record."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
