"""The learned prior of plug-and-play restoration: a noise-level-conditioned denoiser (FFDNet-style).

    python -m converters.denoiser train --out build/denoiser [--steps N] [--minutes M] [--quick] [--seed S]
    python -m converters.denoiser export build/denoiser [--out edge_deblur/models]

The network (``build_denoiser``) follows FFDNet (Zhang, Zuo & Zhang, TIP 2018): the noisy sRGB image
and a per-pixel noise-level map ``sigma`` (same units, [0, 1] pixels) are stacked into 4 channels and
pixel-unshuffled by 2 (space-to-depth), so every convolution runs at half resolution; the network
answers at half resolution and depth-to-space brings it back. Where FFDNet stacks 15 plain 3x3
convolutions, the half-resolution body here is a small U-Net of residual blocks (DRUNet's shape,
Zhang et al., TPAMI 2021, without its biases removed): at the same MACs each lower level doubles the
channels and quadruples the receptive field, which the strong noise levels (sigma 50/255) need.

The network predicts the **noise** (residual learning, as DnCNN and DRUNet do): ``clean = noisy -
model(noisy, sigma)``. Residual learning converges faster from a zero start, and it keeps INT8
error away from the image: the runtime subtracts the predicted noise from its full-precision input,
so at low sigma, where the answer is nearly the input, the image keeps every bit it came with.

Training (``train``): random crops of the training photos (never Kodak24), flips and rotations;
additive white Gaussian noise with sigma drawn uniformly per patch in [0, 50/255], not clipped (HQS
feeds unclipped values); a fraction of patches gray (one channel replicated, its noise too), a
fraction with smooth, spatially varying sigma maps (the effective noise of a linear-light HQS
varies per pixel). L1 loss, Adam, linear warm-up then cosine over training progress (the larger of
the step and wall-clock fractions), EMA weights validated and exported. Re-running the same command
resumes from the last checkpoint (weights, optimizer with its EMA, step, elapsed time, RNG state).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np
from keras import layers

from converters.student import DepthToSpaceOp, SpaceToDepthOp
from converters.data import SPLIT_NAME, training_photos, validation_photos
from converters.train import _write_json, cosine_lr, ema_weights, load_checkpoint, psnr, save_checkpoint
from edge_deblur.images import AtomicFile

SIGMA_MAX = 50.0 / 255.0  # the noise range trained, [0, 1] pixel units
VAL_SIGMA = 15.0 / 255.0  # the noise level of the progress line's validation PSNR


# The students' space/depth layers: single TFLite SPACE_TO_DEPTH / DEPTH_TO_SPACE ops, run by XNNPACK.
SpaceToDepth, DepthToSpace = SpaceToDepthOp, DepthToSpaceOp


def _block(x, channels: int, name: str):
    """Residual block: x + conv3x3(relu(conv3x3(x)))."""
    y = layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"{name}_a")(x)
    y = layers.Conv2D(channels, 3, padding="same", name=f"{name}_b")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def build_denoiser(width: int = 32, depth: int = 3, blocks: int = 1) -> keras.Model:
    """FFDNet-style denoiser: input ``[B, H, W, 4]`` (noisy RGB, sigma map), output ``[B, H, W, 3]``
    the predicted noise. After space-to-depth by 2, a U-Net of ``depth`` levels (``width``,
    ``2 width``, ``4 width``... channels; 2x2 stride-2 convolutions down, 2x2 stride-2 transposed
    convolutions up, skips added) with ``blocks`` residual blocks per level and side; ``depth=1`` is
    FFDNet's plain stack of ``2 blocks + 2`` 3x3 convolutions. H and W must be multiples of
    ``2 ** depth`` (see ``multiple``)."""
    if width % 8:
        raise ValueError(f"width must be a multiple of 8 (XNNPACK's channel tiles), got {width}")
    inputs = keras.Input((None, None, 4), name="image_sigma")
    x = SpaceToDepth(2, name="unshuffle")(inputs)
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="head")(x)
    skips = []
    for level in range(depth):
        channels = width * 2**level
        for b in range(blocks):
            x = _block(x, channels, f"enc{level}_{b}")
        if level < depth - 1:
            skips.append(x)
            x = layers.Conv2D(channels * 2, 2, strides=2, activation="relu", name=f"down{level}")(x)
    for level in reversed(range(depth - 1)):
        channels = width * 2**level
        x = layers.Conv2DTranspose(channels, 2, strides=2, activation="relu", name=f"up{level}")(x)
        x = layers.Add(name=f"skip{level}")([x, skips[level]])
        for b in range(blocks):
            x = _block(x, channels, f"dec{level}_{b}")
    x = layers.Conv2D(12, 3, padding="same", name="tail")(x)
    noise = DepthToSpace(2, name="shuffle")(x)
    return keras.Model(inputs, noise, name="denoiser")


def multiple(depth: int) -> int:
    """The stride the input's height and width must be a multiple of."""
    return 2 * 2 ** (depth - 1)


def count_macs(model: keras.Model, height: int, width: int) -> int:
    """Multiply-accumulates of one ``height`` x ``width`` call (convolutions only)."""
    total, h, w = 0, height // 2, width // 2
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            kh, kw, cout, cin = layer.kernel.shape
            total += (h * w) * kh * kw * cin * cout
            h, w = h * 2, w * 2
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            if layer.strides[0] == 2:
                h, w = h // 2, w // 2
            total += h * w * kh * kw * cin * cout
    return int(total)


# --------------------------------------------------------------------------------------------------
# Data


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random field in [0, 1]: a 2x2..4x4 grid of uniform values, bicubically upsampled
    (or, half the time, a linear ramp in a random direction)."""
    import cv2

    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    n = int(rng.integers(2, 5))
    grid = rng.uniform(0, 1, (n, n)).astype(np.float32)
    return np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)


@dataclass(frozen=True)
class NoiseConfig:
    """The training noise: AWGN with sigma ~ U[0, sigma_max] per patch; ``p_gray`` of patches gray,
    ``p_varying`` with a smooth sigma map between two such draws."""

    crop: int = 96
    sigma_max: float = SIGMA_MAX
    p_gray: float = 0.2
    p_varying: float = 0.25


def noisy_patch(photo: np.ndarray, rng: np.random.Generator, config: NoiseConfig) -> tuple[np.ndarray, np.ndarray]:
    """One training pair: ``(input [crop, crop, 4] = noisy RGB + sigma map, noise [crop, crop, 3])``
    from a random crop of an RGB float32 photo, flipped/rotated, possibly gray."""
    c = config.crop
    h, w = photo.shape[:2]
    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    clean = photo[y : y + c, x : x + c]
    clean = np.rot90(clean, int(rng.integers(4)))
    if rng.random() < 0.5:
        clean = clean[:, ::-1]
    gray = rng.random() < config.p_gray
    if gray:  # ITU-R BT.601 luma, replicated; the noise is replicated too (the runtime's gray path)
        clean = np.repeat(clean @ np.array([0.299, 0.587, 0.114], np.float32)[:, None], 3, axis=2)
    if rng.random() < config.p_varying:
        a, b = sorted(rng.uniform(0, config.sigma_max, 2))
        sigma = (a + (b - a) * _smooth_field(rng, c)).astype(np.float32)
    else:
        sigma = np.full((c, c), rng.uniform(0, config.sigma_max), np.float32)
    white = rng.standard_normal((c, c, 1 if gray else 3), dtype=np.float32)
    noise = sigma[..., None] * (np.repeat(white, 3, axis=2) if gray else white)
    return np.concatenate([clean + noise, sigma[..., None]], axis=2), noise


def training_batches(photos: list[np.ndarray], config: NoiseConfig, batch_size: int, rng: np.random.Generator):
    """Endless ``(inputs, noise)`` batches, depending only on ``rng``'s state (resumable)."""
    while True:
        pairs = [noisy_patch(photos[rng.integers(len(photos))], rng, config) for _ in range(batch_size)]
        yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def noisy_crops(photos: list[np.ndarray], sigma: float, crop: int, per_photo: int = 2, seed: int = 4321):
    """Fixed ``(noisy, clean)`` crops (float32, noisy not clipped) at uniform ``sigma``: seeded
    positions and noise, the same for every call."""
    rng = np.random.default_rng(seed)
    noisy, clean = [], []
    for photo in photos:
        h, w = photo.shape[:2]
        for _ in range(per_photo):
            y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            c = photo[y : y + crop, x : x + crop]
            clean.append(c)
            noisy.append(c + sigma * rng.standard_normal(c.shape, dtype=np.float32))
    return np.stack(noisy), np.stack(clean)


def with_sigma(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """``[B, H, W, 3]`` noisy images -> ``[B, H, W, 4]`` with a uniform sigma map."""
    return np.concatenate([noisy, np.full(noisy.shape[:3] + (1,), sigma, np.float32)], axis=3)


def denoise_batch(model: keras.Model, noisy: np.ndarray, sigma: float, batch: int = 4) -> np.ndarray:
    """``noisy - model(noisy, sigma)`` over a stack of images, ``batch`` at a time."""
    x = with_sigma(noisy, sigma)
    noise = np.concatenate([np.asarray(model.predict_on_batch(x[i : i + batch])) for i in range(0, len(x), batch)])
    return noisy - noise


def _float_photos(pairs) -> list[np.ndarray]:
    return [photo.astype(np.float32) / 255.0 for _, photo in pairs]


# --------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class DenoiserTrainConfig:
    """Everything that defines a denoiser training run. Stops at ``steps`` or ``minutes``, first."""

    out: str = "build/denoiser"
    minutes: float = 70.0
    steps: int | None = None
    seed: int = 0
    width: int = 32
    depth: int = 3
    blocks: int = 2
    crop: int = 96
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    clip_norm: float | None = 1.0  # global-norm clipping (None: off; it slows the start, see quick)
    ema_momentum: float = 0.999
    p_gray: float = 0.2
    p_varying: float = 0.25
    val_every: int = 250
    val_crop: int = 128
    checkpoint_minutes: float = 3.0

    @classmethod
    def quick(cls, out: str, seed: int = 0) -> DenoiserTrainConfig:
        """A tiny seeded run (well under a minute on this CPU) for CI and tests."""
        return cls(out=out, minutes=5.0, steps=400, seed=seed, width=16, depth=2, blocks=1, crop=32, batch_size=8,
                   learning_rate=2e-3, warmup_steps=20, clip_norm=None, ema_momentum=0.9, val_every=200,
                   val_crop=64)

    @property
    def architecture(self) -> dict:
        return {"width": self.width, "depth": self.depth, "blocks": self.blocks}


def compile_denoiser(model: keras.Model, config: DenoiserTrainConfig) -> keras.Model:
    """Adam with global-norm clipping and EMA weights, L1 loss on the predicted noise."""
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, global_clipnorm=config.clip_norm,
                                      use_ema=True, ema_momentum=config.ema_momentum)
    model.compile(optimizer=optimizer, loss="mean_absolute_error", jit_compile=False)
    optimizer.build(model.trainable_variables)
    return model


def train(config: DenoiserTrainConfig) -> dict:
    """Train (or resume) the run in ``config.out``; returns its final state."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists():
        before = json.loads(saved.read_text())
        if {k: before.get(k) for k in config.architecture} != config.architecture:
            raise ValueError(f"{saved}: this run was started with another architecture; use a new --out")
    _write_json(saved, asdict(config))

    keras.utils.set_random_seed(config.seed)
    model = compile_denoiser(build_denoiser(**config.architecture), config)
    shadow = build_denoiser(**config.architecture)
    rng = np.random.default_rng(config.seed)
    val_noisy, val_clean = noisy_crops(_float_photos(validation_photos()), VAL_SIGMA, config.val_crop)
    noisy_val_psnr = psnr(val_noisy, val_clean)
    state = load_checkpoint(out, model) or {
        "step": 0, "seconds": 0.0, "history": [], "best_step": 0, "best_val_psnr": -math.inf,
        "noisy_val_psnr": noisy_val_psnr,
    }
    if "rng" in state:
        rng.bit_generator.state = state["rng"]
        print(f"resumed {out} at step {state['step']} ({state['seconds'] / 60:.1f} min trained)", flush=True)
    photos = [p for p in _float_photos(training_photos()) if min(p.shape[:2]) >= config.crop]
    noise = NoiseConfig(crop=config.crop, p_gray=config.p_gray, p_varying=config.p_varying)
    batches = training_batches(photos, noise, config.batch_size, rng)
    budget = config.minutes * 60
    best = out / "best.weights.h5"

    def progress() -> float:
        return max(state["step"] / config.steps if config.steps else 0.0, state["seconds"] / budget)

    def validate() -> float:
        shadow.set_weights(ema_weights(model))
        value = psnr(np.clip(denoise_batch(shadow, val_noisy, VAL_SIGMA), 0, 1), val_clean)
        state["history"].append((state["step"], value))
        if value > state["best_val_psnr"]:
            state.update(best_step=state["step"], best_val_psnr=value)
            with AtomicFile(best) as tmp:
                shadow.save_weights(tmp)
            _write_json(out / "best.json", {k: state[k] for k in ("best_step", "best_val_psnr", "noisy_val_psnr")})
        return value

    last_save, losses, tick, tick_step = time.monotonic(), [], time.monotonic(), state["step"]
    val = state["history"][-1][1] if state["history"] else float("nan")
    while progress() < 1.0:
        started = time.monotonic()
        model.optimizer.learning_rate = cosine_lr(progress(), state["step"], config.learning_rate, config.warmup_steps)
        inputs, target = next(batches)
        losses.append(float(model.train_on_batch(inputs, target)))
        state["step"] += 1
        state["seconds"] += time.monotonic() - started
        if state["step"] % config.val_every == 0:
            val = validate()
        if state["step"] % 25 == 0 or state["step"] % config.val_every == 0:
            rate = (state["step"] - tick_step) / max(time.monotonic() - tick, 1e-9)
            eta = budget - state["seconds"]
            if config.steps:
                eta = min(eta, (config.steps - state["step"]) / max(rate, 1e-9))
            print(f"step {state['step']} loss {np.mean(losses[-25:]) * 255:.3f}/255 lr "
                  f"{float(model.optimizer.learning_rate):.2e} val PSNR@15 {val:.2f} dB "
                  f"(noisy {state['noisy_val_psnr']:.2f}, best {state['best_val_psnr']:.2f} at {state['best_step']}) "
                  f"{rate:.2f} it/s ETA {eta / 60:.1f} min", flush=True)
            tick, tick_step = time.monotonic(), state["step"]
        if time.monotonic() - last_save > config.checkpoint_minutes * 60:
            save_checkpoint(out, model, {**state, "rng": rng.bit_generator.state})
            last_save = time.monotonic()
    if not state["history"] or state["history"][-1][0] != state["step"]:
        validate()
    save_checkpoint(out, model, {**state, "rng": rng.bit_generator.state})
    print(f"done: {state['step']} steps in {state['seconds'] / 60:.1f} min, best EMA val PSNR@15 "
          f"{state['best_val_psnr']:.2f} dB at step {state['best_step']} (noisy {state['noisy_val_psnr']:.2f}); "
          f"split {SPLIT_NAME}", flush=True)
    return state


# --------------------------------------------------------------------------------------------------
# Export


EXPORT_SIGMAS = (5, 15, 25, 50)  # /255: where float, INT8 and exports are compared
INT8_MAX_LOSS_DB = 0.1  # INT8 ships only if it loses no more than this at every EXPORT_SIGMAS


def load_denoiser(run_dir: str | Path) -> tuple[keras.Model, dict, dict]:
    """The best EMA denoiser of a run, its config and its last checkpoint's state."""
    run = Path(run_dir)
    if not (run / "best.weights.h5").exists():
        raise FileNotFoundError(f"{run / 'best.weights.h5'}: no best weights; train first "
                                "(python -m converters.denoiser train)")
    config = json.loads((run / "config.json").read_text())
    latest = json.loads((run / "latest.json").read_text())["checkpoint"]
    state = json.loads((run / latest / "state.json").read_text())
    model = build_denoiser(config["width"], config["depth"], config["blocks"])
    model.load_weights(run / "best.weights.h5")
    return model, config, state


def _tflite_fn(model: keras.Model):
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False),
                       input_signature=[tf.TensorSpec([1, None, None, 4], tf.float32, name="image_sigma")])


def export_tflite(model: keras.Model, path: Path) -> Path:
    """Float32 TFLite, input ``[1, -1, -1, 4]`` (the teacher's exporter is for 3-channel models)."""
    import tensorflow as tf

    from converters.export import _replace_atomic

    converter = tf.lite.TFLiteConverter.from_concrete_functions([_tflite_fn(model).get_concrete_function()])
    flatbuffer = converter.convert()
    return _replace_atomic(path, lambda tmp: Path(tmp).write_bytes(flatbuffer))


def export_onnx(model: keras.Model, path: Path) -> Path:
    """ONNX through Keras' exporter: one NHWC input ``image_sigma`` ``[batch, height, width, 4]``."""
    from converters.export import export_onnx as export_image_onnx

    return export_image_onnx(model, path, channels=4, input_name="image_sigma")


def representative_inputs(count: int = 64, crop: int = 128, seed: int = 7) -> list[np.ndarray]:
    """Calibration inputs for INT8: training-distribution patches (noisy, sigma maps, gray) of the
    training photos, ``[crop, crop, 4]`` each."""
    rng = np.random.default_rng(seed)
    photos = [p for p in _float_photos(training_photos()) if min(p.shape[:2]) >= crop]
    config = NoiseConfig(crop=crop)
    return [noisy_patch(photos[rng.integers(len(photos))], rng, config)[0] for _ in range(count)]


def quantize_int8(model: keras.Model, path: Path, crop: int = 128) -> Path:
    """Full-INT8 TFLite (int8 in and out, per-channel weights, per-tensor activations) calibrated on
    ``representative_inputs`` (image and noise map), with ``converters.quantize``'s least-error
    activation ranges."""
    from converters.quantize import quantize_int8 as quantize_model

    return quantize_model(model, representative_inputs(crop=crop), path, tile=(crop, crop))


def score_tflite(path: Path, noisy: np.ndarray, clean: np.ndarray, sigma: float) -> float:
    """PSNR of a bundled-format TFLite denoiser (through the runtime) on crops at ``sigma``."""
    from edge_deblur.denoise import Denoiser

    d = Denoiser.load(path, threads=2)
    return psnr(np.stack([np.clip(d(n, sigma), 0, 1) for n in noisy]), clean)


def export_bundle(run_dir: str | Path, out_dir: str | Path = "edge_deblur/models", name: str = "denoiser") -> dict:
    """Write ``NAME.tflite`` (INT8 if within ``INT8_MAX_LOSS_DB`` of float on the validation crops at
    every ``EXPORT_SIGMAS``, else float), ``NAME.onnx`` and the ``NAME.json`` sidecar into
    ``out_dir``; both TFLite variants stay in ``RUN/export/`` (for ``benchmarks/denoiser.py``)."""
    from converters.export import _replace_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, config, state = load_denoiser(run_dir)
    best = json.loads((Path(run_dir) / "best.json").read_text())  # the exported weights' step
    photos = _float_photos(validation_photos())
    stride = multiple(config["depth"])
    tmp = Path(run_dir) / "export"  # both TFLite variants are kept with the run
    tmp.mkdir(exist_ok=True)
    sidecar_tmp = {"multiple": stride}
    for suffix in ("float.json", "int8.json"):
        (tmp / f"{name}-{suffix}").write_text(json.dumps(sidecar_tmp))
    float_path = export_tflite(model, tmp / f"{name}-float.tflite")
    int8_path = quantize_int8(model, tmp / f"{name}-int8.tflite")
    onnx_path = export_onnx(model, tmp / f"{name}.onnx")
    # exports against Keras on one validation crop, through the runtime's own runners
    from edge_deblur.denoise import _LiteRT4, _OnnxRuntime4

    noisy, _ = noisy_crops(photos, VAL_SIGMA, 128, per_photo=1)
    x = with_sigma(noisy[:1], VAL_SIGMA)
    expected = np.asarray(model.predict_on_batch(x))
    errors = {"tflite": float(np.abs(_LiteRT4(float_path, 2)(x) - expected).max()),
              "onnx": float(np.abs(_OnnxRuntime4(onnx_path, 2)(x) - expected).max())}
    if max(errors.values()) > 1e-4:
        raise RuntimeError(f"exports disagree with Keras beyond 1e-4: {errors}")
    scores = {}
    for s in EXPORT_SIGMAS:
        noisy, clean = noisy_crops(photos, s / 255.0, 128, per_photo=4, seed=99)
        keras_psnr = psnr(np.clip(denoise_batch(model, noisy, s / 255.0), 0, 1), clean)
        scores[str(s)] = {"noisy": round(psnr(noisy, clean), 3), "float": round(keras_psnr, 3),
                          "float_tflite": round(score_tflite(float_path, noisy, clean, s / 255.0), 3),
                          "int8": round(score_tflite(int8_path, noisy, clean, s / 255.0), 3)}
    int8_loss = max(v["float"] - v["int8"] for v in scores.values())
    shipped = int8_path if int8_loss <= INT8_MAX_LOSS_DB else float_path
    _replace_atomic(out / f"{name}.tflite", lambda t: Path(t).write_bytes(shipped.read_bytes()))
    _replace_atomic(out / f"{name}.onnx", lambda t: Path(t).write_bytes(onnx_path.read_bytes()))
    sidecar = {
        "name": name, "kind": "denoiser", "layout": "NHWC",
        "input": "[1, H, W, 4]: noisy sRGB in [0, 1] (unclipped values allowed) and a per-pixel noise std map "
                 "(same units) as channel 3", "output": "[1, H, W, 3]: the predicted noise; clean = noisy - output",
        "multiple": stride, "input_range": [0, 1],
        "tflite_precision": "int8" if shipped is int8_path else "float32",
        "int8_max_loss_db": round(int8_loss, 3),
        "macs_per_pixel": round(count_macs(model, 256, 256) / 256**2, 1), "params": int(model.count_params()),
        "architecture": {"family": "FFDNet-style: space-to-depth 2, half-resolution U-Net of residual blocks, "
                                   "depth-to-space, noise residual", **{k: config[k] for k in ("width", "depth", "blocks")}},
        "training": {"steps": best["best_step"], "run_steps_so_far": state["step"],
                     "run_minutes_so_far": round(state["seconds"] / 60, 1), "seed": config["seed"],
                     "val_psnr_sigma15": round(best["best_val_psnr"], 3), "split": SPLIT_NAME, "photos": "converters.data.TRAINING",
                     "sigma_range_255": [0, round(SIGMA_MAX * 255, 3)], "p_gray": config["p_gray"],
                     "p_varying_sigma": config["p_varying"], "crop": config["crop"], "batch_size": config["batch_size"],
                     "loss": "L1 on the noise"},
        "validation_psnr": {"data": "converters.data.VALIDATION, 24 seeded 128x128 crops per sigma", "by_sigma_255": scores},
        "export_max_abs_error": errors,
    }
    _replace_atomic(out / f"{name}.json", lambda t: Path(t).write_text(json.dumps(sidecar, indent=1) + "\n"))
    return sidecar


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train or resume a run")
    t.add_argument("--out", default="build/denoiser")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the training steps")
    t.add_argument("--quick", action="store_true", help="tiny seeded configuration for CI")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--width", type=int, default=None)
    e = sub.add_parser("export", help="write the shipped TFLite, ONNX and sidecar")
    e.add_argument("run", help="training run folder")
    e.add_argument("--out", default="edge_deblur/models")
    e.add_argument("--name", default="denoiser")
    args = parser.parse_args(argv)
    if args.command == "train":
        config = DenoiserTrainConfig.quick(args.out, args.seed) if args.quick else DenoiserTrainConfig(out=args.out, seed=args.seed)
        overrides = {k: v for k, v in (("steps", args.steps), ("minutes", args.minutes), ("width", args.width)) if v is not None}
        return train(replace(config, **overrides))
    sidecar = export_bundle(args.run, args.out, args.name)
    print(json.dumps(sidecar, indent=1))
    return sidecar


if __name__ == "__main__":
    main()
