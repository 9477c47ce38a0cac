"""Train the teacher on synthetic blur: resumable, time-budgeted, EMA weights kept for export.

    python -m converters.train --out runs/teacher --minutes 60 [--steps N] [--quick] [--seed 0] [--width 16]

Loss: Charbonnier ``sqrt(d^2 + eps^2)`` plus ``fft_weight`` times the L1 distance of the orthonormal
2-D Fourier transforms (real and imaginary parts, as in MIMO-UNet). AdamW with global-norm clipping and
an exponential moving average of the weights (the EMA is validated, kept and exported). The learning
rate warms up linearly, then follows a cosine over training *progress*, the larger of the step and
wall-clock fractions, so a time-budgeted run always ends with a decayed rate. Re-running the same
command resumes from the last checkpoint (weights, optimizer with EMA, step, elapsed time, RNG state).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
from keras import ops

from converters.blur import BlurConfig
from converters.data import SPLIT_NAME, training_batches, training_photos, validation_pairs
from converters.teacher import build_teacher
from edge_deblur.images import AtomicFile


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. ``steps=None`` trains until the time budget is spent."""

    out: str = "runs/teacher"
    minutes: float = 60.0
    steps: int | None = None
    seed: int = 0
    width: int = 16
    enc_blocks: tuple[int, ...] = (1, 1, 2)
    middle_blocks: int = 4
    dec_blocks: tuple[int, ...] = (1, 1, 1)
    crop: int = 128
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    clip_norm: float = 1.0
    ema_momentum: float = 0.998
    fft_weight: float = 0.1
    val_every: int = 250
    val_crop: int = 192
    checkpoint_minutes: float = 5.0

    @classmethod
    def quick(cls, out: str, seed: int = 0) -> TrainConfig:
        """A tiny seeded run (seconds on a CPU) for CI and tests."""
        return cls(out=out, minutes=5.0, steps=30, seed=seed, width=8, enc_blocks=(1, 1), middle_blocks=1,
                   dec_blocks=(1, 1), crop=32, batch_size=4, warmup_steps=3, ema_momentum=0.9, val_every=15,
                   val_crop=64)

    @property
    def architecture(self) -> dict:
        """The ``build_teacher`` keyword arguments."""
        return {"width": self.width, "enc_blocks": list(self.enc_blocks), "middle_blocks": self.middle_blocks,
                "dec_blocks": list(self.dec_blocks)}


@dataclass
class TrainResult:
    steps: int
    minutes: float
    best_step: int
    best_val_psnr: float
    blurred_val_psnr: float
    best_weights: Path
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, EMA validation PSNR)


@keras.saving.register_keras_serializable(package="edge_deblur")
class DeblurLoss(keras.losses.Loss):
    """Charbonnier loss plus ``fft_weight`` times the mean absolute difference of orthonormal 2-D FFTs."""

    def __init__(self, fft_weight: float = 0.1, eps: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.fft_weight, self.eps = fft_weight, eps

    def call(self, y_true, y_pred):
        d = y_pred - y_true
        charbonnier = ops.mean(ops.sqrt(d * d + self.eps**2))
        planes = ops.transpose(d, (0, 3, 1, 2))  # fft2 works on the last two axes
        real, imag = ops.fft2((planes, ops.zeros_like(planes)))
        norm = ops.sqrt(ops.cast(ops.shape(d)[1] * ops.shape(d)[2], d.dtype))
        return charbonnier + self.fft_weight * ops.mean(ops.abs(real) + ops.abs(imag)) / norm

    def get_config(self):
        return {**super().get_config(), "fft_weight": self.fft_weight, "eps": self.eps}


def cosine_lr(progress: float, step: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then ``peak * (1 + cos(pi * progress)) / 2``."""
    warm = min(1.0, (step + 1) / max(warmup_steps, 1))
    return peak * warm * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def compile_teacher(model: keras.Model, config: TrainConfig) -> keras.Model:
    """Attach the optimizer (AdamW, clipping, EMA) and the loss. XLA is left off on TensorFlow: on
    this 2-core CPU it measured 8x slower per step than TensorFlow's graph mode."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, global_clipnorm=config.clip_norm,
        use_ema=True, ema_momentum=config.ema_momentum,
    )
    jit = keras.backend.backend() != "tensorflow"
    model.compile(optimizer=optimizer, loss=DeblurLoss(config.fft_weight), jit_compile=jit)
    optimizer.build(model.trainable_variables)
    return model


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of 10 log10(1 / MSE), images in [0, 1]."""
    mse = np.mean((np.asarray(a, np.float64) - b) ** 2, axis=tuple(range(1, np.ndim(a))))
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def ema_weights(model: keras.Model) -> list[np.ndarray]:
    """The optimizer's moving averages of ``model``'s weights, as copies; ``model`` is left as it was.
    (Copies matter on JAX, where a variable and its average would otherwise share a donated buffer.)"""
    current = model.get_weights()
    model.optimizer.finalize_variable_values(model.trainable_variables)
    averaged = model.get_weights()
    model.set_weights(current)
    return averaged


def restore(model: keras.Model, blurred: np.ndarray, batch: int = 4) -> np.ndarray:
    """``model`` applied to a stack of images, ``batch`` at a time, clipped to [0, 1]."""
    restored = [model.predict_on_batch(blurred[i : i + batch]) for i in range(0, len(blurred), batch)]
    return np.clip(np.concatenate(restored), 0, 1)


def _write_json(path: Path, data: dict) -> None:
    with AtomicFile(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def save_checkpoint(out: Path, model: keras.Model, state: dict) -> None:
    """Write ``out/ckpt-STEP/`` (weights, optimizer with EMA, state) and then point ``out/latest.json``
    at it, so an interrupted write never leaves a half checkpoint as the latest."""
    folder = out / f"ckpt-{state['step']:07d}"
    folder.mkdir(exist_ok=True)
    model.save_weights(folder / "model.weights.h5")
    store = {}
    model.optimizer.save_own_variables(store)
    np.savez(folder / "optimizer.npz", **store)
    _write_json(folder / "state.json", state)
    _write_json(out / "latest.json", {"checkpoint": folder.name})
    for old in out.glob("ckpt-*"):
        if old != folder:
            shutil.rmtree(old)


def load_checkpoint(out: Path, model: keras.Model) -> dict | None:
    """Restore the latest checkpoint into ``model`` (and its optimizer); returns its state or None."""
    if not (out / "latest.json").exists():
        return None
    folder = out / json.loads((out / "latest.json").read_text())["checkpoint"]
    model.load_weights(folder / "model.weights.h5")
    with np.load(folder / "optimizer.npz") as z:
        model.optimizer.load_own_variables(dict(z))
    return json.loads((folder / "state.json").read_text())


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) the run in ``config.out`` until ``config.steps`` or ``config.minutes``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists():
        before = json.loads(saved.read_text())
        if {k: before[k] for k in config.architecture} != config.architecture:
            raise ValueError(f"{saved}: this run was started with another architecture; use a new --out")
    _write_json(saved, {**asdict(config), **config.architecture})

    keras.utils.set_random_seed(config.seed)
    model = compile_teacher(build_teacher(**config.architecture), config)
    shadow = build_teacher(**config.architecture)  # holds the EMA weights for validation and export
    rng = np.random.default_rng(config.seed)
    val_blurred, val_sharp = validation_pairs(config.val_crop, seed=config.seed + 1234)
    blurred_val_psnr = psnr(val_blurred, val_sharp)
    state = load_checkpoint(out, model) or {
        "step": 0, "seconds": 0.0, "history": [], "best_step": 0, "best_val_psnr": -math.inf,
        "blurred_val_psnr": blurred_val_psnr,
    }
    if "rng" in state:
        rng.bit_generator.state = state["rng"]
        print(f"resumed {out} at step {state['step']} ({state['seconds'] / 60:.1f} min trained)", flush=True)
        if not math.isclose(blurred_val_psnr, state["blurred_val_psnr"], abs_tol=1e-6):
            # The synthesis changed since the checkpoint: old scores are on another validation set.
            print(f"validation set changed (blurred PSNR {state['blurred_val_psnr']:.2f} -> "
                  f"{blurred_val_psnr:.2f} dB): best-checkpoint tracking restarts", flush=True)
            state.update(blurred_val_psnr=blurred_val_psnr, best_val_psnr=-math.inf, best_step=state["step"])
    batches = training_batches(training_photos(), BlurConfig(crop=config.crop), config.batch_size, rng)
    budget = config.minutes * 60
    best = out / "best.weights.h5"

    def progress() -> float:
        return max(state["step"] / config.steps if config.steps else 0.0, state["seconds"] / budget)

    def validate() -> None:
        shadow.set_weights(ema_weights(model))
        value = psnr(restore(shadow, val_blurred), val_sharp)
        state["history"].append((state["step"], value))
        if value > state["best_val_psnr"]:
            state.update(best_step=state["step"], best_val_psnr=value)
            with AtomicFile(best) as tmp:
                shadow.save_weights(tmp)
            _write_json(out / "best.json", {k: state[k] for k in ("best_step", "best_val_psnr", "blurred_val_psnr")})
        print(f"step {state['step']}: EMA val PSNR {value:.2f} dB (blurred {state['blurred_val_psnr']:.2f}, "
              f"best {state['best_val_psnr']:.2f} at {state['best_step']})", flush=True)

    def checkpoint() -> None:
        save_checkpoint(out, model, {**state, "rng": rng.bit_generator.state})

    last_save, losses, tick = time.monotonic(), [], time.monotonic()
    while progress() < 1.0:
        started = time.monotonic()
        model.optimizer.learning_rate = cosine_lr(progress(), state["step"], config.learning_rate, config.warmup_steps)
        blurred, sharp = next(batches)
        losses.append(float(model.train_on_batch(blurred, sharp)))
        state["step"] += 1
        state["seconds"] += time.monotonic() - started
        if state["step"] % 25 == 0:
            rate = 25 / (time.monotonic() - tick)
            eta = budget - state["seconds"]
            if config.steps:
                eta = min(eta, (config.steps - state["step"]) / rate)
            lr = float(model.optimizer.learning_rate)
            print(f"step {state['step']} loss {np.mean(losses[-25:]):.4f} lr {lr:.2e} {rate:.2f} it/s "
                  f"ETA {eta / 60:.1f} min", flush=True)
            tick = time.monotonic()
        if state["step"] % config.val_every == 0:
            validate()
        if time.monotonic() - last_save > config.checkpoint_minutes * 60:
            checkpoint()
            last_save = time.monotonic()
    if not state["history"] or state["history"][-1][0] != state["step"]:
        validate()
    checkpoint()
    return TrainResult(
        steps=state["step"], minutes=state["seconds"] / 60, best_step=state["best_step"],
        best_val_psnr=state["best_val_psnr"], blurred_val_psnr=state["blurred_val_psnr"], best_weights=best,
        history=[tuple(h) for h in state["history"]],
    )


def main(argv: list[str] | None = None) -> TrainResult:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/teacher", help="run folder (checkpoints, best EMA weights, log)")
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="wall-clock budget of the training steps (not validation), summed over resumptions")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: time only)")
    parser.add_argument("--quick", action="store_true", help="tiny seeded configuration for CI")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=None, help="channels at full resolution")
    args = parser.parse_args(argv)
    config = TrainConfig.quick(args.out, args.seed) if args.quick else TrainConfig(out=args.out, seed=args.seed)
    overrides = {"minutes": args.minutes, "steps": args.steps if args.steps is not None else config.steps}
    if args.width is not None:
        overrides["width"] = args.width
    result = train(replace(config, **overrides))
    print(f"done: {result.steps} steps in {result.minutes:.1f} min, best EMA val PSNR {result.best_val_psnr:.2f} dB "
          f"at step {result.best_step} (blurred {result.blurred_val_psnr:.2f} dB), weights {result.best_weights}")
    print(f"split: {SPLIT_NAME}")
    return result


if __name__ == "__main__":
    main()
