"""Loading a deblurring model and running it on frames of any size.

``Deblurrer.load(model)(frame)`` is the whole runtime API. A model is a ``.tflite`` file (run by
LiteRT, whose XNNPACK kernels are the NEON path on ARM boards), an ``.onnx`` file (run by
onnxruntime when it is installed), or the name of a model bundled in ``edge_deblur/models``. It must
take one image and give one image of the same size. A ``<model>.json`` sidecar may state what the
file cannot: the value range of a float model, its tile size and its stride multiple, and for an
``.onnx`` model the execution providers to try and its precision (``onnx_providers``).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ModelError
from .logs import native_logs_silenced
from .tiling import TilePlan, plan_tiles, run_tiled

MODELS_DIR = Path(__file__).with_name("models")
DEFAULT_MODEL = "student-rpi5"  # the Pi 5 INT8 student (edge-deblur convert --target rpi5)
_SUFFIXES = (".tflite", ".onnx")


@dataclass(frozen=True)
class Quantization:
    """real = scale * (q - zero_point) for an integer tensor."""

    scale: float
    zero_point: int
    dtype: np.dtype

    def quantize(self, x: np.ndarray) -> np.ndarray:
        info = np.iinfo(self.dtype)
        q = np.rint(x * np.float32(1.0 / self.scale)) + np.float32(self.zero_point)
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def real_range(self) -> tuple[float, float]:
        info = np.iinfo(self.dtype)
        return self.scale * (info.min - self.zero_point), self.scale * (info.max - self.zero_point)


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about a model's one input and one output."""

    path: Path
    backend: str  # "litert" or "onnxruntime"
    layout: str  # "NHWC" or "NCHW"
    channels: int  # 1 or 3
    input_dtype: np.dtype
    input_quant: Quantization | None
    output_quant: Quantization | None
    value_range: float  # the model sees pixels in [0, value_range]: 1.0 or 255.0
    fixed_size: tuple[int, int] | None  # (h, w) when the spatial dims cannot be resized
    multiple: int  # spatial dims must be multiples of this (the model's total stride)
    tile: int  # largest window side run in one invoke

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class TileConfig:
    tile: int | None = None  # None: the model's own (its fixed size, or its sidecar's "tile")
    overlap: int = 32


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    return sorted({p.stem for p in MODELS_DIR.glob("*") if p.suffix in _SUFFIXES})


def resolve_model(model: str | os.PathLike) -> Path:
    """A model path, or a bundled model's name (``"default"`` is the bundled default)."""
    text = str(model)
    name = DEFAULT_MODEL if text == "default" else text
    if os.sep not in name and "/" not in name and not Path(name).suffix:
        for suffix in _SUFFIXES:
            candidate = MODELS_DIR / f"{name}{suffix}"
            if candidate.exists():
                return candidate
        raise ModelError(f"{name}: no such bundled model (bundled: {', '.join(bundled_models()) or 'none'})")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if path.suffix.lower() not in _SUFFIXES:
        raise ModelError(f"{path}: unsupported model format {path.suffix!r} (expected .tflite or .onnx)")
    return path


def read_sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    if not side.exists():
        return {}
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{side}: unreadable model sidecar: {e}") from e


def _image_layout(path: Path, shape: list[int], what: str) -> tuple[str, int]:
    """NHWC or NCHW from a 4-D shape whose channel axis holds 1 or 3 (unknown dims are -1)."""
    if len(shape) != 4:
        raise ModelError(f"{path}: {what} has shape {list(shape)}; expected one image, [1, H, W, C] or [1, C, H, W]")
    if shape[-1] in (1, 3):
        return "NHWC", shape[-1]
    if shape[1] in (1, 3):
        return "NCHW", shape[1]
    raise ModelError(f"{path}: {what} has shape {list(shape)}; found no axis of 1 or 3 colour channels")


def open_interpreter(path: Path, threads: int):
    """A LiteRT interpreter for ``path`` on ``threads`` threads; a file LiteRT cannot read is a
    ModelError naming it (the deblurring and the denoising runners both open models this way)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        return Interpreter(model_path=str(path), num_threads=threads)
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a valid TFLite model: {e}") from e


class _LiteRT:
    """A LiteRT interpreter whose input is resized only when the window shape changes."""

    backend = "litert"

    def __init__(self, path: Path, threads: int):
        self.interp = open_interpreter(path, threads)
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"{path}: model has {len(ins)} inputs and {len(outs)} outputs; expected one image in and one image out")
        self.input, self.output = ins[0], outs[0]
        self.shape: tuple[int, ...] | None = None

    def signature(self):
        """(input shape, output shape, input dtype, input quant, output quant); -1 marks a resizable dim."""

        def quant(d):
            scale, zp = d["quantization"]
            return Quantization(float(scale), int(zp), np.dtype(d["dtype"])) if scale else None

        sig = lambda d: [int(v) for v in d.get("shape_signature", d["shape"])]
        return sig(self.input), sig(self.output), np.dtype(self.input["dtype"]), quant(self.input), quant(self.output)

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Resize the input to ``shape`` and allocate, only when it changes."""
        if shape != self.shape:
            self.interp.resize_tensor_input(self.input["index"], list(shape), strict=False)
            with native_logs_silenced():  # LiteRT's XNNPACK line, on the first allocation
                self.interp.allocate_tensors()
            self.shape = shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.prepare(x.shape)
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        return self.interp.get_tensor(self.output["index"])


def onnx_providers(preferred: list[str] | None, available: list[str], precision: str = "fp32",
                   cache_dir: Path | None = None) -> list[tuple[str, dict]]:
    """The onnxruntime execution providers to ask for, with their options, best first.

    ``preferred`` (the caller's list, else the sidecar's, e.g. TensorRT, CUDA, CPU) is cut down to
    what this onnxruntime build has, so the same model and call work on a Jetson and on a laptop;
    the CPU always closes the list. TensorRT runs in FP16 when the model's ``precision`` says so,
    and caches its engines in ``cache_dir``: building one takes minutes on a Jetson, once."""
    plan = []
    for name in preferred or ["CPUExecutionProvider"]:
        if name not in available or name == "CPUExecutionProvider" or any(name == p for p, _ in plan):
            continue
        options = {}
        if name == "TensorrtExecutionProvider":
            options = {"trt_fp16_enable": precision == "fp16"}
            if cache_dir is not None:
                options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
        plan.append((name, options))
    return plan + [("CPUExecutionProvider", {})]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-deblur" / "tensorrt"


class _OnnxRuntime:
    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int, providers: list[str] | None = None, sidecar: dict | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelError(f"{path}: running .onnx models needs onnxruntime (pip install 'edge-deblur[onnx]')") from e
        sidecar = sidecar or {}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        plan = onnx_providers(providers or sidecar.get("providers"), ort.get_available_providers(),
                              sidecar.get("precision", "fp32"), _cache_dir())
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=plan)
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            if len(plan) == 1:
                raise ModelError(f"{path}: not a valid ONNX model: {e}") from e
            try:  # the file, or an accelerator that cannot start (missing CUDA libraries, no GPU memory)?
                self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as e2:
                raise ModelError(f"{path}: not a valid ONNX model: {e2}") from e2
            # The accelerator: that must not stop a camera; run on the CPU and say so.
            warnings.warn(f"{path}: {', '.join(p for p, _ in plan[:-1])} failed to start ({e}); running on the CPU")
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"{path}: model has {len(ins)} inputs and {len(outs)} outputs; expected one image in and one image out")
        self.input, self.output = ins[0], outs[0]

    @property
    def providers(self) -> list[str]:
        """The providers the session really runs on, best first."""
        return self.session.get_providers()

    def signature(self):
        dims = lambda shape: [d if isinstance(d, int) else -1 for d in shape]
        types = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(float16)": np.float16}
        if self.input.type not in types:
            raise ModelError(f"{self.input.name}: unsupported ONNX input type {self.input.type}")
        return dims(self.input.shape), dims(self.output.shape), np.dtype(types[self.input.type]), None, None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input.name: x})[0]


def inspect_model(path: Path, runner, sidecar: dict) -> ModelInfo:
    """Read layout, channels, quantization, value range and resizability from the model itself."""
    in_shape, out_shape, in_dtype, in_q, out_q = runner.signature()
    layout, channels = _image_layout(path, in_shape, "input")
    out_layout, out_channels = _image_layout(path, out_shape, "output")
    if out_channels != channels:
        raise ModelError(f"{path}: input has {channels} channels but output has {out_channels}; expected an image-to-image model")
    spatial = in_shape[1:3] if layout == "NHWC" else in_shape[2:4]
    fixed = None if -1 in spatial else (spatial[0], spatial[1])
    out_spatial = out_shape[1:3] if out_layout == "NHWC" else out_shape[2:4]
    if fixed and -1 not in out_spatial and tuple(out_spatial) != fixed:
        raise ModelError(f"{path}: output is {out_spatial[0]}x{out_spatial[1]} for a {fixed[0]}x{fixed[1]} input; expected the same size")
    if in_q is not None:
        lo, hi = in_q.real_range()
        value_range = 255.0 if hi > 16 else 1.0
    else:
        value_range = float(sidecar.get("input_range", [0, 1])[1])
    multiple = int(sidecar.get("multiple", 16))
    tile = int(sidecar.get("tile", 512))
    if fixed:
        tile = min(fixed)
    return ModelInfo(path, runner.backend, layout, channels, in_dtype, in_q, out_q, value_range, fixed,
                     multiple, tile)


def _lookup(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[codes]`` for uint8 ``codes`` (HxWxC), through OpenCV's vectorised LUT (5x numpy's take)
    where the shape survives it (OpenCV returns a one-channel image as HxW)."""
    if codes.ndim == 3 and codes.shape[2] in (3, 4):
        return cv2.LUT(np.ascontiguousarray(codes), table)
    return np.take(table, codes)


class Deblurrer:
    """A loaded model, ready to deblur frames: ``Deblurrer.load("default")(rgb_frame)``.

    Frames are numpy arrays, RGB, HxW, HxWx3 or HxWx4 (alpha passed through), uint8, uint16 or
    float32 in [0, 1]; the result has the frame's shape and dtype. A frame larger than the model's
    tile is cut into overlapping windows blended without seams (see ``edge_deblur.tiling``).
    The model predicts from what it can see (an INT8 model sees 8-bit pixels); its correction,
    ``model(x) - x``, is added to the frame at full precision, so 16-bit frames keep their depth.

    8-bit frames through an NHWC INT8 LiteRT model take the fused path (``edge_deblur.framepath``):
    the same result, bit for bit, in one pass in and one pass out. ``fused = False`` switches it
    off (the plain path, kept for comparison: ``benchmarks/runtime_overhead.py --paths``).
    """

    def __init__(self, runner, info: ModelInfo, tiles: TileConfig = TileConfig()):
        self.runner = runner
        self.info = info
        self.tiles = tiles
        self._plans: dict[tuple[int, int], TilePlan] = {}
        self._tables = self._lookup_tables() if info.input_quant and info.output_quant else None
        self._fused = None
        if (self._tables is not None and self._tables[1] is not None and info.backend == "litert"
                and info.layout == "NHWC" and info.input_dtype.itemsize == 1):
            from .framepath import FusedU8

            self._fused = FusedU8(runner, *self._tables)
        self.fused = self._fused is not None

    def _lookup_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For 8-bit frames through an INT8 model, what ``infer`` and ``seen`` compute per pixel value,
        computed once for all 256 values by the very same arithmetic: the model's input code of each
        value, each output code's real value, and each value's residual ``x - seen(x)``. Per frame,
        three lookups then replace several float passes over every pixel (most of a small student's
        frame time was this numpy work, not the model)."""
        values = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)
        scale = np.float32(self.info.value_range)
        codes = self.info.input_quant.quantize(values * scale if scale != 1.0 else values)
        residual = values - self.seen(values)
        out_codes = np.arange(256, dtype=np.uint8).view(self.info.output_quant.dtype) if \
            self.info.output_quant.dtype.itemsize == 1 else None
        real = None if out_codes is None else self.info.output_quant.dequantize(out_codes)
        if real is not None and scale != 1.0:
            real = real * np.float32(1.0 / scale)
        return codes, real, residual

    @classmethod
    def load(cls, model: str | os.PathLike = "default", *, threads: int | None = None,
             tile: int | None = None, overlap: int = 32, providers: list[str] | None = None) -> "Deblurrer":
        path = resolve_model(model)
        threads = threads or os.cpu_count() or 1
        sidecar = read_sidecar(path)
        runner = _OnnxRuntime(path, threads, providers, sidecar) if path.suffix.lower() == ".onnx" else _LiteRT(path, threads)
        info = inspect_model(path, runner, sidecar)
        if tile is not None and tile % info.multiple:
            raise ModelError(f"{path}: tile {tile} is not a multiple of the model's stride {info.multiple}")
        return cls(runner, info, TileConfig(tile, overlap))

    def plan(self, height: int, width: int) -> TilePlan:
        key = (height, width)
        if key not in self._plans:
            tile = self.tiles.tile or self.info.tile
            self._plans[key] = plan_tiles(height, width, tile, self.tiles.overlap, self.info.multiple,
                                          self.info.fixed_size)
        return self._plans[key]

    def infer(self, window: np.ndarray) -> np.ndarray:
        """One invoke on an HxWxC float32 window in [0, 1] (or already in the model's input codes);
        returns the model's HxWxC output in [0, 1]."""
        info = self.info
        if window.dtype == info.input_dtype and info.input_quant is not None:
            x = window  # quantized by ``_tables`` already
        else:
            x = window * np.float32(info.value_range) if info.value_range != 1.0 else window
            x = info.input_quant.quantize(x) if info.input_quant else x.astype(info.input_dtype, copy=False)
        x = x[None] if info.layout == "NHWC" else x.transpose(2, 0, 1)[None]
        y = self.runner(np.ascontiguousarray(x))[0]
        y = y if info.layout == "NHWC" else y.transpose(1, 2, 0)
        if self._tables is not None and self._tables[1] is not None:
            return _lookup(y.view(np.uint8), self._tables[1])  # already scaled back to [0, 1]
        y = info.output_quant.dequantize(y) if info.output_quant else y.astype(np.float32, copy=False)
        return y * np.float32(1.0 / info.value_range) if info.value_range != 1.0 else y

    def seen(self, x: np.ndarray) -> np.ndarray:
        """The frame as the model's input quantization lets it see it."""
        q = self.info.input_quant
        if q is None:
            return x
        scale = np.float32(self.info.value_range)
        return q.dequantize(q.quantize(x * scale)) / scale

    def deblur_float(self, rgb: np.ndarray) -> np.ndarray:
        """HxWxC float32 [0, 1] (C = 1 or 3) -> deblurred, same shape, not clipped."""
        h, w, c = rgb.shape
        if c != self.info.channels:
            if self.info.channels == 3:  # a gray frame through a colour model
                return self.deblur_float(np.repeat(rgb, 3, axis=2)).mean(axis=2, keepdims=True)
            return np.concatenate([self.deblur_float(rgb[..., i : i + 1]) for i in range(c)], axis=2)
        out = run_tiled(rgb, self.plan(h, w), self.infer)
        if self.info.input_quant is not None:
            out = out + (rgb - self.seen(rgb))
        return out

    def _deblur_u8(self, rgb: np.ndarray) -> np.ndarray:
        """``deblur_float(rgb / 255)`` for an HxWxC uint8 frame through an INT8 model, by table lookups
        (``_lookup_tables``): the same numbers, a fraction of the numpy passes."""
        codes, _, residual = self._tables
        h, w = rgb.shape[:2]
        out = run_tiled(_lookup(rgb, codes), self.plan(h, w), self.infer)
        out += _lookup(rgb, residual)
        return out

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or min(image.shape[:2]) < 1:
            raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
        if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
            raise ValueError(f"unsupported image dtype {image.dtype} (expected uint8, uint16 or float in [0, 1])")
        peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
        colour = image[..., None] if image.ndim == 2 else image[..., :3] if image.shape[2] == 4 else image
        if (image.dtype == np.uint8 and self.fused and self._fused is not None and self._tables is not None
                and colour.shape[2] == self.info.channels):
            y = self._fused(colour, self.plan(*colour.shape[:2]))  # the final uint8 values already
        elif image.dtype == np.uint8 and self._tables is not None and colour.shape[2] == self.info.channels:
            y = self._deblur_u8(colour)  # a fresh array: clipped and scaled in place, no copies
            np.clip(y, 0.0, 1.0, out=y)
        else:
            x = colour.astype(np.float32) * np.float32(1.0 / peak) if peak != 1.0 else colour.astype(np.float32)
            y = np.clip(self.deblur_float(x), 0.0, 1.0)
        if y.dtype == image.dtype:  # the fused path's uint8, or a float32 frame's result: final already
            pass
        elif image.dtype.kind == "u":
            y *= np.float32(peak)
            y = np.rint(y, out=y).astype(image.dtype)
        else:
            y = y.astype(image.dtype)
        if image.ndim == 2:
            return y[..., 0]
        if image.shape[2] == 4:
            return np.concatenate([y, image[..., 3:]], axis=2)
        return y
