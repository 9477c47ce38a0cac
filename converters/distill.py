"""Knowledge distillation: a teacher of any origin, a cached distillation set, and the student trainer.

Teachers come in three ways (``load_teacher_source``): the bundled ``teacher`` (Keras weights), a
user's ``.keras`` model, or an ``.onnx`` model run by onnxruntime. Whatever the origin, the teacher
is wrapped as a function of (B, H, W, 3) float32 RGB in [0, 1]: its layout (NHWC/NCHW) is read from
its input shape and its value range (0-1, 0-255, or normalised to [-1, 1]) is detected by running it
on a real blurred photo under each convention and keeping the one whose output stays closest to its
input (a deblurrer is a small correction of its input; a wrong range gives a wildly different image).

Running the teacher costs about 7x the student (22k against 3k MACs per pixel), so its outputs and
its bottleneck features (``bottleneck``: found in Keras and ONNX teachers alike) are computed once
over a fixed set of synthesised crops (``make_distill_set``) and the student is trained against
that cache. The loss is

    L = w_gt |s(x) - y| + w_out |s(x) - t(x)| + w_feat |A f_s(x) - (f_t(x) - mu) / sigma|

with ``y`` the sharp crop, ``t`` the teacher, ``f_s``/``f_t`` the student's and teacher's features at
the same resolution (the teacher's lowest, 1/8 for ours; no hint term when the student has no
stage at that resolution), ``A`` a 1x1 convolution that is dropped after training (FitNets' hint
regressor), ``mu``/``sigma`` the teacher features' per-channel statistics over the cache.

Quantization-aware fine-tuning (``TrainConfig.qat``) uses shadow weights: each step runs forward and
backward with the kernels rounded to INT8 as LiteRT's converter quantizes them (symmetric, per output
channel) and applies the gradient to the float kernels (the straight-through estimator). Activation
ranges are not simulated; they are calibrated afterwards by post-training quantization.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from converters.blur import BlurConfig, synthesize_pair
from converters.data import training_photos, validation_pairs
from edge_deblur.errors import ModelError
from edge_deblur.images import AtomicFile
from edge_deblur.model import MODELS_DIR, read_sidecar

# Conventions a float image model may expect, as (scale, offset): model_value = scale * x + offset.
VALUE_RANGES: dict[str, tuple[float, float]] = {"0-1": (1.0, 0.0), "0-255": (255.0, 0.0), "-1-1": (2.0, -1.0)}


@dataclass
class Teacher:
    """A teacher as the distiller sees it: ``predict`` maps (B, H, W, 3) float32 RGB in [0, 1] to the
    same; ``predict_features`` (Keras teachers with a known bottleneck) maps it to the same and the
    (B, h, w, C) bottleneck features, in one pass."""

    source: str
    kind: str  # "bundled" | "keras" | "onnx"
    predict: Callable[[np.ndarray], np.ndarray]
    macs: int  # for one 640x480 frame
    multiple: int  # height and width must be multiples of this
    fingerprint: str  # sha256 of the file(s) the teacher was read from
    value_range: str = "0-1"
    layout: str = "NHWC"
    predict_features: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _batched(run: Callable[[np.ndarray], np.ndarray], batch: int) -> Callable[[np.ndarray], np.ndarray]:
    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([run(x[i : i + batch]) for i in range(0, len(x), batch)])

    return predict


def _probe_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Real blurred/sharp 128x128 crops of validation photos (never held-out ones)."""
    blurred, sharp = validation_pairs(crop=128, per_photo=1, seed=7)
    return blurred[:4], sharp[:4]


def detect_value_range(run_model: Callable[[np.ndarray], np.ndarray], probe: tuple[np.ndarray, np.ndarray]) -> str:
    """The convention (a key of ``VALUE_RANGES``) under which ``run_model`` (model-space NHWC in,
    out) restores blurred photos best: mean squared error to the sharp crops, measured back in
    [0, 1]. Fed the wrong range, a deblurrer returns a wildly wrong image. Ties (an identity model)
    go to 0-1, the first convention."""
    blurred, sharp = probe
    errors = {}
    for name, (scale, offset) in VALUE_RANGES.items():
        out = (np.asarray(run_model(blurred * scale + offset), np.float32) - offset) / scale
        errors[name] = float(np.mean((np.clip(out, 0, 1) - sharp) ** 2)) if np.all(np.isfinite(out)) else math.inf
    return min(errors, key=lambda k: (round(errors[k], 6), list(VALUE_RANGES).index(k)))


def _check_image_model(source: str, in_shape, out_shape) -> str:
    """The layout of a one-image-in, one-image-out model; a clear refusal for anything else."""
    def layout(shape, what):
        shape = [-1 if d is None or (isinstance(d, int) and d < 0) else d for d in shape]
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
    except Exception:  # a fixed input size, or a stride the probe does not divide: no hint, not a failure
        return None
    found = [Tensor(name, tuple(np.shape(a)), isinstance(model.get_layer(name), keras.layers.Add))
             for name, a in zip(tensors, shapes)]
    return bottleneck(found)


def _keras_teacher(model: keras.Model, source: str, kind: str, fingerprint: str) -> Teacher:
    from converters.teacher import count_macs, multiple_of

    import tensorflow as tf

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{source}: a teacher must have one input and one output, found "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    layout = _check_image_model(source, model.inputs[0].shape, model.outputs[0].shape)
    hint = _keras_bottleneck(model, layout)
    with_features = hint is not None
    both = keras.Model(model.inputs, [model.outputs[0], model.get_layer(hint[0]).output]) if with_features else model
    compiled = tf.function(lambda x: both(x, training=False), reduce_retracing=True)  # 3x eager speed

    def run(x: np.ndarray):
        x = x if layout == "NHWC" else x.transpose(0, 3, 1, 2)
        out = compiled(tf.constant(x, tf.float32))
        y, f = (np.asarray(out[0]), np.asarray(out[1]).transpose(hint[1])) if with_features else (np.asarray(out), None)
        return (y if layout == "NHWC" else y.transpose(0, 2, 3, 1)), f

    value_range = detect_value_range(lambda x: run(x)[0], _probe_pairs())
    scale, offset = VALUE_RANGES[value_range]

    def predict_features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [run(x[i : i + 16] * scale + offset) for i in range(0, len(x), 16)]
        return (np.concatenate([(y - offset) / scale for y, _ in parts]),
                np.concatenate([f for _, f in parts]) if with_features else None)

    macs = count_macs(model, 480, 640) if layout == "NHWC" else 0
    return Teacher(source, kind, lambda x: predict_features(x)[0], macs, multiple_of(model), fingerprint,
                   value_range, layout, predict_features if with_features else None)


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


def _onnx_macs(path: Path, layout: str) -> int:
    """Convolution and matrix-product MACs of an ONNX model for one 640x480 frame, from ONNX's shape
    inference on a copy whose input is fixed to that size."""
    import onnx

    model, shapes = _onnx_shapes(onnx.load(str(path)), layout, (480, 640))
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


def _onnx_teacher(path: Path) -> Teacher:
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
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from e
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: a teacher must have one input and one output, found {len(inputs)} and {len(outputs)}")
    layout = _check_image_model(str(path), inputs[0].shape, outputs[0].shape)
    fixed_batch = inputs[0].shape[0] == 1
    hint = _onnx_bottleneck(model, layout)
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

    def raw(x: np.ndarray) -> np.ndarray:
        return run(x)[0]

    sidecar = read_sidecar(path)
    stated = tuple(sidecar.get("input_range", ()))
    value_range = next((k for k, (scale, offset) in VALUE_RANGES.items() if stated == (offset, scale + offset)), None)
    value_range = value_range or detect_value_range(raw, _probe_pairs())
    scale, offset = VALUE_RANGES[value_range]

    def predict_features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [run(x[i : i + 8] * scale + offset) for i in range(0, len(x), 8)]
        return np.concatenate([(y - offset) / scale for y, _ in parts]), np.concatenate([f for _, f in parts])

    predict = _batched(lambda x: (raw(x * scale + offset) - offset) / scale, 8)
    multiple = int(sidecar.get("multiple", 16))
    return Teacher(str(path), "onnx", predict, _onnx_macs(path, layout), multiple, _sha256(path), value_range, layout,
                   predict_features if hint is not None else None)


def load_teacher_source(teacher: str | os.PathLike) -> Teacher:
    """The bundled ``teacher`` (or another bundled Keras model by name), a ``.keras`` file or an
    ``.onnx`` file, as a ``Teacher``. Raises ``ModelError`` naming the problem for anything else."""
    from converters.student import DepthToSpaceOp  # noqa: F401  (registers the students' layer for .keras files)
    from converters.teacher import build_teacher

    text = str(teacher)
    path = Path(text).expanduser()
    if path.suffix == "" and "/" not in text:
        weights, sidecar = MODELS_DIR / f"{text}.weights.h5", MODELS_DIR / f"{text}.json"
        if not weights.exists() or not sidecar.exists():
            raise ModelError(f"{text}: no bundled teacher of that name (Keras weights {weights.name} not in the package)")
        model = build_teacher(**json.loads(sidecar.read_text())["architecture"])
        model.load_weights(weights)
        return _keras_teacher(model, text, "bundled", _sha256(weights))
    if not path.is_file():
        raise ModelError(f"{path}: teacher file not found")
    if path.suffix.lower() == ".onnx":
        return _onnx_teacher(path)
    if path.suffix.lower() == ".keras":
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:
            raise ModelError(f"{path}: not a loadable Keras model ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from e
        return _keras_teacher(model, str(path), "keras", _sha256(path))
    raise ModelError(f"{path}: unsupported teacher format {path.suffix!r} (expected a bundled name, .keras or .onnx)")


# ----------------------------------------------------------------------------------------------
# The distillation set


def make_distill_set(teacher: Teacher, count: int, crop: int, seed: int, path: Path, log=print) -> Path:
    """Synthesise ``count`` training crops (``converters.blur.synthesize_pair``), run the teacher on
    them and save ``blurred``, ``sharp``, ``teacher`` (and ``features`` with their per-channel
    ``mean``/``std``) as float16 in one ``.npz``, written atomically."""
    if crop % teacher.multiple:
        raise ValueError(f"crop {crop} is not a multiple of the teacher's stride {teacher.multiple}")
    rng = np.random.default_rng(seed)
    photos = [photo for _, photo in training_photos() if min(photo.shape[:2]) > crop + 64]
    config = BlurConfig(crop=crop)
    arrays: dict[str, list[np.ndarray]] = {"blurred": [], "sharp": [], "teacher": [], "features": []}
    started, chunk = time.monotonic(), 64
    for start in range(0, count, chunk):
        pairs = [synthesize_pair(photos[rng.integers(len(photos))], rng, config)[:2]
                 for _ in range(min(chunk, count - start))]
        blurred = np.stack([p[0] for p in pairs])
        arrays["blurred"].append(blurred.astype(np.float16))
        arrays["sharp"].append(np.stack([p[1] for p in pairs]).astype(np.float16))
        if teacher.predict_features is not None:
            restored, features = teacher.predict_features(blurred)
            arrays["features"].append(features.astype(np.float16))
        else:
            restored = teacher.predict(blurred)
        arrays["teacher"].append(np.clip(restored, 0, 1).astype(np.float16))
        done = start + len(pairs)
        rate = done / (time.monotonic() - started)
        log(f"distillation set: {done}/{count} crops through the teacher ({rate:.1f}/s, "
            f"ETA {(count - done) / rate:.0f} s)")
    data = {k: np.concatenate(v) for k, v in arrays.items() if v}
    if "features" in data:
        f = data["features"].astype(np.float32)
        data["mean"] = f.mean(axis=(0, 1, 2))
        data["std"] = f.std(axis=(0, 1, 2)) + 1e-3
    with AtomicFile(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **data)
    return path


def load_distill_set(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------------------------
# The trainer


@dataclass(frozen=True)
class TrainConfig:
    """One distillation or fine-tuning run over a cached distillation set."""

    steps: int
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup: int = 100
    gt_weight: float = 1.0
    output_weight: float = 1.0
    feature_weight: float = 0.1
    pixel_loss: str = "l1"  # "l1", or "l2" (the conditional mean, which is what PSNR rewards)
    augment: bool = False  # each batch turned by one of the square's 8 symmetries (flips, 90-degree turns)
    qat: bool = False
    seed: int = 0
    checkpoint_every: int = 250


@dataclass
class TrainLog:
    step: int = 0
    seconds: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)
    val_psnr: list[tuple[int, float]] = field(default_factory=list)


def feature_stage(student: keras.Model, crop: int, feature_shape: tuple[int, ...]) -> str | None:
    """The student stage whose output has the teacher features' height and width (the bottleneck
    for three levels and a 1/8 teacher feature), or None when no stage matches."""
    from converters.student import stage_names

    size = feature_shape[0]
    for stage in ["bottleneck", *reversed(stage_names(student)[:-1])]:
        probe = keras.Model(student.input, student.get_layer(stage).output)
        if probe.compute_output_shape((1, crop, crop, 3))[1] == size:
            return stage
    return None


def fake_quant_int8(kernel, depthwise: bool):
    """A kernel rounded to symmetric per-output-channel INT8 levels (as LiteRT quantizes weights),
    with the identity as its gradient: ``w + stop_gradient(q(w) - w)``."""
    import tensorflow as tf

    axes = [0, 1, 3] if depthwise else [0, 1, 2]
    scale = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes, keepdims=True), 1e-8) / 127.0
    return kernel + tf.stop_gradient(tf.round(kernel / scale) * scale - kernel)


def _cosine(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def _symmetry(arrays: list[np.ndarray], k: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Symmetry ``k`` of the dihedral group of the square (``k % 4`` quarter turns, then a
    transpose when ``k >= 4``) applied to the spatial axes of NHWC batches; the last array
    returned apart. Blur kernels are drawn without a preferred direction, so a turned pair is as
    likely as the original; the teacher's outputs and features turn with it (to within the
    teacher's own, small, lack of equivariance). 1x1 arrays pass through unchanged."""
    out = []
    for a in arrays:
        if a.shape[1] > 1:
            a = np.rot90(a, k % 4, axes=(1, 2))
            a = np.ascontiguousarray(a.transpose(0, 2, 1, 3) if k >= 4 else a)
        out.append(a)
    return out[:-1], out[-1]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((np.clip(a, 0, 1) - b) ** 2), 1e-12)))


def train_student(student: keras.Model, data: dict[str, np.ndarray], config: TrainConfig, work: Path,
                  log=print) -> TrainLog:
    """Train ``student`` in place against a distillation set for ``config.steps`` steps, resumably:
    weights, the hint regressor and the log are checkpointed to ``work`` every
    ``config.checkpoint_every`` steps, with the optimizer's state, and picked up again on the next
    call. Validation PSNR on the validation photos
    is logged at each checkpoint."""
    import tensorflow as tf

    work.mkdir(parents=True, exist_ok=True)
    crop = data["blurred"].shape[1]
    use_features = "features" in data and config.feature_weight > 0
    stage = feature_stage(student, crop, data["features"].shape[1:]) if use_features else None
    outputs = [student.output] + ([student.get_layer(stage).output] if stage else [])
    trainer = keras.Model(student.input, outputs)
    adapter = keras.layers.Conv2D(data["features"].shape[-1], 1, name="hint") if stage else None
    if adapter is not None:
        adapter.build((None, None, None, student.get_layer(stage).output.shape[-1]))
        mean, std = tf.constant(data["mean"]), tf.constant(data["std"])
    optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=1e-5, clipnorm=1.0)
    variables = student.trainable_variables + (adapter.trainable_variables if adapter else [])
    kernels = [(layer.kernel, isinstance(layer, keras.layers.DepthwiseConv2D)) for layer in student.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]

    state_path, weights_path, adapter_path = work / "state.json", work / "student.weights.h5", work / "hint.npz"
    optimizer_path = work / "optimizer.npz"
    optimizer.build(variables)
    state = TrainLog()
    if state_path.exists() and weights_path.exists():
        saved = json.loads(state_path.read_text())
        state = TrainLog(saved["step"], saved["seconds"], [tuple(x) for x in saved["losses"]],
                         [tuple(x) for x in saved["val_psnr"]])
        student.load_weights(weights_path)
        if adapter is not None and adapter_path.exists():
            with np.load(adapter_path) as z:
                adapter.set_weights([z[k] for k in sorted(z.files, key=lambda k: int(k[1:]))])
        if optimizer_path.exists():  # Adam's moments, so a resumed run continues the same descent
            with np.load(optimizer_path) as z:
                optimizer.load_own_variables(dict(z))
        log(f"resumed {work} at step {state.step}/{config.steps}")

    if config.pixel_loss not in ("l1", "l2"):
        raise ValueError(f"pixel_loss must be 'l1' or 'l2', got {config.pixel_loss!r}")

    def pixel(error):
        return tf.reduce_mean(tf.abs(error) if config.pixel_loss == "l1" else tf.square(error))

    @tf.function(reduce_retracing=True)
    def step(blurred, sharp, target, features, lr):
        optimizer.learning_rate.assign(lr)
        floats = []
        if config.qat:
            for kernel, depthwise in kernels:
                floats.append(tf.identity(kernel))
                kernel.assign(fake_quant_int8(kernel, depthwise))
        with tf.GradientTape() as tape:
            out = trainer(blurred, training=True)
            out = out if isinstance(out, (list, tuple)) else [out]
            loss = config.gt_weight * pixel(out[0] - sharp) + config.output_weight * pixel(out[0] - target)
            if adapter is not None:
                loss += config.feature_weight * tf.reduce_mean(tf.abs(adapter(out[1]) - (features - mean) / std))
        grads = tape.gradient(loss, variables)
        if config.qat:  # straight-through: the gradient taken at the INT8 kernels updates the float ones
            for (kernel, _), saved in zip(kernels, floats):
                kernel.assign(saved)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    val_blurred, val_sharp = validation_pairs(crop=128, per_photo=2, seed=4321)
    rng = np.random.default_rng([config.seed, state.step])
    n = len(data["blurred"])
    dummy = np.zeros((config.batch_size, 1, 1, 1), np.float32)

    def validate() -> float:
        out = np.concatenate([np.asarray(student(val_blurred[i : i + 8], training=False))
                              for i in range(0, len(val_blurred), 8)])
        return _psnr(out, val_sharp)

    def checkpoint() -> None:
        state.val_psnr.append((state.step, validate()))
        with AtomicFile(weights_path) as tmp:
            student.save_weights(tmp)
        if adapter is not None:
            with AtomicFile(adapter_path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **{f"w{i}": w for i, w in enumerate(adapter.get_weights())})
        store = {}
        optimizer.save_own_variables(store)
        with AtomicFile(optimizer_path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **store)
        with AtomicFile(state_path) as tmp:  # last: the state never points past the weights
            tmp.write_text(json.dumps(asdict(state)))

    recent, tick = [], time.monotonic()
    while state.step < config.steps:
        started = time.monotonic()
        idx = rng.integers(0, n, config.batch_size)
        batch = [data[k][idx].astype(np.float32) for k in ("blurred", "sharp", "teacher")]
        feats = data["features"][idx].astype(np.float32) if adapter is not None else dummy
        if config.augment:
            batch, feats = _symmetry(batch + [feats], int(rng.integers(8)))
        lr = _cosine(state.step, config.steps, config.learning_rate, config.warmup)
        recent.append(float(step(*batch, feats, np.float32(lr))))
        state.step += 1
        state.seconds += time.monotonic() - started
        if state.step % config.checkpoint_every == 0 or state.step == config.steps:
            state.losses.append((state.step, float(np.mean(recent))))
            checkpoint()
            rate = len(recent) / (time.monotonic() - tick)
            log(f"{work.name}: step {state.step}/{config.steps} loss {np.mean(recent):.4f} "
                f"val PSNR {state.val_psnr[-1][1]:.2f} dB {rate:.1f} it/s "
                f"ETA {(config.steps - state.step) / rate / 60:.1f} min")
            recent, tick = [], time.monotonic()
            rng = np.random.default_rng([config.seed, state.step])
    return state
