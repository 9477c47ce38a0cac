"""The models a server serves: each says its tensors (for metadata and validation) and predicts.

A model is any object with ``name``, ``version``, ``platform``, ``inputs`` and ``outputs`` (lists of
:class:`TensorSpec`) and ``predict(inputs, parameters) -> {name: array}``; :class:`ModelRegistry`
holds them by name. ``default_registry`` registers what this installation can serve:

- ``deblur``: the best quality the server has, for stills: the auto engine (blind kernel estimation
  and restoration, checked, falling back to the feed-forward network; :class:`AutoDeblurModel`)
  where ``edge_deblur.blind`` exists, else the network; seconds per frame (a 640x480 frame took
  17.7-19.3 s on this host's CPU, docs/BENCHMARKS.md), so never a stream's offload target;
- ``teacher``: the feed-forward network alone (:class:`DeblurModel`, ~0.2 s for 640x480), what the
  board's real-time offload and the planner's sized pings call;
- ``kernel`` when ``edge_deblur.blind`` exists, ``split`` (the middle stages of the bundled INT8
  students, for the board's split mode).

A model's ``predict`` may answer an :class:`Outputs` (a dict of arrays with ``parameters``): the
transports send those as the V2 response's ``parameters`` (``deblur`` says the ``path`` each
image took: blind, network or input), and the engine counts a ``path`` in the metrics.

A model may say what runs it (``engine``: ``network``, ``auto``, ``split``, ``kernel``): the
registry's :meth:`ModelRegistry.config` (``GET /v2/models/{m}/config``, Triton's model
configuration endpoint, not part of the V2 protocol) reports it as the parameter
``edge_deblur_engine``, the marker ``edge-deblur export triton`` writes into each config.pbtxt,
so a board tells the auto engine from a network by what the model says, not by its name.
"""

from __future__ import annotations

import importlib
import math
import os
import queue
import threading
from dataclasses import dataclass

import numpy as np

from ..model import Deblurrer, resolve_model
from .protocol import DATATYPES, ProtocolError, datatype_of

ENGINE_KEY = "edge_deblur_engine"  # the model configuration's parameter saying what runs the model


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as metadata states it; -1 is a dimension of any size. ``also`` lists other shapes
    accepted for the same tensor (e.g. a gray image as [1, H, W] as well as [1, H, W, 1])."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    also: tuple[tuple[int, ...], ...] = ()

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def matches(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The pattern ``shape`` fits, or None."""
        for pattern in (self.shape, *self.also):
            if len(pattern) == len(shape) and all(p in (-1, s) for p, s in zip(pattern, shape)):
                return pattern
        return None


def check_inputs(model, inputs: dict[str, np.ndarray], max_pixels: int) -> None:
    """Refuse inputs that do not have the model's names, datatypes and shapes, or whose free
    dimensions (the -1s: an image's height and width) multiply to more than ``max_pixels``."""
    specs = {s.name: s for s in model.inputs}
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise ProtocolError(f"model '{model.name}' has no input {', '.join(repr(u) for u in unknown)} "
                            f"(inputs: {', '.join(specs)})")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise ProtocolError(f"model '{model.name}': input {', '.join(repr(m) for m in missing)} missing")
    for name, arr in inputs.items():
        spec = specs[name]
        if datatype_of(arr.dtype) != spec.datatype:
            raise ProtocolError(f"model '{model.name}' input '{name}': datatype {datatype_of(arr.dtype)}, "
                                f"expected {spec.datatype}")
        pattern = spec.matches(arr.shape)
        if pattern is None:
            wanted = " or ".join(str(list(p)) for p in (spec.shape, *spec.also))
            raise ProtocolError(f"model '{model.name}' input '{name}': shape {list(arr.shape)}, expected {wanted}")
        free = [s for p, s in zip(pattern, arr.shape) if p == -1]
        if free and min(free) < 1:
            raise ProtocolError(f"model '{model.name}' input '{name}': empty shape {list(arr.shape)}")
        pixels = math.prod(free)
        max_pixels = min(max_pixels, getattr(model, "max_pixels", max_pixels))
        if pixels > max_pixels:
            raise ProtocolError(f"model '{model.name}' input '{name}': {pixels} pixels, this server takes "
                                f"at most {max_pixels}")


class _Pool:
    """Instances of a model that is not thread-safe (a LiteRT interpreter), one per worker."""

    def __init__(self, make, count: int):
        self._free: queue.Queue = queue.Queue()
        for _ in range(count):
            self._free.put(make())

    def run(self, fn):
        instance = self._free.get()
        try:
            return fn(instance)
        finally:
            self._free.put(instance)


class Outputs(dict):
    """A model's outputs by name, with response ``parameters`` (strings, ints, bools) beside them."""

    def __init__(self, arrays: dict[str, np.ndarray], parameters: dict | None = None):
        super().__init__(arrays)
        self.parameters = dict(parameters or {})


class DeblurModel:
    """``teacher`` (and ``deblur`` when the server is told to serve a network there): image UINT8 [1, H, W, 3] RGB in, the deblurred image UINT8, same shape, out.
    Or, with the request parameter ``encoding`` (``png``, ``jpeg``, ``webp``; ``quality`` 1..100 for
    the lossy two), image UINT8 [n], the encoded frame, in, and the result encoded the same way out
    (``edge_deblur.partition.encoding``); its header's size is checked against the pixel limit
    before it is decoded.

    Run by the bundled teacher through LiteRT: on this host's CPU it is faster than the same
    network through onnxruntime (197 vs 322 ms for 640x480, 2 threads; see the README's serving
    section). Frames of any size are tiled by :class:`edge_deblur.model.Deblurrer`."""

    platform = "edge-deblur_litert"
    engine = "network"

    def __init__(self, model: str | os.PathLike = "teacher", instances: int = 1, threads: int | None = None,
                 name: str = "deblur", version: str = "1", max_pixels: int = 12_000_000):
        self.name, self.version, self.path = name, version, resolve_model(model)  # "teacher": its .tflite
        self.platform = self._platform()
        self.inputs = [TensorSpec("image", "UINT8", (1, -1, -1, 3), also=((-1,),))]
        self.outputs = [TensorSpec("image", "UINT8", (1, -1, -1, 3), also=((-1,),))]
        self.max_pixels = max_pixels
        self._pool = _Pool(lambda: self._load(threads), max(1, instances))

    def _platform(self) -> str:
        return "edge-deblur_" + ("onnxruntime" if self.path.suffix == ".onnx" else "litert")

    def _load(self, threads: int | None):
        """One instance of what deblurs a frame (the pool keeps one per worker)."""
        return Deblurrer.load(self.path, threads=threads)

    def _run(self, frame: np.ndarray) -> tuple[np.ndarray, dict]:
        """(the deblurred frame, the response's parameters)."""
        return self._pool.run(lambda deblur: deblur(frame)), {}

    def predict(self, inputs: dict[str, np.ndarray], parameters: dict) -> dict[str, np.ndarray]:
        from ..partition.encoding import decode, encode, parse_encoding

        image, codec = inputs["image"], parameters.get("encoding")
        if (image.ndim == 1) != (codec is not None):
            raise ProtocolError(f"model '{self.name}': an encoded image (1-D) goes with the parameter encoding, "
                                f"a raw one ([1, H, W, 3]) without it")
        if codec is None:
            result, said = self._run(image[0])
            return Outputs({"image": result[None]}, said)
        quality = parameters.get("quality")
        try:
            encoding = parse_encoding(f"{codec}:{quality}" if quality is not None else str(codec))
            if encoding.codec == "raw":
                raise ValueError("raw is not an encoding of a 1-D image")
            frame = decode(image, encoding.codec, self.max_pixels)
        except ValueError as e:
            raise ProtocolError(f"model '{self.name}' input 'image': {e}") from None
        result, said = self._run(frame)
        return Outputs({"image": encode(result, encoding)}, said)


class AutoDeblurModel(DeblurModel):
    """``deblur`` (the default): the same tensors and encodings as :class:`DeblurModel`, run by
    ``edge_deblur.blind.AutoDeblurrer`` built as ``edge-deblur deblur --method auto`` builds it
    (``pipeline.blind_method``: the default ``BlindConfig``, the network ``model`` as its fallback),
    so a still sent here comes back as that command would write it. The response's parameters say
    ``path`` (``blind``: the estimated kernel's restoration passed the checks; ``network``: the
    checks failed and the network restored it; ``input``: already sharp, returned as it is) and
    ``candidates`` (kernels estimated). Seconds per frame: for stills, not streams (``teacher``)."""

    platform = "edge-deblur_python"
    engine = "auto"

    def _platform(self) -> str:
        return "edge-deblur_python"

    def _load(self, threads: int | None):
        from ..blind import AutoDeblurrer, BlindConfig, BlindDeblurrer

        # each worker its own: AutoDeblurrer keeps the last image's account, and LiteRT
        # interpreters (the denoiser's, the network's) are not thread-safe
        return AutoDeblurrer(BlindDeblurrer.load(BlindConfig(threads=threads)), Deblurrer.load(self.path, threads=threads))

    def _run(self, frame: np.ndarray) -> tuple[np.ndarray, dict]:
        def run(auto):
            result = auto(frame)
            last = auto.last
            return result, {"path": last.path, "candidates": int(last.candidates)}

        return self._pool.run(run)


class KernelModel:
    """``kernel``: a gray keyframe crop, image UINT8 [1, H, W] or [1, H, W, 1], in; the blur kernel
    (PSF) that ``estimate_kernel`` finds, FP32 [k, k], summing to 1, out. The request parameter
    ``kernel_size`` (an odd integer) fixes k; else the estimator chooses.

    ``restarts`` (bool, default false): the kernel as the blind method chooses it instead
    (``BlindDeblurrer.estimate``: estimated again from other coarse sizes, and the candidate kept
    whose restoration with the learned denoiser explains the crop best; on a denoised copy when
    the crop is noisy), where the server was given ``selector`` (a pool of ``BlindDeblurrer``).
    Not the default: it took 2.6-3.8x one estimate's time on a 256x256 crop here (14.0-19.7 s
    against 5.1-5.5 s, with tests on the other core), and the board's kernel mode waits for a
    keyframe's kernel within its deadline (1 s by default)."""

    platform = "edge-deblur_python"
    engine = "kernel"
    max_pixels = 1024 * 1024  # a keyframe crop; estimation time grows with it (seconds at 640x480)

    def __init__(self, estimate_kernel, name: str = "kernel", version: str = "1", selector: _Pool | None = None):
        self.name, self.version = name, version
        self._estimate = estimate_kernel
        self._selector = selector
        self.inputs = [TensorSpec("image", "UINT8", (1, -1, -1), also=((1, -1, -1, 1),))]
        self.outputs = [TensorSpec("kernel", "FP32", (-1, -1))]

    def predict(self, inputs: dict[str, np.ndarray], parameters: dict) -> dict[str, np.ndarray]:
        gray = inputs["image"][0]
        gray = gray[..., 0] if gray.ndim == 3 else gray
        size = parameters.get("kernel_size")
        if size is not None and (not isinstance(size, int) or size < 1 or size % 2 == 0):
            raise ProtocolError(f"parameter kernel_size must be an odd positive integer, got {size!r}")
        restarts = parameters.get("restarts", False)
        if not isinstance(restarts, bool):
            raise ProtocolError(f"parameter restarts must be true or false, got {restarts!r}")
        if restarts and self._selector is None:
            raise ProtocolError(f"model '{self.name}': this server does not choose among restarts")
        x = gray.astype(np.float32) * np.float32(1 / 255)
        from ..errors import EdgeDeblurError

        try:
            kernel = self._selector.run(lambda blind: select_kernel(blind, x, size)) if restarts \
                else self._estimate(x, size=size)
        except (ValueError, EdgeDeblurError) as e:  # a crop too small for the kernel asked for: the request's fault
            raise ProtocolError(f"model '{self.name}': {e}") from None
        return {"kernel": np.asarray(kernel, dtype=np.float32)}


def select_kernel(blind, x: np.ndarray, size: int | None) -> np.ndarray:
    """The kernel of float image ``x`` as ``blind`` (a ``BlindDeblurrer``) chooses it among its
    restarts, at side ``size`` (None: its own choice)."""
    from dataclasses import replace

    one = type(blind)(blind.denoiser, replace(blind.config, kernel_size=size)) if size != blind.config.kernel_size else blind
    return one.estimate(x, one.noise_sigma(x))


def kernel_selector(instances: int = 1, threads: int | None = None) -> _Pool:
    """One ``BlindDeblurrer`` (and its denoiser: a LiteRT interpreter, not thread-safe) per worker."""
    from ..blind import BlindConfig, BlindDeblurrer

    return _Pool(lambda: BlindDeblurrer.load(BlindConfig(threads=threads)), max(1, instances))


class SplitModel:
    """``split``: the middle stages of a U-shaped INT8 student (``edge_deblur.partition.split``):
    features UINT8 [n] in, the zlib-packed INT8 codes of the cut's top level, and the same for the
    level coming back up out. Request parameters (all required) state what the bytes are:
    ``codec`` ("zlib"), ``student`` (the student file's fingerprint), ``cut`` (the level),
    ``shape`` ("1xHxWxC") and the codes' ``scale`` and ``zero_point``; features of a student this
    server does not hold, another cut's shape or another scale are refused (400), never guessed at.
    The students served are cut on first use and kept, one interpreter per worker."""

    platform = "edge-deblur_litert"
    engine = "split"
    max_pixels = 12_000_000  # of the frame the features stand for (and so of packed bytes, which are fewer)

    def __init__(self, students=("student-rpi5", "student-rpi4"), instances: int = 1, threads: int | None = None,
                 name: str = "split", version: str = "1"):
        from ..partition.split import fingerprint

        self.name, self.version = name, version
        # [n], or [1, n] as a Triton model with a batch dimension (max_batch_size 1, for its queue
        # policy) takes them; the answer has the request's rank
        self.inputs = [TensorSpec("features", "UINT8", (-1,), also=((1, -1),))]
        self.outputs = [TensorSpec("features", "UINT8", (-1,), also=((1, -1),))]
        self._paths = {}
        for student in students:
            try:
                path = resolve_model(student)
            except Exception:
                continue
            if path.suffix == ".tflite":
                self._paths[fingerprint(path)] = path
        self._instances, self._threads = max(1, instances), threads or 1
        self._pools: dict[tuple[str, int], tuple] = {}
        self._lock = threading.Lock()

    def _pool(self, student: str, level: int):
        from ..partition.split import Part, cut_student

        key = (student, level)
        with self._lock:
            if key not in self._pools:
                if student not in self._paths:
                    raise ProtocolError(f"model '{self.name}': no student with fingerprint {student!r} here "
                                        f"(served: {', '.join(sorted(self._paths)) or 'none'})")
                try:
                    cut = cut_student(self._paths[student], level)
                except Exception as e:
                    raise ProtocolError(f"model '{self.name}': {e}") from None
                self._pools[key] = (cut, _Pool(lambda: Part(cut.middle, self._threads), self._instances))
            return self._pools[key]

    def predict(self, inputs: dict[str, np.ndarray], parameters: dict) -> dict[str, np.ndarray]:
        from ..partition.split import CODEC, pack, unpack

        p = parameters
        if p.get("codec") != CODEC:
            raise ProtocolError(f"model '{self.name}': parameter codec must be {CODEC!r}, got {p.get('codec')!r}")
        level = p.get("cut")
        if not isinstance(level, int) or isinstance(level, bool):
            raise ProtocolError(f"model '{self.name}': parameter cut must be an integer level, got {level!r}")
        cut, pool = self._pool(str(p.get("student")), level)
        try:
            shape = tuple(int(d) for d in str(p.get("shape")).split("x"))
        except ValueError:
            raise ProtocolError(f"model '{self.name}': parameter shape must be '1xHxWxC', got {p.get('shape')!r}") from None
        if len(shape) != 4 or shape[0] != 1 or shape[3] != cut.up_channels or min(shape) < 1:
            raise ProtocolError(f"model '{self.name}': shape {list(shape)}, expected [1, H, W, {cut.up_channels}] "
                                f"at cut {level}")
        limit = self.max_pixels
        if shape[1] * shape[2] * cut.stride ** 2 > limit:
            raise ProtocolError(f"model '{self.name}': a {shape[1] * cut.stride}x{shape[2] * cut.stride} frame's "
                                f"features, this server takes at most {limit} pixels")
        if not (isinstance(p.get("scale"), float) and abs(p["scale"] - cut.up.scale) <= 1e-6 * cut.up.scale
                and p.get("zero_point") == cut.up.zero_point):
            raise ProtocolError(f"model '{self.name}': features quantized with scale {p.get('scale')!r}, zero point "
                                f"{p.get('zero_point')!r}; this cut's are {cut.up.scale!r}, {cut.up.zero_point}")
        try:
            codes = unpack(inputs["features"].tobytes(), shape)
        except ValueError as e:
            raise ProtocolError(f"model '{self.name}': {e}") from None
        below = pool.run(lambda part: part(codes)[0])
        packed = np.frombuffer(pack(below), np.uint8).copy()
        return {"features": packed if inputs["features"].ndim == 1 else packed[None]}


def blind_available() -> bool:
    """Whether this installation has the blind engine (``edge_deblur.blind.AutoDeblurrer``)."""
    try:
        blind = importlib.import_module("edge_deblur.blind")
    except ImportError:
        return False
    return hasattr(blind, "AutoDeblurrer")


def blind_estimator():
    """``edge_deblur.blind.estimate_kernel`` when this installation has it, else None."""
    try:
        blind = importlib.import_module("edge_deblur.blind")
    except ImportError:
        return None
    return getattr(blind, "estimate_kernel", None)


class ModelRegistry:
    """Models by name; a model joins with :meth:`add` (KServe's and MLServer's model repository, in
    memory)."""

    def __init__(self):
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()

    def add(self, model) -> None:
        for spec in (*model.inputs, *model.outputs):
            if spec.datatype not in DATATYPES:
                raise ValueError(f"model '{model.name}' tensor '{spec.name}': unknown datatype {spec.datatype}")
        with self._lock:
            self._models[model.name] = model

    def get(self, name: str, version: str | None = None):
        model = self._models.get(name)
        if model is None:
            raise ProtocolError(f"unknown model '{name}' (served: {', '.join(sorted(self._models))})", status=404)
        if version not in (None, "", model.version):
            raise ProtocolError(f"model '{name}' has no version '{version}' (versions: {model.version})", status=404)
        return model

    def names(self) -> list[str]:
        return sorted(self._models)

    def metadata(self, name: str, version: str | None = None) -> dict:
        model = self.get(name, version)
        return {"name": model.name, "versions": [model.version], "platform": model.platform,
                "inputs": [s.metadata() for s in model.inputs], "outputs": [s.metadata() for s in model.outputs]}

    def config(self, name: str, version: str | None = None) -> dict:
        """The model's configuration as Triton's ``GET /v2/models/{m}/config`` words it (JSON of its
        ModelConfig, Triton's field names), a subset: name, platform, ``max_batch_size`` 0 (no
        batching by the server: the tensors' shapes hold their batch dimension of 1), ``input`` and
        ``output`` (name, ``data_type`` as Triton's ``TYPE_*``, ``dims``), and ``parameters`` with
        the ``edge_deblur_engine`` marker where the model says its engine
        (``{"edge_deblur_engine": {"string_value": "auto"}}``). The gRPC ``ModelConfig`` answers
        the same dict as a message (``grpc_service``)."""
        model = self.get(name, version)
        engine = getattr(model, "engine", None)
        tensor = lambda s: {"name": s.name, "data_type": f"TYPE_{s.datatype}", "dims": list(s.shape)}
        return {"name": model.name, "platform": model.platform, "max_batch_size": 0,
                "input": [tensor(s) for s in model.inputs], "output": [tensor(s) for s in model.outputs],
                "parameters": {ENGINE_KEY: {"string_value": engine}} if engine else {}}


AUTO = "auto"  # what ``deblur`` runs by default: the blind engine with the network as its fallback


def default_registry(network: str | os.PathLike = "teacher", instances: int = 1,
                     threads: int | None = None, max_pixels: int = 12_000_000,
                     deblur: str | os.PathLike = AUTO) -> ModelRegistry:
    """``teacher``: ``network`` (a bundled name or a .tflite/.onnx file), feed-forward; ``deblur``:
    the auto engine falling back to ``network`` (``deblur="auto"``, where the blind engine exists;
    else ``network`` as well), or the network ``deblur`` names (``"teacher"``: the same network)."""
    registry = ModelRegistry()
    teacher = DeblurModel(network, instances=instances, threads=threads, name="teacher", max_pixels=max_pixels)
    registry.add(teacher)
    if str(deblur) == AUTO and blind_available():
        registry.add(AutoDeblurModel(network, instances=instances, threads=threads, max_pixels=max_pixels))
    else:
        registry.add(DeblurModel(network if str(deblur) in (AUTO, "teacher") else deblur, instances=instances,
                                 threads=threads, max_pixels=max_pixels))
    registry.add(SplitModel(instances=instances, threads=threads))
    estimate = blind_estimator()
    if estimate is not None:
        registry.add(KernelModel(estimate, selector=kernel_selector(instances, threads) if blind_available() else None))
    return registry
