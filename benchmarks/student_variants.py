"""Where a student's MACs buy quality, and what they cost on XNNPACK's INT8 kernels: variants of the
student family (``converters.student``) that add context at full or half resolution, or capacity at
low resolution, compared by a short distillation and by INT8 latency at 640x480.

Quality is a proxy, not the shipped chain: ``--steps`` distillation steps (``TrainConfig``'s
defaults: L1 to ground truth and teacher, hint at the bottleneck, peak learning rate 2e-3) of the
unpruned variant on an existing distillation set, then PSNR on 96 validation crops (128x128, 16 from
each of the 6 validation photos, training-distribution kernels, seed 4321) and on the held-out
Levin set that ``edge-deblur convert`` validates on (24 pairs, float). Latency is each variant
at the pruned rpi5 widths (16, 16, 48), or others (``--widths``), with random weights, quantized to
full INT8 and timed side by side with MobileNetV2-224 INT8 on the same interpreter (medians of 15
interleaved rounds), as ``edge-deblur convert`` times its students.

    python benchmarks/student_variants.py quality VARIANT [--steps 2000] [--data build/rpi5/work/distill_set.npz]
    python benchmarks/student_variants.py latency VARIANT [VARIANT ...] [--threads 2] [--widths 16,16,48]

Results: docs/BENCHMARKS.md, issue 4 section.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Variant:
    """A student of ``build_student``'s family with one change to its ends. ``stem`` is the first
    stride-2 convolution's kernel (2: the shipped non-overlapping space-to-depth); ``head`` the
    kernel of the half-resolution convolution that makes the 2x2 blocks of correction; ``refine`` >
    0 adds, after the global residual, a full-resolution 3x3 convolution to that many channels and
    a 3x3 back to RGB (a second residual); ``full_features`` > 0 makes the head unfold that many
    feature channels to full resolution and a 3x3 convolution there makes the correction;
    ``head_depthwise`` puts a linear depthwise 3x3 before the head (a separable 3x3 head);
    ``folded_stem`` writes the stem as LiteRT export does (``converters.student.litert_student``);
    ``tail`` > 0 is ``refine`` applied to the correction concatenated with the image, before the
    residual (it needs CONCATENATION, outside DESIGN.md's ops, so it is timed by ``refine``);
    ``attention`` is ``build_student``'s (the sweep in docs/BENCHMARKS.md ran before the students
    had it, so its variants start from ``no-attention``)."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (0, 1, 2)
    middle: int = 2
    stem: int = 2
    head: int = 1
    refine: int = 0
    full_features: int = 0
    tail: int = 0
    head_depthwise: bool = False
    folded_stem: bool = False
    attention: int = 2


BASE = Variant()  # the rpi5 student before pruning
SWEEP = replace(BASE, attention=0)  # the rpi5 student before channel attention: the variant sweep's base
VARIANTS = {
    "base": BASE,
    "attention1": replace(BASE, attention=1),  # attention in the bottleneck only
    "attention3": replace(BASE, attention=3),  # ... and at levels 3 and 2
    "no-attention": SWEEP,
    # The sweep of docs/BENCHMARKS.md, measured before channel attention, as it was run:
    "base-folded-stem": replace(SWEEP, folded_stem=True),
    "blocks011-folded-stem": replace(SWEEP, blocks=(0, 1, 1), folded_stem=True),  # the rpi4 student
    "head3x3": replace(SWEEP, head=3),
    "head-depthwise3x3": replace(SWEEP, head_depthwise=True),
    "stem4x4-head3x3": replace(SWEEP, stem=4, head=3),
    "blocks112": replace(SWEEP, blocks=(1, 1, 2)),
    "blocks112-head3x3": replace(SWEEP, blocks=(1, 1, 2), head=3),
    "level4": replace(SWEEP, widths=(16, 32, 64, 128), blocks=(0, 1, 2, 2)),
    "level3-128": replace(SWEEP, widths=(16, 32, 128)),
    "fullres-tail8": replace(SWEEP, tail=8),
    "fullres-refine8": replace(SWEEP, refine=8),
    "fullres-refine4": replace(SWEEP, refine=4),
    "fullres-features8": replace(SWEEP, full_features=8),
}


def build(v: Variant):
    """The variant as one Keras model, RGB in [0, 1] in and out; every stage but the two ends is
    ``converters.student._stage``'s, so the hint finds the same bottleneck."""
    import keras
    from keras import layers

    from converters import student as S

    values = {"image": keras.Input((None, None, 3), name="image")}
    for stage, producers in S._wiring(len(v.widths)).items():
        inputs = [values[p] for p in producers]
        if stage == "enc1" and v.stem != 2:
            x = layers.Conv2D(v.widths[0], v.stem, strides=2, padding="same", activation="relu6", name="enc1_stem")(inputs[0])
            for b in range(v.blocks[0]):
                x = S.inverted_residual(x, f"enc1_block{b}")
            values[stage] = layers.Identity(name=stage)(x)
        elif stage == "enc1" and v.folded_stem:
            values[stage] = S._stage(stage, inputs, v.widths, v.blocks, v.middle, folded_stem=True, attention=v.attention)
        elif stage == "head":
            values[stage] = _head(v, *inputs)
        else:
            values[stage] = S._stage(stage, inputs, v.widths, v.blocks, v.middle, attention=v.attention)
    return keras.Model(values["image"], values["head"], name="variant")


def _head(v: Variant, x, image):
    from keras import layers

    from converters.student import DepthToSpaceOp

    def refinement(t, channels, name):
        t = layers.Conv2D(channels, 3, padding="same", activation="relu6", name=f"{name}1")(t)
        return layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name=f"{name}2")(t)

    if v.full_features:
        f = layers.Conv2D(4 * v.full_features, 1, activation="relu6", name="head_features")(x)
        correction = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros",
                                   name="head_correction")(DepthToSpaceOp(2, name="head_shuffle")(f))
        return layers.Add(name="head")([image, correction])
    if v.head_depthwise:  # linear: with the 1x1 after it, a separable 3x3 head
        x = layers.DepthwiseConv2D(3, padding="same", name="head_depthwise")(x)
    init = "glorot_uniform" if v.tail else "zeros"  # a zero correction would starve the tail of gradient
    correction = layers.Conv2D(12, v.head, padding="same", kernel_initializer=init, name="head_correction")(x)
    correction = DepthToSpaceOp(2, name="head_shuffle")(correction)
    if v.tail:
        correction = refinement(layers.Concatenate(name="tail_in")([correction, image]), v.tail, "tail")
    y = layers.Add(name="head" if not v.refine else "head_coarse")([image, correction])
    return layers.Add(name="head")([y, refinement(y, v.refine, "refine")]) if v.refine else y


def quality(name: str, steps: int, data_path: Path) -> dict:
    from converters.data import make_eval_pairs, validation_pairs
    from converters.distill import TrainConfig, _psnr, load_distill_set, train_student
    from edge_deblur.metrics import psnr
    from edge_deblur.pipeline import read_pairs
    from converters.teacher import count_macs

    model = build(VARIANTS[name])
    with tempfile.TemporaryDirectory() as work:
        train_student(model, load_distill_set(data_path), TrainConfig(steps=steps, checkpoint_every=500), Path(work))
    blurred, sharp = validation_pairs(crop=128, per_photo=16, seed=4321)
    out = np.concatenate([np.asarray(model(blurred[i : i + 8], training=False)) for i in range(0, len(blurred), 8)])
    with tempfile.TemporaryDirectory() as folder:  # the held-out Levin set, as `convert` validates on it
        make_eval_pairs(folder, kernels="levin", crop=256)
        pairs = [(b, s) for _, b, s, _ in read_pairs(Path(folder))]
    restored = [np.rint(np.clip(np.asarray(model(b[None].astype(np.float32) / 255, training=False))[0], 0, 1) * 255)
                .astype(np.uint8) for b, _ in pairs]
    return {"variant": name, "steps": steps, "macs": count_macs(model, 480, 640),
            "psnr": round(_psnr(out, sharp), 3), "blurred_psnr": round(_psnr(blurred, sharp), 3),
            "levin_psnr": round(float(np.mean([psnr(s, r) for (_, s), r in zip(pairs, restored)])), 3),
            "levin_blurred_psnr": round(float(np.mean([psnr(s, b) for b, s in pairs])), 3)}


def latency(names: list[str], threads: int, widths: tuple[int, ...] = (16, 16, 48)) -> dict:
    from converters.quantize import quantize_int8, representative_crops, tflite_ops
    from converters.reference import mobilenet_v2_tflite, time_side_by_side
    from converters.teacher import count_macs

    crops = list(representative_crops(count=16, crop=256, seed=0))
    rng = np.random.default_rng(0)
    models, macs = {"MobileNetV2-224 INT8": (mobilenet_v2_tflite(), None)}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model = build(replace(VARIANTS[name], widths=widths + VARIANTS[name].widths[3:]))
            for layer in model.layers:  # random weights: a zero-initialised layer would calibrate to nothing
                if layer.weights:
                    layer.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in layer.get_weights()])
            path = quantize_int8(model, crops, Path(tmp) / f"{name}.tflite")
            macs[name] = count_macs(model, 480, 640)
            print(name, f"{macs[name] / 1e6:.0f}M MACs", tflite_ops(path), flush=True)
            models[name] = (path, (1, 480, 640, 3))
        timed = time_side_by_side(models, threads=threads, rounds=15)
    return {"threads": threads, "widths": widths, "medians_ms": timed.medians_ms, "macs": macs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("variant", choices=sorted(VARIANTS))
    q.add_argument("--steps", type=int, default=2000)
    q.add_argument("--data", type=Path, default=ROOT / "build/rpi5/work/distill_set.npz")
    t = sub.add_parser("latency")
    t.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--widths", default="16,16,48", help="the first three levels' widths (rpi5's pruned ones)")
    args = parser.parse_args()
    if args.what == "quality":
        if not args.data.is_file():
            parser.error(f"{args.data}: no distillation set; `edge-deblur convert --target rpi5` makes one")
        print(json.dumps(quality(args.variant, args.steps, args.data)))
    else:
        print(json.dumps(latency(args.variants, args.threads, tuple(int(w) for w in args.widths.split(",")))))


if __name__ == "__main__":
    main()
