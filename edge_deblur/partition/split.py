"""``split``: the INT8 student cut at a level of its U; the board runs the top, the server the bottom.

The student (converters/student.py) is ``enc1 -> ... -> encL -> bottleneck -> decL -> ... -> dec1 ->
head``, ``dec{n}`` also taking ``enc{n}``'s output (the skip) and ``head`` the image (the global
residual). Cut at level ``n``, the board runs ``enc1..enc{n}`` (*head part*), sends ``enc{n}``'s
output up, the server runs ``enc{n+1} .. bottleneck .. dec{n+1}`` (*middle*) and sends its output
down, and the board runs ``dec{n} .. dec1, head`` (*tail part*) with the skips it kept: skips never
cross the link. At level ``n`` both tensors are ``widths[n-1]`` channels at 1/2^n of the frame's
side, ``widths[n-1] / (3 * 4^n)`` of the frame's bytes each way: for the Pi 5 student (16, 24, 64)
that is 1.33x at level 1 and 0.5x at level 2 (the default), before compression.

The cut is made in the shipped ``.tflite`` itself (``cut_tflite``: the operators that compute the
wanted tensors from the given ones, re-indexed into a model of their own, through LiteRT's own
flatbuffer schema; no TensorFlow), so the three parts run exactly the INT8 arithmetic of the
whole student: the tensors at a cut are already INT8, with the scale and zero point the
quantizer chose for them (``real = scale * (q - zero_point)``), and they travel as those codes,
zlib-compressed, with scale, zero point, shape and the student's fingerprint stated in the
request. The server refuses features of another student or scale (400); any failure (that one,
a refusal, a deadline, a dead server) makes the board run the middle itself, from the same cut,
so a split frame equals the local student's whichever side ran its middle.

The parts plug into :class:`edge_deblur.model.Deblurrer` as its runner, so tiling, padding to the
stride, the 8-bit lookup tables and the residual at full precision are the local student's own.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import re
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..model import Deblurrer, Quantization, resolve_model
from .client import V2Client
from .offload import V2_OVERHEAD, Method, OffloadConfig, ServerCalls

CODEC = "zlib"
# zlib level 1: on the level-2 codes of 480x480 Kodak crops, 0.76 (up) and 0.65 (down) of the raw
# bytes, against level 6's 0.74 and 0.62, in about 65% of its time (docs/BENCHMARKS.md)
ZLIB_LEVEL = 1


def _schema():
    try:
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError as e:  # older LiteRT wheels: the schema tools are what the cut needs
        raise ModelError(f"split mode needs ai-edge-litert with its flatbuffer tools ({e})") from e
    return flatbuffer_utils


def fingerprint(path: Path) -> str:
    """The first 16 hex digits of the model file's SHA-256: both ends must cut the same student."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def stage_tensors(model) -> dict[str, int]:
    """Each stage's output tensor in a student's flatbuffer: the output of the last operator (in
    execution order) whose tensor name carries the stage's layer prefix (``.../enc2_block0_add/...``;
    converters/student.py names every layer after its stage), and ``head`` the graph's output."""
    graph = model.subgraphs[0]
    found: dict[str, int] = {}
    for op in graph.operators:
        for t in op.outputs:
            for names in graph.tensors[t].name.decode(errors="replace").split(";"):
                m = re.search(r"/((?:enc|dec)\d+|bottleneck)_", names)
                if m:
                    found[m.group(1)] = t
    found["head"] = graph.outputs[0]
    return found


def levels_of(stages: dict[str, int]) -> int:
    return sum(1 for s in stages if re.fullmatch(r"enc\d+", s))


def cut_tflite(model, inputs: list[int], outputs: list[int]) -> bytes:
    """A ``.tflite`` of the operators of ``model`` (a flatbuffer ModelT) that compute ``outputs``
    from ``inputs``: walk back from each output through its producers, stopping at the inputs and
    at constants; anything else reached means the cut is not closed and is refused. Tensors and
    buffers are re-indexed into the new model; signatures (which name the old indices) are dropped."""
    fu = _schema()
    model = copy.deepcopy(model)
    graph = model.subgraphs[0]
    producer = {t: i for i, op in enumerate(graph.operators) for t in op.outputs}
    needed_ops, stack, seen = set(), list(outputs), set()
    while stack:
        t = stack.pop()
        if t in seen or t < 0:
            continue
        seen.add(t)
        if t in inputs:
            continue
        if t in producer:
            needed_ops.add(producer[t])
            stack.extend(graph.operators[producer[t]].inputs)
            continue
        buffer = model.buffers[graph.tensors[t].buffer]
        if buffer.data is None and not buffer.size:
            raise ModelError(f"cut: tensor {graph.tensors[t].name.decode()} is neither given nor computable")
    ops = [graph.operators[i] for i in sorted(needed_ops)]
    used = sorted({t for op in ops for t in [*op.inputs, *op.outputs, *(op.intermediates if op.intermediates is not None else [])]
                   if t >= 0} | set(inputs) | set(outputs))
    index = {old: new for new, old in enumerate(used)}
    buffers = sorted({graph.tensors[t].buffer for t in used} - {0})
    for md in model.metadata or []:
        buffers.append(md.buffer)
    buffer_index = {0: 0, **{old: new for new, old in enumerate(buffers, start=1)}}
    for op in ops:
        op.inputs = [index[t] if t >= 0 else t for t in op.inputs]
        op.outputs = [index[t] for t in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [index[t] for t in op.intermediates]
    tensors = [graph.tensors[t] for t in used]
    for tensor in tensors:
        tensor.buffer = buffer_index[tensor.buffer]
    for md in model.metadata or []:
        md.buffer = buffer_index[md.buffer]
    model.buffers = [model.buffers[0]] + [model.buffers[b] for b in buffers]
    graph.tensors, graph.operators = tensors, ops
    graph.inputs, graph.outputs = [index[t] for t in inputs], [index[t] for t in outputs]
    model.signatureDefs = []
    return bytes(fu.convert_object_to_bytearray(model))


def _quant(tensor) -> Quantization:
    q = tensor.quantization
    return Quantization(float(q.scale[0]), int(q.zeroPoint[0]), np.dtype(np.int8))


@dataclass(frozen=True)
class StudentCut:
    """The three parts of a student cut at ``level``, and what crosses the link."""

    level: int
    student: str  # fingerprint of the whole student's file
    head: bytes  # image codes -> enc1..enc{level} (the last one goes up)
    middle: bytes  # enc{level} -> dec{level+1}
    tail: bytes  # dec{level+1}, enc1..enc{level}, image codes -> the student's output codes
    up: Quantization  # enc{level}'s scale and zero point
    down: Quantization  # dec{level+1}'s
    up_channels: int
    down_channels: int

    @property
    def stride(self) -> int:
        """Features are 1/stride of the frame's side."""
        return 2 ** self.level


@lru_cache(maxsize=8)
def _cut(path: str, level: int) -> StudentCut:
    fu = _schema()
    model = fu.read_model(path)
    graph = model.subgraphs[0]
    stages = stage_tensors(model)
    levels = levels_of(stages)
    if len(graph.inputs) != 1 or graph.tensors[graph.inputs[0]].type != 9:  # 9: INT8 in the schema
        raise ModelError(f"{path}: split mode cuts an INT8 student (one INT8 image in)")
    if not all(s in stages for s in ["bottleneck", *(f"enc{n}" for n in range(1, levels + 1)),
                                     *(f"dec{n}" for n in range(1, levels + 1))]) or levels < 1:
        raise ModelError(f"{path}: not a U-shaped student (stages found: {', '.join(stages)})")
    if not 1 <= level <= levels:
        raise ModelError(f"{path}: cut level {level}: this student has levels 1 to {levels}")
    image = graph.inputs[0]
    skips = [stages[f"enc{n}"] for n in range(1, level + 1)]
    below = stages["bottleneck"] if level == levels else stages[f"dec{level + 1}"]
    t = graph.tensors
    return StudentCut(
        level, fingerprint(Path(path)),
        head=cut_tflite(model, [image], skips),
        middle=cut_tflite(model, [skips[-1]], [below]),
        tail=cut_tflite(model, [below, *skips, image], [stages["head"]]),
        up=_quant(t[skips[-1]]), down=_quant(t[below]),
        up_channels=int(t[skips[-1]].shape[-1]), down_channels=int(t[below].shape[-1]))


def cut_student(model: str | Path = "default", level: int = 2) -> StudentCut:
    """``model`` (a bundled name or a ``.tflite`` path) cut at ``level`` (cached per file and level)."""
    path = resolve_model(model)
    if path.suffix != ".tflite":
        raise ModelError(f"{path}: split mode cuts a .tflite INT8 student")
    return _cut(str(path), level)


class Part:
    """One part of a cut on a LiteRT interpreter, re-allocated only when its input shapes change;
    inputs and outputs in the order the cut gave them."""

    def __init__(self, flatbuffer: bytes, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_content=flatbuffer, num_threads=threads)
        self.inputs = self.interp.get_input_details()
        self.outputs = self.interp.get_output_details()
        self._shapes = None

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        shapes = tuple(a.shape for a in arrays)
        if shapes != self._shapes:
            for d, a in zip(self.inputs, arrays):
                self.interp.resize_tensor_input(d["index"], list(a.shape), strict=False)
            self.interp.allocate_tensors()
            self._shapes = shapes
        for d, a in zip(self.inputs, arrays):
            self.interp.set_tensor(d["index"], np.ascontiguousarray(a))
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"]) for d in self.outputs]


def pack(codes: np.ndarray) -> bytes:
    """INT8 feature codes as the wire carries them: C-order bytes, zlib (RFC 1950)."""
    return zlib.compress(np.ascontiguousarray(codes).tobytes(), ZLIB_LEVEL)


def unpack(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The INT8 codes of ``shape`` packed in ``data``. Inflates at most the bytes that shape holds
    (a small message cannot expand without bound) and refuses any other length."""
    want = int(np.prod(shape))
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(data, want)
    except zlib.error as e:
        raise ValueError(f"features: not {CODEC} data ({e})") from None
    if len(raw) != want or inflate.unconsumed_tail or not inflate.eof:
        raise ValueError(f"features: {len(raw)}{'+' if inflate.unconsumed_tail else ''} bytes, expected {want} "
                         f"for shape {list(shape)}")
    return np.frombuffer(raw, dtype=np.int8).reshape(shape)


def request_parameters(cut: StudentCut, shape: tuple[int, ...]) -> dict:
    """What the server must know to run the middle on packed codes (all V2 parameter types)."""
    return {"codec": CODEC, "student": cut.student, "cut": cut.level, "shape": "x".join(map(str, shape)),
            "scale": cut.up.scale, "zero_point": cut.up.zero_point}


@dataclass
class SplitSummary:
    split: int = 0  # windows whose middle the server ran
    local: int = 0  # windows whose middle the board ran
    fallbacks: Counter = field(default_factory=Counter)
    bytes_up: int = 0
    bytes_down: int = 0
    raw_up: int = 0  # the feature codes before compression
    raw_down: int = 0
    seconds: dict = field(default_factory=lambda: Counter())  # part -> seconds (head, remote, tail, local middle)

    def __str__(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in self.fallbacks.most_common()) or "none"
        ratio = (f" (zlib: {self.bytes_up / self.raw_up:.2f} up, {self.bytes_down / self.raw_down:.2f} down of the raw codes)"
                 if self.raw_up and self.raw_down else "")
        return (f"{self.split + self.local} window(s): {self.split} middle on the server, {self.local} on the board; "
                f"fallbacks: {why}; {self.bytes_up / 1e6:.2f} MB up, {self.bytes_down / 1e6:.2f} MB down{ratio}")


class MiddleFailed(Exception):
    """The server did not run the middle (the reason is the message); raised only for probes."""


class SplitRunner:
    """A :class:`~edge_deblur.model.Deblurrer` runner: the student's codes in, its codes out, the
    middle on the server when it answers in time and on the board when it does not."""

    backend = "split"

    def __init__(self, cut: StudentCut, config: OffloadConfig, threads: int, client: V2Client | None = None,
                 clock=time.monotonic):
        self.cut, self.config = cut, config
        self.head, self.tail = Part(cut.head, threads), Part(cut.tail, threads)
        self._middle: Part | None = None  # the board's own copy, made at the first fallback
        self._threads = threads
        self.client = client or V2Client(config.url, config.token)
        self.calls = ServerCalls(config, clock)
        self.summary = SplitSummary()
        self._lock = threading.Lock()
        self.strict = threading.local()  # strict.on: a failed middle raises MiddleFailed (the planner's probes)

    def middle_here(self, codes: np.ndarray) -> np.ndarray:
        if self._middle is None:
            self._middle = Part(self.cut.middle, self._threads)
        return self._middle(codes)[0]

    def _remote(self, codes: np.ndarray) -> np.ndarray | str:
        shape = codes.shape
        body = pack(codes)
        params = request_parameters(self.cut, shape)
        # [1, n]: a batch of one, what both `edge-deblur serve` and the exported Triton model take
        exchange = self.calls.attempt(lambda: self.client.infer(self.config.model, "features",
                                                                np.frombuffer(body, np.uint8)[None],
                                                                timeout=self.config.deadline_s, parameters=params))
        if isinstance(exchange, str):
            return exchange
        out = np.asarray(exchange.output)
        if out.ndim == 2 and out.shape[0] == 1:
            out = out[0]
        if out.dtype != np.uint8 or out.ndim != 1:
            return "bad answer (features)"
        try:
            result = unpack(out.tobytes(), (shape[0], shape[1], shape[2], self.cut.down_channels))
        except ValueError:
            return "bad answer (features)"
        self.summary.bytes_up += exchange.bytes_up
        self.summary.bytes_down += exchange.bytes_down
        self.summary.raw_up += codes.nbytes
        self.summary.raw_down += result.nbytes
        return result

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            t0 = time.perf_counter()
            skips = self.head(x)
            t1 = time.perf_counter()
            below = self._remote(skips[-1])
            t2 = time.perf_counter()
            if isinstance(below, str) and getattr(self.strict, "on", False):
                raise MiddleFailed(below)
            if isinstance(below, str):
                self.summary.local += 1
                self.summary.fallbacks[below] += 1
                below = self.middle_here(skips[-1])
                self.summary.seconds["middle here"] += time.perf_counter() - t2
            else:
                self.summary.split += 1
                self.summary.seconds["middle remote"] += t2 - t1
            t3 = time.perf_counter()
            out = self.tail(below, *skips, x)[0]
            self.summary.seconds["head"] += t1 - t0
            self.summary.seconds["tail"] += time.perf_counter() - t3
            return out

    def close(self) -> None:
        self.client.close()


class SplitOffload:
    """``SplitOffload(OffloadConfig(url, token, model="split"), student="default")(frame)``: the
    student's result, its middle run by the server. ``local``, when given, does frames the student
    cannot take here (none today: the student's runtime takes every frame the runtime does)."""

    def __init__(self, config: OffloadConfig, student: str | Path = "default", level: int = 2,
                 threads: int | None = None, local: Method | None = None, client: V2Client | None = None):
        threads = threads or os.cpu_count() or 1
        whole = Deblurrer.load(student, threads=threads)
        if whole.info.input_quant is None or whole.info.layout != "NHWC":
            raise ModelError(f"{whole.info.path}: split mode cuts an INT8 NHWC student")
        self.cut = cut_student(whole.info.path, level)
        self.runner = SplitRunner(self.cut, config, threads, client)
        # the same model, run by parts: not one interpreter (no path that reaches into a single one)
        self.deblur = Deblurrer(self.runner, dataclasses.replace(whole.info, backend="split"), whole.tiles)
        self.local = local

    @property
    def summary(self) -> SplitSummary:
        return self.runner.summary

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.deblur(frame)

    def wire_estimate(self, frame: np.ndarray) -> tuple[float, float, float]:
        """(bytes up + down, a lower bound of them, 0): the cut's feature codes for ``frame``'s size
        (1/stride of its sides, the cut's channels up and down) at zlib's measured 0.7 of the raw
        codes (0.76 up, 0.65 down on Kodak crops; the bound: 0.35), plus the V2 headers. Board time
        (the head and tail parts) is not known before a measurement: it is not part of this."""
        h, w = np.shape(frame)[:2]
        s = self.cut.stride
        codes = -(-h // s) * -(-w // s) * (self.cut.up_channels + self.cut.down_channels)
        return 0.7 * codes + 2 * V2_OVERHEAD, 0.35 * codes + 2 * V2_OVERHEAD, 0.0

    def probe(self, frame: np.ndarray):
        """The split path with the middle on the server only, for the planner's background
        measurement: True when it ran there, else the reason (the board runs no middle for it)."""
        self.runner.strict.on = True
        try:
            self.deblur(frame)
            return True
        except MiddleFailed as e:
            return str(e)
        finally:
            self.runner.strict.on = False

    def close(self) -> None:
        self.runner.close()
