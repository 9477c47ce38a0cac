"""Teachers as users export them: the bundled NAFNet, ``.keras``, ``.onnx``, ``.tflite`` (float or
INT8, run by LiteRT) and TensorFlow SavedModel folders, fixed-size or not, NHWC or NCHW, in any value
range. ``load_teacher_source`` makes each a ``Teacher``: a function of (B, H, W, 3) float32 RGB in
[0, 1] to the same, for any H and W.

Each source gives its own forward pass on model values in NHWC (``_Raw``). Around it, sizes are
made to fit: a teacher that takes any size gets its input padded (reflected) to its stride multiple;
a teacher with a fixed input size is run on windows of exactly that size, planned and blended by the
runtime's own tile planner (``edge_deblur.tiling``), with half a window of overlap so every output
pixel comes from a window in which it sits at least an eighth of the window from an inner edge
(the receptive field a pixel keeps; a smaller image is reflect-padded up to one window). A size the
teacher refuses, or an output that is not the input's size, is a ``ModelError`` naming both.

The value range is, in this order: stated (``--input-range`` / ``ConvertConfig.input_range``),
stated in a sidecar ``<model>.json`` (``{"input_range": [-1, 1]}`` or ``"0.5,0.25"``), the bundled
teacher's own (0-1), or detected (``converters.ranges``), with its margin and a warning when it is
ambiguous. Everything that shapes the teacher's outputs (file bytes, range, layout, window size,
overlap, stride) is in ``Teacher.run_fingerprint``, which the conversion's data step is keyed on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from converters.ranges import InputRange, detect_value_range, named_range, parse_input_range, range_from_sidecar
from edge_deblur.errors import ModelError
from edge_deblur.model import MODELS_DIR, read_sidecar
from edge_deblur.tiling import plan_tiles, run_tiled

MIN_FIXED_SIDE = 32  # a fixed window smaller than this leaves no room for context around its centre
FRAME_PIXELS = 640 * 480  # MACs are reported per 640x480 frame


@dataclass
class Teacher:
    """A teacher as the distiller sees it: ``predict`` maps (B, H, W, 3) float32 RGB in [0, 1] to the
    same; ``predict_features`` (teachers with a reachable bottleneck, run whole) maps it to the same
    and the (B, h, w, C) bottleneck features, in one pass."""

    source: str
    kind: str  # "bundled" | "keras" | "onnx" | "tflite" | "savedmodel"
    predict: Callable[[np.ndarray], np.ndarray]
    macs: int  # for one 640x480 frame (0: unknown)
    multiple: int  # the stride: windows start on multiples of it, whole runs are padded to it
    fingerprint: str  # sha256 of the file(s) the teacher was read from
    value_range: str = "0-1"
    layout: str = "NHWC"
    predict_features: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    fixed_size: tuple[int, int] | None = None  # (h, w) of a teacher that takes only that size
    overlap: int = 0  # between fixed-size windows
    range_decided: str = "detected"  # "stated (--input-range)" | "stated (sidecar)" | "bundled" | "detected"
    detection: dict | None = None  # ``converters.ranges.Detection.as_dict()`` when detected
    input_range: InputRange | None = None

    @property
    def run_fingerprint(self) -> list:
        """Everything that decides the teacher's outputs for a given input."""
        return [self.fingerprint, self.input_range.fingerprint() if self.input_range else self.value_range,
                self.layout, list(self.fixed_size) if self.fixed_size else None, self.overlap, self.multiple]

    def describe(self) -> dict:
        """The card's teacher entry."""
        return {"source": self.source, "kind": self.kind, "macs": self.macs, "value_range": self.value_range,
                "range_decided": self.range_decided, "detection": self.detection, "layout": self.layout,
                "fixed_size": list(self.fixed_size) if self.fixed_size else None, "overlap": self.overlap,
                "multiple": self.multiple}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def _probe_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Real blurred/sharp 128x128 crops of validation photos (never held-out ones)."""
    from converters.data import validation_pairs

    blurred, sharp = validation_pairs(crop=128, per_photo=1, seed=7)
    return blurred[:4], sharp[:4]


def _check_image_model(source: str, in_shape, out_shape) -> str:
    """The layout of a one-image-in, one-image-out model; a clear refusal for anything else."""
    def layout(shape, what):
        shape = [-1 if d is None or not isinstance(d, (int, np.integer)) or d < 0 else int(d) for d in shape]
        if len(shape) == 4 and shape[-1] == 3:
            return "NHWC"
        if len(shape) == 4 and shape[1] == 3:
            return "NCHW"
        raise ModelError(f"{source}: {what} has shape {list(shape)}; a teacher must take and give one RGB image "
                         "([1, H, W, 3] or [1, 3, H, W]) - is this an image-to-image model?")

    lin, lout = layout(in_shape, "input"), layout(out_shape, "output")
    if lin != lout:
        raise ModelError(f"{source}: input is {lin} but output is {lout}")
    return lin


def _fixed_size(source: str, shape, layout: str) -> tuple[int, int] | None:
    """(h, w) when the input's spatial dims are fixed, None when both are free."""
    spatial = list(shape[1:3] if layout == "NHWC" else shape[2:4])
    known = [isinstance(d, (int, np.integer)) and d > 0 for d in spatial]
    if not any(known):
        return None
    if not all(known):
        raise ModelError(f"{source}: its input fixes one side only ({list(shape)}); export it with both sides "
                         "fixed or both free")
    h, w = (int(d) for d in spatial)
    if min(h, w) < MIN_FIXED_SIDE:
        raise ModelError(f"{source}: its input is fixed at {h}x{w}, too small to run on windows (at least "
                         f"{MIN_FIXED_SIDE}x{MIN_FIXED_SIDE} is needed to keep context around each window's centre)")
    return h, w


@dataclass
class _Raw:
    """A teacher's own forward pass, on NHWC model values of a size it takes: ``run`` returns the
    NHWC output and (when ``hint``) the NHWC bottleneck features."""

    source: str
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
    layout: str
    fixed_size: tuple[int, int] | None
    multiple: int
    batch: int  # images per call
    hint: bool = False


def _guarded(raw: _Raw) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
    """``raw.run`` with its runtime's errors turned into a ``ModelError`` naming the size, and its
    output checked to be an image of the input's size."""
    def run(x: np.ndarray):
        shape = list(x.shape) if raw.layout == "NHWC" else [x.shape[0], x.shape[3], x.shape[1], x.shape[2]]
        try:
            y, f = raw.run(x)
        except ModelError:
            raise
        except Exception as e:  # onnxruntime, LiteRT and TensorFlow each raise their own classes
            fixed = (f" (its input is fixed at {raw.fixed_size[0]}x{raw.fixed_size[1]})" if raw.fixed_size else
                     f"; if it takes one size only, export it with that size fixed, or state its stride as "
                     f"\"multiple\" in {Path(raw.source).with_suffix('.json').name}")
            raise ModelError(f"{raw.source}: the teacher cannot take a {shape} {raw.layout} input{fixed}: "
                             f"{_first_line(e)}") from e
        if y.shape != x.shape:
            raise ModelError(f"{raw.source}: a {list(x.shape[1:3])} input gives a {list(y.shape[1:3])} output "
                             f"with {y.shape[-1]} channels; a teacher must give an image of its input's size")
        return y, f

    return run


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad a NHWC batch to ``h`` x ``w`` (symmetric where the padding exceeds the image)."""
    dh, dw = h - x.shape[1], w - x.shape[2]
    if dh == 0 and dw == 0:
        return x
    mode = "reflect" if dh < x.shape[1] and dw < x.shape[2] else "symmetric"
    return np.pad(x, ((0, 0), (0, dh), (0, dw), (0, 0)), mode=mode)


def _any_size(raw: _Raw) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
    """The teacher on NHWC model values of any size (see the module docstring)."""
    run = _guarded(raw)
    m = raw.multiple

    def whole(x: np.ndarray):
        h, w = x.shape[1:3]
        ph, pw = -(-h // m) * m, -(-w // m) * m
        parts = [run(_pad_to(x[i : i + raw.batch], ph, pw)) for i in range(0, len(x), raw.batch)]
        y = np.concatenate([p[0] for p in parts])[:, :h, :w]
        f = None
        if raw.hint:
            f = np.concatenate([p[1] for p in parts])
            f = f[:, : -(-h * f.shape[1] // ph), : -(-w * f.shape[2] // pw)]
        return y, f

    def tiled(x: np.ndarray):
        fh, fw = raw.fixed_size
        plan = plan_tiles(x.shape[1], x.shape[2], min(fh, fw), min(fh, fw) // 2, m, raw.fixed_size)
        infer = lambda window: run(window[None])[0][0]
        return np.stack([run_tiled(image, plan, infer) for image in x]), None

    return tiled if raw.fixed_size else whole


def _assemble(raw: _Raw, kind: str, macs: int, fingerprint: str, input_range: str = "",
              sidecar: dict | None = None) -> Teacher:
    """A ``Teacher`` around a source's forward pass: sizes (``_any_size``) and value range (stated,
    from the sidecar, the bundled teacher's own, or detected)."""
    sidecar = sidecar or {}
    model_fn = _any_size(raw)
    detection = None
    if input_range:
        convention, decided = parse_input_range(input_range), "stated (--input-range)"
    elif "input_range" in sidecar:
        convention, decided = range_from_sidecar(sidecar["input_range"]), "stated (sidecar)"
    elif kind == "bundled":
        convention, decided = named_range("0-1"), "bundled"
    if input_range or "input_range" in sidecar or kind == "bundled":
        model_fn(convention.to_model(np.full((1, 128, 128, 3), 0.5, np.float32)))  # a size it cannot take fails now
    else:
        found = detect_value_range(lambda x: model_fn(x)[0], _probe_pairs())
        convention, decided, detection = named_range(found.chosen), "detected", found.as_dict()
        _log(f"value range detected: {found.summary}")
        if found.ambiguous:
            _log(f"warning: {raw.source}: the value range is ambiguous ({found.summary}); state it with "
                 "--input-range 0-1|0-255|-1-1|MEAN,STD")

    def predict_features(x: np.ndarray):
        y, f = model_fn(convention.to_model(np.asarray(x, np.float32)))
        return convention.from_model(y), f

    def predict(x: np.ndarray) -> np.ndarray:
        return predict_features(x)[0]

    multiple = raw.multiple
    overlap = min(raw.fixed_size) // 2 if raw.fixed_size else 0
    return Teacher(raw.source, kind, predict, int(macs), multiple, fingerprint, convention.name, raw.layout,
                   predict_features if raw.hint else None, raw.fixed_size, overlap, decided, detection, convention)


def _per_frame(macs: int, h: int, w: int) -> int:
    """MACs measured on an ``h`` x ``w`` input, per 640x480 frame (convolutions cost per pixel)."""
    return int(round(macs * FRAME_PIXELS / (h * w)))


def _stride(multiple: int, fixed: tuple[int, int] | None) -> int:
    """A fixed window must hold whole stride cells: its multiple divides both its sides."""
    return math.gcd(multiple, *fixed) if fixed else multiple


# --- bottlenecks (hint features) -----------------------------------------------------------------

PROBE_HW = (96, 128)  # distinct height and width down to 1/32, so each tensor's spatial axes are known


@dataclass(frozen=True)
class Tensor:
    """An intermediate 4-D tensor of a teacher, seen on a ``PROBE_HW`` input."""

    name: str
    shape: tuple[int, ...]
    is_add: bool  # made by an addition: the end of a residual block


def bottleneck(tensors: list[Tensor]) -> tuple[str, tuple[int, int, int, int]] | None:
    """The teacher tensor to hint the student with, and the transpose that makes it NHWC.

    It is the deepest point of the network: among the tensors (in execution order) at the lowest
    resolution below full, the last residual addition (the last bottleneck block's output; the
    up-sampling convolution after it is at that resolution too, but only a linear map of it), or
    the last tensor there when the network has no additions. None when nothing is below full
    resolution (a plain stack of convolutions has no bottleneck to hint)."""
    h, w = PROBE_HW
    found = []
    for t in tensors:
        if len(t.shape) != 4:
            continue
        for stride in (2, 4, 8, 16, 32):
            if t.shape[1:3] == (h // stride, w // stride):
                found.append((stride, t, (0, 1, 2, 3)))
            elif t.shape[2:4] == (h // stride, w // stride):
                found.append((stride, t, (0, 2, 3, 1)))
    if not found:
        return None
    deepest = max(stride for stride, _, _ in found)
    there = [(t, perm) for stride, t, perm in found if stride == deepest]
    t, perm = ([(t, p) for t, p in there if t.is_add] or there)[-1]
    return t.name, perm


def _keras_bottleneck(model: keras.Model, layout: str):
    tensors, outputs = [], []
    for layer in model.layers:
        if isinstance(layer, (keras.Model, keras.layers.InputLayer)):
            continue  # a nested model's insides are not reachable from the outer graph
        try:
            out = layer.output
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
        if getattr(out, "shape", None) is not None and len(out.shape) == 4:
            tensors.append(layer.name)
            outputs.append(out)
    if not outputs:
        return None
    probe_shape = (1, *PROBE_HW, model.inputs[0].shape[-1]) if layout == "NHWC" else (1, model.inputs[0].shape[1], *PROBE_HW)
    try:
        shapes = keras.Model(model.inputs, outputs).predict(np.zeros(probe_shape, np.float32), verbose=0, batch_size=1)
    except Exception:  # a stride the probe does not divide: no hint, not a failure
        return None
    found = [Tensor(name, tuple(np.shape(a)), isinstance(model.get_layer(name), keras.layers.Add))
             for name, a in zip(tensors, shapes)]
    return bottleneck(found)


# --- Keras and SavedModel ------------------------------------------------------------------------


def _keras_teacher(model: keras.Model, source: str, kind: str, fingerprint: str, input_range: str = "",
                   sidecar: dict | None = None) -> Teacher:
    from converters.teacher import count_macs, multiple_of

    import tensorflow as tf

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{source}: a teacher must have one input and one output, found "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    shape = model.inputs[0].shape
    layout = _check_image_model(source, shape, model.outputs[0].shape)
    fixed = _fixed_size(source, shape, layout)
    hint = None if fixed else _keras_bottleneck(model, layout)
    both = keras.Model(model.inputs, [model.outputs[0], model.get_layer(hint[0]).output]) if hint else model
    compiled = tf.function(lambda x: both(x, training=False), reduce_retracing=True)  # 3x eager speed

    def run(x: np.ndarray):
        x = x if layout == "NHWC" else x.transpose(0, 3, 1, 2)
        out = compiled(tf.constant(x, tf.float32))
        y, f = (np.asarray(out[0]), np.asarray(out[1]).transpose(hint[1])) if hint else (np.asarray(out), None)
        return (y if layout == "NHWC" else y.transpose(0, 2, 3, 1)), f

    macs = 0
    if layout == "NHWC":
        try:
            macs = count_macs(model, 480, 640) if not fixed else _per_frame(count_macs(model, *fixed), *fixed)
        except Exception as e:  # a layer whose shape cannot follow another input size
            _log(f"{source}: MACs not counted ({_first_line(e)})")
    multiple = _stride(int((sidecar or {}).get("multiple", multiple_of(model))), fixed)
    raw = _Raw(source, run, layout, fixed, multiple, 1 if shape[0] == 1 else 16, hint is not None)
    return _assemble(raw, kind, macs, fingerprint, input_range, sidecar)


def _savedmodel_teacher(path: Path, input_range: str = "") -> Teacher:
    """A TensorFlow SavedModel folder, run through its ``serving_default`` signature."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ModelError(f"{path}: not a loadable TensorFlow SavedModel ({_first_line(e)})") from e
    signature = loaded.signatures.get("serving_default") or next(iter(loaded.signatures.values()), None)
    if signature is None:
        raise ModelError(f"{path}: the SavedModel has no serving signature to run")
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: a teacher must have one input and one output, found {len(inputs)} and {len(outputs)}")
    (in_name, in_spec), (out_name, out_spec) = next(iter(inputs.items())), next(iter(outputs.items()))
    in_shape, out_shape = in_spec.shape.as_list(), out_spec.shape.as_list()
    layout = _check_image_model(str(path), in_shape, out_shape)
    fixed = _fixed_size(str(path), in_shape, layout)

    def run(x: np.ndarray):
        x = x if layout == "NHWC" else x.transpose(0, 3, 1, 2)
        y = np.asarray(signature(**{in_name: tf.constant(x, tf.float32)})[out_name])
        return (y if layout == "NHWC" else y.transpose(0, 2, 3, 1)), None

    sidecar = _folder_sidecar(path)
    macs = _savedmodel_macs(path, fixed)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    raw = _Raw(str(path), run, layout, fixed, _stride(int(sidecar.get("multiple", 16)), fixed),
               1 if in_shape[0] == 1 else 16)
    return _assemble(raw, "savedmodel", macs, _sha256(*files), input_range, sidecar)


def _folder_sidecar(path: Path) -> dict:
    """A SavedModel folder's sidecar: ``<folder>.json`` next to it, or ``edge_deblur.json`` inside."""
    for side in (path.parent / f"{path.name}.json", path / "edge_deblur.json"):
        if side.is_file():
            try:
                return json.loads(side.read_text())
            except ValueError as e:
                raise ModelError(f"{side}: unreadable sidecar: {e}") from e
    return {}


def _savedmodel_macs(path: Path, fixed: tuple[int, int] | None) -> int:
    """MACs from the TFLite flatbuffer LiteRT's converter makes of the SavedModel (0 if it cannot)."""
    import tempfile

    import tensorflow as tf

    from converters.reference import tflite_macs

    try:
        flat = tf.lite.TFLiteConverter.from_saved_model(str(path)).convert()
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp) / "teacher.tflite"
            tmp_path.write_bytes(flat)
            return _per_frame(tflite_macs(tmp_path), *fixed) if fixed else tflite_macs(tmp_path, 480, 640)
    except Exception as e:
        _log(f"{path}: MACs not counted ({_first_line(e)})")
        return 0


# --- ONNX ----------------------------------------------------------------------------------------


def _onnx_shapes(model, layout: str, hw: tuple[int, int]):
    """ONNX's shape inference on a copy of ``model`` whose input is fixed to one ``hw`` frame:
    the inferred model and every tensor's shape (0 where unknown)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    channels = dims[3 if layout == "NHWC" else 1].dim_value or 3
    for d, v in zip(dims, (1, *hw, channels) if layout == "NHWC" else (1, channels, *hw)):
        d.ClearField("dim_param")
        d.dim_value = v
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)  # shapes through Reshape(Shape(...))
    shapes = {}
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return model, shapes


def _onnx_bottleneck(model, layout: str):
    try:
        _, shapes = _onnx_shapes(model, layout, PROBE_HW)
    except Exception:  # shape inference refuses the probe size (fixed reshapes): no hint, not a failure
        return None
    tensors = [Tensor(out, tuple(shapes[out]), node.op_type in ("Add", "Sum")) for node in model.graph.node
               for out in node.output if out in shapes]
    return bottleneck(tensors)


def _onnx_macs(path: Path, layout: str, hw: tuple[int, int] = (480, 640)) -> int:
    """Convolution and matrix-product MACs of an ONNX model for one ``hw`` input, from ONNX's shape
    inference on a copy whose input is fixed to that size."""
    import onnx

    model, shapes = _onnx_shapes(onnx.load(str(path)), layout, hw)
    macs = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out or 0 in out:
            continue
        if node.op_type == "Conv" and node.input[1] in shapes:
            w = shapes[node.input[1]]  # (C_out, C_in / group, kh, kw)
            macs += math.prod(out) * math.prod(w[1:])
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in shapes:
            macs += math.prod(out) * shapes[node.input[1]][0]
    return int(macs)


def _onnx_teacher(path: Path, input_range: str = "") -> Teacher:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        raise ModelError(f"{path}: ONNX teachers need onnx and onnxruntime (pip install 'edge-deblur[convert]')") from e
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnx raises DecodeError/ValidationError, onnxruntime its own Fail classes
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(e)})") from e
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: a teacher must have one input and one output, found {len(inputs)} and {len(outputs)}")
    layout = _check_image_model(str(path), inputs[0].shape, outputs[0].shape)
    fixed = _fixed_size(str(path), inputs[0].shape, layout)
    fixed_batch = inputs[0].shape[0] == 1
    hint = None if fixed else _onnx_bottleneck(model, layout)
    names = [outputs[0].name]
    if hint is not None:  # the bottleneck becomes a second graph output, so one run gives both
        model.graph.output.append(onnx.helper.make_tensor_value_info(hint[0], onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names.append(hint[0])

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.ascontiguousarray(x if layout == "NHWC" else x.transpose(0, 3, 1, 2), dtype=np.float32)
        parts = [session.run(names, {inputs[0].name: p}) for p in ([x[i : i + 1] for i in range(len(x))] if fixed_batch else [x])]
        y = np.concatenate([part[0] for part in parts])
        f = np.concatenate([part[1] for part in parts]).transpose(hint[1]) if hint is not None else None
        return (y if layout == "NHWC" else y.transpose(0, 2, 3, 1)), f

    sidecar = read_sidecar(path)
    try:
        macs = _per_frame(_onnx_macs(path, layout, fixed), *fixed) if fixed else _onnx_macs(path, layout)
    except Exception as e:  # shape inference refuses the frame size
        _log(f"{path}: MACs not counted ({_first_line(e)})")
        macs = 0
    raw = _Raw(str(path), run, layout, fixed, _stride(int(sidecar.get("multiple", 16)), fixed), 8, hint is not None)
    return _assemble(raw, "onnx", macs, _sha256(path), input_range, sidecar)


# --- TFLite --------------------------------------------------------------------------------------


def _tflite_teacher(path: Path, input_range: str = "") -> Teacher:
    """A ``.tflite`` teacher, float or INT8, through the runtime's own LiteRT runner (XNNPACK).
    An INT8 teacher's input is quantized and its output dequantized with the model's own
    parameters, so the distiller sees float values in the model's range like any other teacher."""
    from converters.reference import tflite_macs
    from edge_deblur.model import _LiteRT

    runner = _LiteRT(path, os.cpu_count() or 1)  # a ModelError for a file LiteRT cannot read
    in_shape, out_shape, _, in_q, out_q = runner.signature()
    layout = _check_image_model(str(path), in_shape, out_shape)
    fixed = _fixed_size(str(path), in_shape, layout)
    dtype = np.dtype(runner.input["dtype"])

    def run(x: np.ndarray):
        x = x if layout == "NHWC" else x.transpose(0, 3, 1, 2)
        ys = []
        for image in x:
            q = in_q.quantize(image[None]) if in_q is not None else image[None].astype(dtype)
            y = runner(np.ascontiguousarray(q))
            ys.append(out_q.dequantize(y) if out_q is not None else y.astype(np.float32))
        y = np.concatenate(ys)
        return (y if layout == "NHWC" else y.transpose(0, 2, 3, 1)), None

    sidecar = read_sidecar(path)
    try:
        macs = _per_frame(tflite_macs(path), *fixed) if fixed else tflite_macs(path, 480, 640)
    except Exception as e:
        _log(f"{path}: MACs not counted ({_first_line(e)})")
        macs = 0
    raw = _Raw(str(path), run, layout, fixed, _stride(int(sidecar.get("multiple", 16)), fixed), 1)
    kind = "tflite" if in_q is None else "tflite (int8)"
    return _assemble(raw, kind, macs, _sha256(path), input_range, sidecar)


# --- any source ----------------------------------------------------------------------------------


def load_teacher_source(teacher: str | os.PathLike, input_range: str = "") -> Teacher:
    """The bundled ``teacher`` (or another bundled Keras model by name), a ``.keras``, ``.onnx`` or
    ``.tflite`` file, or a SavedModel folder, as a ``Teacher``; ``input_range`` states its value
    range (``converters.ranges.parse_input_range``). Raises ``ModelError`` naming the problem."""
    from converters.student import DepthToSpaceOp  # noqa: F401  (registers the students' layer for .keras files)
    from converters.teacher import build_teacher

    if input_range:
        parse_input_range(input_range)  # a bad flag is refused before the teacher is loaded
    text = str(teacher)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _savedmodel_teacher(path, input_range)
    if path.suffix == "" and "/" not in text:
        weights, sidecar = MODELS_DIR / f"{text}.weights.h5", MODELS_DIR / f"{text}.json"
        if not weights.exists() or not sidecar.exists():
            raise ModelError(f"{text}: no bundled teacher of that name (Keras weights {weights.name} not in the package)")
        model = build_teacher(**json.loads(sidecar.read_text())["architecture"])
        model.load_weights(weights)
        return _keras_teacher(model, text, "bundled", _sha256(weights), input_range)
    if path.is_dir():
        raise ModelError(f"{path}: a folder, but not a TensorFlow SavedModel (no saved_model.pb in it)")
    if not path.is_file():
        raise ModelError(f"{path}: teacher file not found")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_teacher(path, input_range)
    if suffix == ".tflite":
        return _tflite_teacher(path, input_range)
    if suffix == ".keras":
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:
            raise ModelError(f"{path}: not a loadable Keras model ({_first_line(e)})") from e
        return _keras_teacher(model, str(path), "keras", _sha256(path), input_range, read_sidecar(path))
    raise ModelError(f"{path}: unsupported teacher format {path.suffix!r} (expected a bundled name, .keras, .onnx, "
                     ".tflite or a SavedModel folder)")
