"""Knowledge distillation: a teacher of any origin, a cached distillation set, and the student trainer.

Teachers come in every form a user exports them (``converters.sources.load_teacher_source``: the
bundled NAFNet, ``.keras``, ``.onnx``, ``.tflite`` float or INT8, a SavedModel folder; fixed-size or
not, NHWC or NCHW). Whatever the origin, the teacher is wrapped as a function of (B, H, W, 3) float32
RGB in [0, 1] of any size; its value range is stated or detected (``converters.ranges``: each
convention judged by how plausible its output is as a deblurred image of the input).

Running the teacher costs about 7x the student (22k against 3k MACs per pixel), so its outputs and
its bottleneck features (``bottleneck``: found in Keras and ONNX teachers alike) are computed once
over a fixed set of synthesised crops (``make_distill_set``) and the student is trained against
that cache. The loss is

    L = w_gt |s(x) - y| + w_out |s(x) - t(x)| + w_feat |A f_s(x) - (f_t(x) - mu) / sigma|

with ``y`` the sharp crop, ``t`` the teacher (its term weighted per crop by ``teacher_trust`` when
``TrainConfig.teacher_mask`` is "harm": none on a crop the teacher makes worse than its input,
where the ground truth alone is the target), ``f_s``/``f_t`` the student's and teacher's features at
the same resolution (the teacher's lowest, 1/8 for ours; no hint term when the student has no
stage at that resolution), ``A`` a 1x1 convolution that is dropped after training (FitNets' hint
regressor), ``mu``/``sigma`` the teacher features' per-channel statistics over the cache.

Quantization-aware fine-tuning (``TrainConfig.qat``) uses shadow weights: each step runs forward and
backward with the kernels rounded to INT8 as LiteRT's converter quantizes them (symmetric, per output
channel) and applies the gradient to the float kernels (the straight-through estimator). Activation
ranges are not simulated; they are calibrated afterwards by post-training quantization.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np

from converters.blur import BlurConfig, synthesize_pair
from converters.data import training_photos, validation_pairs
from edge_deblur.images import AtomicFile

# Teachers of every origin live in converters.sources (value ranges in converters.ranges); they are
# named here too, where the distiller has always found them.
from converters.ranges import VALUE_RANGES, detect_value_range  # noqa: E402,F401
from converters.sources import (  # noqa: E402,F401
    PROBE_HW, Teacher, Tensor, _check_image_model, _onnx_bottleneck, _onnx_macs, bottleneck, load_teacher_source)


# ----------------------------------------------------------------------------------------------
# The distillation set


def make_distill_set(teacher: Teacher, count: int, crop: int, seed: int, path: Path, log=print,
                     blur: BlurConfig | None = None) -> Path:
    """Synthesise ``count`` training crops (``converters.blur.synthesize_pair`` with ``blur``'s mix,
    default the teacher's, at ``crop`` pixels), run the teacher on them and save ``blurred``,
    ``sharp``, ``teacher`` (and ``features`` with their per-channel ``mean``/``std``) as float16 in
    one ``.npz``, written atomically."""
    rng = np.random.default_rng(seed)
    photos = [photo for _, photo in training_photos() if min(photo.shape[:2]) > crop + 64]
    config = replace(blur or BlurConfig(), crop=crop)
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
    # "harm": the teacher term counts only on crops where the teacher's output is closer to the sharp
    # crop than its input is (``teacher_trust``); "none": on every crop.
    teacher_mask: str = "none"

    def __post_init__(self):
        if self.teacher_mask not in TEACHER_MASKS:
            raise ValueError(f"teacher_mask must be one of {', '.join(TEACHER_MASKS)}, got {self.teacher_mask!r}")


TEACHER_MASKS = ("none", "harm")


def teacher_trust(blurred, sharp, teacher):
    """Per crop of an NHWC batch, 1.0 where the teacher's output is closer (MSE) to the sharp crop
    than the blurred input is, else 0.0: the crops where distilling the teacher teaches harm. On a
    sharp frame the bundled teacher takes a 48 dB input to 31 dB (docs/BENCHMARKS.md, issue 14), and
    a student pulled towards that output learns to do the same; there the ground-truth term alone
    is its target. Works on NumPy arrays and TensorFlow tensors alike; returns float32 of shape (B,)."""
    import tensorflow as tf

    def mse(a, b):
        return tf.reduce_mean(tf.square(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)), axis=[1, 2, 3])

    return tf.cast(mse(teacher, sharp) < mse(blurred, sharp), tf.float32)


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

    def pixel(error, weights=None):
        per_pixel = tf.abs(error) if config.pixel_loss == "l1" else tf.square(error)
        if weights is None:
            return tf.reduce_mean(per_pixel)
        # Divided by the whole batch, not by the trusted crops: the teacher's share shrinks with them.
        return tf.reduce_mean(weights * tf.reduce_mean(per_pixel, axis=[1, 2, 3]))

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
            trust = teacher_trust(blurred, sharp, target) if config.teacher_mask == "harm" else None
            loss = config.gt_weight * pixel(out[0] - sharp) + config.output_weight * pixel(out[0] - target, trust)
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
