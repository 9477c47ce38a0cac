"""``edge-deblur convert``: a teacher in, a validated student for a named target out, with a report.

    edge-deblur convert --teacher teacher --target rpi5 -o build/rpi5 [--quick]

The chain, each step writing its artefact under ``<out>/work`` and skipped when it is already there
for the same inputs (a fingerprint of everything upstream), so an interrupted run picks up where it
stopped (training steps also checkpoint inside themselves):

    data      synthesise crops from the training photos, run the teacher on them once
    distill   train the target's unpruned student against teacher, features and ground truth
    prune     structured channel pruning to the target's MAC budget (converters.prune)
    finetune  train the narrower student on L2 (PSNR's own loss) with turned batches, no hint
    quantize  full-INT8 post-training quantization calibrated on real blurred crops
    qat       quantization-aware fine-tuning, when PTQ loses more than ``qat_threshold_db``
    export    the INT8 .tflite (and its float twin), an .onnx for onnxruntime targets, a sidecar
    validate  PSNR/SSIM on held-out photos with held-out kernels, INT8 against float, MACs, size,
              latency here and expected on the target (MobileNetV2 side by side)
    report    model_card.json, report.md, report.html, quality_latency.svg

``--reuse DIR`` takes ``data`` and ``distill`` from another conversion that ran them with the same
fingerprint (``Conversion.take_step``), so targets sharing an unpruned student distil it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from converters.blur import BlurConfig
from edge_deblur.errors import ModelError
from edge_deblur.images import AtomicFile

XNNPACK_INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "MUL", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "QUANTIZE",
                    "DEQUANTIZE"}
GAIN_KEPT = 0.9  # DESIGN.md: the student keeps 90% of the teacher's PSNR gain
MAC_REDUCTION = 10.0  # ... with at least 10x fewer MACs than the teacher


@dataclass(frozen=True)
class ConvertConfig:
    """Everything that defines a conversion. ``quick()`` is the same chain in about a minute."""

    teacher: str = "teacher"
    target: str = "rpi5"
    # The teacher's value range, as converters.ranges.parse_input_range reads it ("0-1", "0-255",
    # "-1-1", "MEAN,STD"); empty: its sidecar's, else detected.
    input_range: str = ""
    out: str = ""  # default: build/<target>
    seed: int = 0
    crops: int = 6000  # distillation set size
    crop: int = 128
    distill_steps: int = 8000
    # Fine-tuning after pruning runs on its own set of larger crops: channel attention's frame means
    # and the borders then look as they do on 256-pixel and larger inputs (docs/BENCHMARKS.md).
    finetune_crops: int = 1536
    finetune_crop: int = 256
    finetune_batch_size: int = 4  # the distillation batch's pixels: 4 x 256^2 = 16 x 128^2
    finetune_steps: int = 6000
    finetune_loss: str = "l2"  # after pruning, PSNR's own loss (L1 while distilling: robust early on)
    finetune_augment: bool = True  # turn fine-tuning batches by the square's 8 symmetries
    qat_steps: int = 1000
    qat_threshold_db: float = 0.3
    batch_size: int = 16
    # Distillation's peak. 5e-3 distils faster and 48,000 steps at 5e-3 made a better float student,
    # but its INT8 model lost more to quantization and ended no better (docs/BENCHMARKS.md).
    learning_rate: float = 2e-3
    finetune_learning_rate: float = 1e-3  # after pruning; quantization-aware fine-tuning runs at a fifth of it
    gt_weight: float = 1.0  # L1 to the sharp crop
    output_weight: float = 1.0  # L1 to the teacher's output
    feature_weight: float = 0.1  # L1 of the hint regressor to the teacher's normalised bottleneck
    # Issue 14 part 2. The pairs both training sets are synthesised with (crop set by crops/finetune_crop):
    # the validation classes in proportion, sharp frames included (``BlurConfig.by_class_mix``).
    blur: BlurConfig = BlurConfig.by_class_mix()
    # "harm": no teacher term on crops the teacher makes worse than its input (distill.teacher_trust).
    teacher_mask: str = "harm"
    # The INT8 output on the input's grid (converters.output_grid): the last ADD rounds to the frame's
    # own 8-bit steps, so a near-identity correction of a near-clean frame is not re-rounded to the
    # calibrated range's coarser steps (1.28 levels for the previous rpi5 student).
    output_grid: bool = True
    min_width: int = 16
    calibration: int = 128  # representative crops for INT8 calibration
    eval_photos: int | None = None  # held-out photos to validate on (None: all 24)
    eval_crop: int = 256
    # Validation by blur class (converters.blur_classes): photos per (class, noise) cell and crop side.
    class_photos: int = 4
    class_crop: int = 256
    timing_rounds: int = 15  # interleaved rounds per repeat of the side-by-side timing
    timing_repeats: int = 5  # repeats, each giving its own expected latency: their range is the timing noise
    quick: bool = False
    reuse: str = ""  # another conversion's output folder: its steps with the same fingerprint are taken, not rerun

    @classmethod
    def quick_config(cls, **overrides) -> ConvertConfig:
        fast = dict(crops=64, crop=64, distill_steps=30, finetune_crops=16, finetune_crop=128, finetune_batch_size=2,
                    finetune_steps=20, qat_steps=10, batch_size=8, calibration=8, eval_photos=3, eval_crop=128, class_photos=1, class_crop=128, timing_rounds=3, timing_repeats=3, quick=True)
        return cls(**{**fast, **overrides})

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"build/{self.target}")


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _log(message: str) -> None:
    """Progress on stderr; ``-q`` keeps only warnings."""
    from edge_deblur import logs

    if logs.verbosity() > logs.QUIET or message.startswith("warning"):
        print(message, file=sys.stderr, flush=True)


SMOKE_RUN = ("smoke run (--quick): the whole chain on a few dozen crops and a few dozen training steps, to show "
             "that every step runs; its quality and timing say nothing about a real conversion")
# Checks whose outcome a smoke run's few training steps or short timing decide: a FAIL there is
# expected. The others (MACs, operators, ONNX agreement) follow from the chain itself and must pass.
SMOKE_EXPECTED_FAILURES = ("gain", "latency", "rate", "int8_loss")


def _file_entry(path: Path, relative_to: Path) -> dict:
    return {"path": str(path.relative_to(relative_to)), "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _atomic_copy(src: Path, dst: Path) -> None:
    with AtomicFile(dst) as tmp:
        shutil.copyfile(src, tmp)


# The steps ``--reuse`` may take, with their artefact under work/: the ones that depend only on the
# teacher and the unpruned student, never on the target's budget or the output folder.
REUSABLE_STEPS = {"data": "distill_set.npz", "finetune_data": "finetune_set.npz", "distill": "distill"}


def _link_or_copy(src, dst) -> None:
    dst = Path(dst)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        _atomic_copy(Path(src), dst)


def _write_json(path: Path, data) -> None:
    with AtomicFile(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


@dataclass
class Steps:
    """The step records in ``work/steps.json``: per step its fingerprint, time and summary."""

    path: Path
    records: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> Steps:
        return cls(path, json.loads(path.read_text()) if path.exists() else {})

    def done(self, step: str, fingerprint: str) -> dict | None:
        record = self.records.get(step)
        return record if record and record["fingerprint"] == fingerprint else None

    def record(self, step: str, fingerprint: str, seconds: float, **summary) -> dict:
        self.records[step] = {"fingerprint": fingerprint, "seconds": round(seconds, 1), **summary}
        _write_json(self.path, self.records)
        return self.records[step]


class Conversion:
    """One conversion's state: config, target, work folder and the artefacts of each step."""

    def __init__(self, config: ConvertConfig):
        from targets import available_targets, load_target

        if config.target not in available_targets():
            raise ModelError(f"unknown target {config.target!r} (available: {', '.join(available_targets())})")
        if config.reuse and not (Path(config.reuse) / "work" / "steps.json").is_file():
            raise ModelError(f"--reuse {config.reuse}: not a conversion's output folder (no work/steps.json in it)")
        self.config = config
        self.target = load_target(config.target)
        self.out = config.out_dir
        self.work = self.out / "work"
        self.name = f"student-{self.target.name}"
        self._teacher = None
        self.teacher  # a teacher that cannot be used is refused before anything is written
        self.work.mkdir(parents=True, exist_ok=True)
        self.steps = Steps.open(self.work / "steps.json")

    @property
    def int8(self) -> bool:
        return self.target.precision == "int8"

    @property
    def teacher(self):
        if self._teacher is None:
            from converters.distill import load_teacher_source

            t = self._teacher = load_teacher_source(self.config.teacher, self.config.input_range)
            size = (f", fixed {t.fixed_size[0]}x{t.fixed_size[1]} input: run on windows of that size, overlap {t.overlap}"
                    if t.fixed_size else "")
            _log(f"teacher {t.source}: {t.kind}, {t.layout}{size}, values {t.value_range} ({t.range_decided}), "
                 f"{t.macs / 1e9:.2f}G MACs per 640x480 frame")
        return self._teacher

    def run_step(self, step: str, fingerprint: str, body) -> dict:
        record = self.steps.done(step, fingerprint)
        if record is not None:
            _log(f"[{step}] done earlier ({record['seconds']:.0f} s), kept")
            return record
        record = self.take_step(step, fingerprint)
        if record is not None:
            return record
        _log(f"[{step}] ...")
        started = time.monotonic()
        summary = body()
        record = self.steps.record(step, fingerprint, time.monotonic() - started, **summary)
        _log(f"[{step}] done in {record['seconds']:.0f} s")
        return record

    def take_step(self, step: str, fingerprint: str) -> dict | None:
        """The step's record and artefacts from the ``reuse`` conversion when it ran this very step
        (same fingerprint: same teacher, data, architecture and settings), or None. The data and the
        distillation depend only on the teacher and the unpruned student, so targets that share a
        base student share them (rpi4 takes rpi5's). Files are hard-linked where the file system
        allows: the distillation set is gigabytes."""
        if not self.config.reuse or step not in REUSABLE_STEPS:
            return None
        other = Path(self.config.reuse) / "work"
        record = Steps.open(other / "steps.json").done(step, fingerprint)
        artefact = REUSABLE_STEPS[step]
        if record is None or not (other / artefact).exists():
            return None
        target = self.work / artefact
        if target.is_dir():
            shutil.rmtree(target)
        if (other / artefact).is_dir():
            shutil.copytree(other / artefact, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(other / artefact, target)
        _log(f"[{step}] taken from {other} (same fingerprint)")
        return self.steps.record(step, fingerprint, record["seconds"],
                                 **{k: v for k, v in record.items() if k not in ("fingerprint", "seconds")})

    # -- the steps ------------------------------------------------------------------------------

    def train_config(self, steps: int, **overrides):
        from converters.distill import TrainConfig

        c = self.config
        settings = dict(steps=steps, batch_size=c.batch_size, learning_rate=c.learning_rate, gt_weight=c.gt_weight,
                        output_weight=c.output_weight, feature_weight=c.feature_weight, seed=c.seed,
                        checkpoint_every=max(5, min(250, steps // 4)), teacher_mask=c.teacher_mask)
        return TrainConfig(**{**settings, **overrides})

    def base_spec(self):
        from converters.student import STUDENTS

        return STUDENTS[self.target.name]

    def mac_budget_basis(self) -> str:
        """Where ``mac_budget`` comes from, in words (the one figure the log, card and report give)."""
        budget, target = self.mac_budget(), self.target.mac_budget
        tenth = self.teacher.macs / MAC_REDUCTION if self.teacher.macs else None
        if budget == target:
            return f"{self.target.name}'s budget"
        if tenth is not None and budget == int(tenth):
            return f"a tenth of the teacher's {self.teacher.macs / 1e6:.0f}M MACs, below {self.target.name}'s {target / 1e6:.0f}M"
        return (f"the smallest student pruning reaches (every level {self.config.min_width} wide): a tenth of the "
                f"teacher's MACs is below it")

    def mac_budget(self) -> int:
        """The target's budget, and never more than a tenth of the teacher's MACs (DESIGN.md), but
        not below the smallest student pruning can reach (every level at ``min_width``): a small
        teacher (a mobile model of a few GMACs) then gets that smallest student, and the card's
        ">= 10x fewer MACs" check says by how much it is missed."""
        from converters.student import student_macs

        budget = int(min(self.target.mac_budget, self.teacher.macs / MAC_REDUCTION if self.teacher.macs else np.inf))
        spec = self.base_spec()
        smallest = student_macs(replace(spec, widths=tuple(min(self.config.min_width, w) for w in spec.widths)).build())
        if budget < smallest:
            if not getattr(self, "_small_teacher_said", False):
                _log(f"warning: a tenth of the teacher's {self.teacher.macs / 1e6:.0f}M MACs is below the smallest "
                     f"student ({smallest / 1e6:.0f}M, every level {self.config.min_width} wide): pruning to that")
                self._small_teacher_said = True
            return int(smallest)
        return budget

    def data(self, step: str = "data") -> tuple[str, Path]:
        """The distillation set (``data``: ``crops`` crops of ``crop`` pixels), or the fine-tuning
        set (``finetune_data``: ``finetune_crops`` of ``finetune_crop``, other crops of the same
        photos), each run through the teacher."""
        from converters.distill import make_distill_set

        c = self.config
        count, crop, seed = (c.crops, c.crop, c.seed) if step == "data" else (c.finetune_crops, c.finetune_crop, c.seed + 1)
        path = self.work / REUSABLE_STEPS[step]
        # How the teacher is run (range, layout, window size, overlap, stride) joins the key when it is
        # not the bundled teacher's way (0-1, NHWC, any size), so that earlier runs of the bundled
        # teacher keep their steps while any change of range or size redoes everything downstream.
        t = self.teacher
        how = [] if (t.value_range, t.layout, t.fixed_size) == ("0-1", "NHWC", None) else [t.run_fingerprint]
        blur = replace(c.blur, crop=crop)
        # The teacher's own mix keeps the fingerprint it always had; any other mix joins the key.
        mix = [] if blur == BlurConfig(crop=crop) else [asdict(blur)]
        fp = _fingerprint("data-v2", t.fingerprint, count, crop, seed,
                          t.predict_features is not None, *how, *mix)  # whether the set holds hint features

        def body():
            make_distill_set(self.teacher, count, crop, seed, path, log=_log, blur=blur)
            return {"crops": count, "crop": crop}

        if not path.exists():
            self.steps.records.pop(step, None)
        self.run_step(step, fp, body)
        return fp, path

    def train(self, step: str, fp: str, start, config, data_path: Path) -> tuple[str, Path]:
        """Train the student ``start()`` builds for ``config`` against the distillation set; the
        weights land in ``work/<step>/student.weights.h5``."""
        from converters.distill import load_distill_set, train_student
        from converters.student import student_widths

        folder = self.work / step
        fp = _fingerprint(step, fp, asdict(config))

        def body():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "fingerprint").write_text(fp)
            model = start()
            result = train_student(model, load_distill_set(data_path), config, folder, log=_log)
            return {"steps": result.step, "final_loss": result.losses[-1][1] if result.losses else None,
                    "val_psnr": result.val_psnr[-1][1] if result.val_psnr else None,
                    "widths": list(student_widths(model))}

        if (folder / "fingerprint").exists() and (folder / "fingerprint").read_text() != fp:
            shutil.rmtree(folder)  # a checkpoint of another configuration must not be resumed
        self.run_step(step, fp, body)
        return fp, folder / "student.weights.h5"

    def distill(self, fp: str, data_path: Path) -> tuple[str, Path]:
        """Train the target's unpruned student (``converters.student.STUDENTS``) on the distillation set."""
        spec = self.base_spec()
        return self.train("distill", _fingerprint(fp, asdict(spec)), spec.build,
                          self.train_config(self.config.distill_steps), data_path)

    def prune(self, fp: str, distilled: Path) -> tuple[str, Path, dict]:
        from converters.prune import channel_importance, choose_widths, prune_student
        from converters.quantize import representative_crops

        path = self.work / "prune" / "pruned.weights.h5"
        fp = _fingerprint("prune-v1", fp, self.mac_budget(), self.config.min_width)

        def body():
            model = self.base_spec().build()
            model.load_weights(distilled)
            crops = np.stack(list(representative_crops(count=32, crop=128, seed=self.config.seed + 3)))
            importance = channel_importance(model, crops)
            plan = choose_widths(model, importance, self.mac_budget(), self.config.min_width)
            pruned = prune_student(model, plan.widths, importance)
            with AtomicFile(path) as tmp:
                pruned.save_weights(tmp)
            _log(f"pruned widths {plan.base_widths} -> {plan.widths}: {plan.base_macs / 1e6:.0f}M -> "
                 f"{plan.macs / 1e6:.0f}M MACs (budget {self.mac_budget() / 1e6:.0f}M: {self.mac_budget_basis()})")
            return {"base_widths": list(plan.base_widths), "widths": list(plan.widths), "base_macs": plan.base_macs,
                    "macs": plan.macs, "mac_budget": self.mac_budget()}

        if not path.exists():
            self.steps.records.pop("prune", None)
        record = self.run_step("prune", fp, body)
        return fp, path, record

    def student(self, widths, weights: Path | None = None):
        model = replace(self.base_spec(), widths=tuple(widths)).build(self.name.replace("-", "_"))
        if weights is not None:
            model.load_weights(weights)
        return model

    def quantize(self, step: str, fp: str, model_weights: Path, widths) -> tuple[str, dict]:
        """INT8 PTQ of the student and its float twin; PSNR of both on validation crops."""
        from converters.export import export_tflite
        from converters.quantize import quantize_int8, representative_crops
        from converters.student import litert_student

        folder = self.work / step
        grid = ["output-grid-input"] if self.config.output_grid else []
        fp = _fingerprint(step, "folded-stem", "mse-ranges-v2", fp, self.config.calibration, *grid)

        def body():
            from converters.output_grid import output_on_input_grid

            model = litert_student(self.student(widths, model_weights))
            quantize_int8(model, representative_crops(count=self.config.calibration, crop=256, seed=self.config.seed + 5),
                          folder / "int8.tflite")
            if self.config.output_grid:
                output_on_input_grid(folder / "int8.tflite", folder / "int8.tflite")
            export_tflite(model, folder / "float.tflite")
            return validation_scores(folder / "float.tflite", folder / "int8.tflite")

        if not (folder / "int8.tflite").exists():
            self.steps.records.pop(step, None)
        return fp, self.run_step(step, fp, body)

    def export(self, fp: str, weights: Path, widths, int8_dir: Path | None) -> dict[str, Path]:
        """The deliverables in ``out``: INT8 .tflite and float twin (LiteRT targets), .onnx
        (onnxruntime targets) and the runtime's sidecar."""
        from converters.export import export_onnx, export_tflite
        from converters.student import litert_student, multiple_of

        model = self.student(widths, weights)
        files = {}
        if int8_dir is not None:
            files["int8_tflite"] = self.out / f"{self.name}.tflite"
            files["float_tflite"] = self.out / f"{self.name}-float.tflite"
            _atomic_copy(int8_dir / "int8.tflite", files["int8_tflite"])
            _atomic_copy(int8_dir / "float.tflite", files["float_tflite"])
        else:
            files["float_tflite"] = export_tflite(litert_student(model), self.out / f"{self.name}-float.tflite")
        if self.target.runtime == "onnxruntime":
            files["onnx"] = export_onnx(model, self.out / f"{self.name}.onnx")
        spec = self.base_spec()
        sidecar = {"name": self.name, "target": self.target.name, "layout": "NHWC", "input_range": [0, 1],
                   "multiple": multiple_of(model), "tile": self.target.tile,
                   "precision": self.target.precision, "teacher": self.config.teacher,
                   **({"providers": list(self.target.providers)} if self.target.providers else {}),
                   **({"output_grid": "input"} if int8_dir is not None and self.config.output_grid else {}),
                   "architecture": {"widths": list(widths), "blocks": list(spec.blocks), "middle": spec.middle,
                                    "attention": spec.attention}}
        for path in files.values():  # the float twin too: the runtime needs its stride and tile
            _write_json(path.with_suffix(".json"), sidecar)
        return files

    # -- the whole chain ------------------------------------------------------------------------

    def run(self) -> dict:
        c = self.config
        started = time.monotonic()
        fp, data_path = self.data()
        fp, distilled = self.distill(fp, data_path)
        fp, pruned, prune_record = self.prune(fp, distilled)
        widths = tuple(prune_record["widths"])
        fp_tune_data, tune_path = self.data("finetune_data")
        fp, tuned = self.train("finetune", _fingerprint(fp, fp_tune_data), lambda: self.student(widths, pruned),
                               self.train_config(c.finetune_steps, batch_size=c.finetune_batch_size,
                                                 learning_rate=c.finetune_learning_rate, warmup=10,
                                                 pixel_loss=c.finetune_loss, augment=c.finetune_augment,
                                                 feature_weight=0.0),
                               tune_path)
        int8_dir, final = None, tuned
        if self.int8:
            fp_q, ptq = self.quantize("ptq", fp, tuned, widths)
            int8_dir = self.work / "ptq"
            if ptq["float_psnr"] - ptq["int8_psnr"] > c.qat_threshold_db:
                _log(f"PTQ loses {ptq['float_psnr'] - ptq['int8_psnr']:.2f} dB (> {c.qat_threshold_db}): "
                     "quantization-aware fine-tuning")
                fp, final = self.train("qat", fp_q, lambda: self.student(widths, tuned),
                                       self.train_config(c.qat_steps, batch_size=c.finetune_batch_size,
                                                         learning_rate=c.finetune_learning_rate / 5, warmup=5,
                                                         qat=True), tune_path)
                fp_q, qat = self.quantize("qat_ptq", fp, final, widths)
                if qat["int8_psnr"] > ptq["int8_psnr"]:
                    int8_dir = self.work / "qat_ptq"
                else:
                    final = tuned
                    _log(f"QAT did not help ({qat['int8_psnr']:.2f} <= {ptq['int8_psnr']:.2f} dB): keeping PTQ")
            else:  # not part of this student, though an earlier run's QAT stays cached in steps.json
                self.steps.records.pop("qat", None)
                self.steps.records.pop("qat_ptq", None)
        files = self.export(fp, final, widths, int8_dir)
        card = validate(self, files, widths, prune_record)
        # All steps, including those done by earlier (resumed) runs, and this run's own time.
        card["steps"]["total"] = {"seconds": round(sum(v["seconds"] for v in card["steps"].values()), 1),
                                  "this_run_seconds": round(time.monotonic() - started, 1)}
        _write_json(self.out / "model_card.json", card)
        from converters.report import write_report

        reports = write_report(card, self.out)
        _log(f"report: {reports['markdown']}")
        return card


def validation_scores(float_path: Path, int8_path: Path) -> dict:
    """PSNR of the float twin and the INT8 model (as the runtime runs them) on validation crops."""
    from converters.data import validation_pairs
    from edge_deblur import Deblurrer
    from edge_deblur.metrics import psnr

    blurred, sharp = validation_pairs(crop=128, per_photo=2, seed=4321)
    scores = {}
    for key, path in (("float", float_path), ("int8", int8_path)):
        model = Deblurrer.load(path, threads=os.cpu_count())
        scores[f"{key}_psnr"] = float(np.mean([psnr(s, np.clip(model(b), 0, 1), data_range=1.0)
                                               for b, s in zip(blurred, sharp)]))
    scores["blurred_psnr"] = float(np.mean([psnr(s, b, data_range=1.0) for b, s in zip(blurred, sharp)]))
    return scores


def _eval_pairs(conversion: Conversion) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], int]:
    """The held-out pairs (photo ``i`` blurred by Levin kernel ``i mod 8``, ``make_eval_pairs``) and
    how many different kernels they use: fewer than 8 when fewer than 8 photos are taken."""
    from converters.data import make_eval_pairs
    from edge_deblur.pipeline import read_pairs

    c = conversion.config
    folder = conversion.work / f"eval-levin-{c.eval_crop}"
    if not (folder / "sharp").exists():
        make_eval_pairs(folder, kernels="levin", crop=c.eval_crop)
    pairs = read_pairs(folder)
    pairs = pairs[: c.eval_photos] if c.eval_photos else pairs
    kernels = len({np.asarray(k).tobytes() for *_, k in pairs if k is not None})
    return [(name, blurred, sharp) for name, blurred, sharp, _ in pairs], kernels


def eval_dataset_text(pairs: int, kernels: int, crop: int) -> str:
    """The held-out set in words: one kernel per photo, so pairs = photos, not photos x kernels."""
    which = "all 8" if kernels == 8 else f"{kernels} of the 8"
    return (f"{pairs} held-out Kodak photos, each blurred by one Levin et al. kernel ({which} kernels, photo i by "
            f"kernel i mod 8), noise 0.01, {crop}px centre crops")


def _by_class(conversion: Conversion, models: dict, final_label: str) -> dict:
    """Quality by blur class (``converters.blur_classes``): the teacher, the float twin and the final
    student on ``class_photos`` held-out photos per (class, noise) cell, the 90% check per cell."""
    from converters.blur_classes import by_class_summary, class_cells, score_by_class, with_verdicts

    c, teacher = conversion.config, conversion.teacher
    _log(f"[validate] by blur class: {c.class_photos} photo(s) per class and noise level, {c.class_crop}px ...")
    cells = class_cells(c.class_photos, c.class_crop)

    def run_teacher(blurred):
        y = teacher.predict(blurred[None].astype(np.float32) / 255)[0]
        return np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8)

    rows = score_by_class(cells, {"teacher": run_teacher, **models})
    summary = by_class_summary(with_verdicts(rows, "teacher", final_label), "teacher", final_label,
                               c.class_photos, c.class_crop)
    for note in summary["teacher_harms"]:
        _log(f"note: {note}")
    return summary


def validate(conversion: Conversion, files: dict[str, Path], widths, prune_record: dict) -> dict:
    """The model card: quality on the held-out Levin set, INT8 against float, MACs, sizes, latency
    here and expected on the target, and the checks against DESIGN.md's numbers."""
    from converters.blur_classes import by_class_check
    from converters.quantize import tflite_ops
    from converters.reference import expected_ms, host_cpu, mobilenet_v2_tflite, tflite_macs, time_side_by_side
    from edge_deblur import Deblurrer
    from edge_deblur.metrics import psnr, ssim
    from targets import MOBILENET_V2_MACS

    c, target, teacher = conversion.config, conversion.target, conversion.teacher
    _log("[validate] held-out photos x Levin kernels ...")
    started = time.monotonic()
    pairs, kernel_count = _eval_pairs(conversion)
    threads = min(target.threads, os.cpu_count() or 1)
    final_key = "int8_tflite" if "int8_tflite" in files else "onnx" if "onnx" in files else "float_tflite"
    final_label = {"int8_tflite": "student (INT8)", "onnx": "student (ONNX)", "float_tflite": "student (float)"}[final_key]
    outputs = {"blurred": [b for _, b, _ in pairs],
               "teacher": [np.rint(np.clip(teacher.predict(b[None].astype(np.float32) / 255)[0], 0, 1) * 255).astype(np.uint8)
                           for _, b, _ in pairs]}
    runners = {"student (float)": files["float_tflite"], final_label: files[final_key]}
    models = {}
    for label, path in runners.items():
        model = models[label] = Deblurrer.load(path, threads=threads)
        outputs[label] = [model(b) for _, b, _ in pairs]
    sharp = [s for _, _, s in pairs]
    by_class = _by_class(conversion, models, final_label)

    def score(label):
        return (float(np.mean([psnr(s, o) for s, o in zip(sharp, outputs[label])])),
                float(np.mean([ssim(s, o) for s, o in zip(sharp, outputs[label])])))

    # Latency: the final student and MobileNetV2 INT8 side by side, in ``timing_repeats`` repeats whose
    # spread is the estimate's noise; the teacher apart (it can take seconds a frame), for the plot.
    frame = (1, target.frame[1], target.frame[0], 3)
    timed = {"student": (files.get("int8_tflite", files["float_tflite"]), frame),
             "student_float": (files["float_tflite"], frame), "mobilenet": (mobilenet_v2_tflite(), None)}
    side = time_side_by_side(timed, threads=threads, rounds=c.timing_rounds, repeats=c.timing_repeats)
    timing = dict(side.medians_ms)
    mobilenet_target = target.reference.mobilenet_ms
    teacher_timing = _time_teacher(conversion, frame, threads)
    timing.update({k: v for k, v in teacher_timing.items() if k == "teacher"})

    def expected(name):
        if name == "teacher":
            return teacher_timing.get("teacher_expected")
        return round(expected_ms(timing[name], timing["mobilenet"], mobilenet_target), 2) if name in timing else None

    rows = []
    for label, timing_key in (("blurred", None), ("teacher", "teacher"), ("student (float)", "student_float"),
                              (final_label, "student")):
        if label in {r["method"] for r in rows}:
            continue
        p, s = score(label)
        vs_teacher = None if label == "teacher" else float(np.mean([psnr(t, o) for t, o in zip(outputs["teacher"], outputs[label])]))
        rows.append({"method": label, "psnr": round(p, 3), "ssim": round(s, 4),
                     "psnr_vs_teacher": None if vs_teacher is None else round(vs_teacher, 3),
                     "latency_ms_here": round(timing[timing_key], 2) if timing_key in timing else None,
                     "expected_ms": expected(timing_key) if timing_key else None})
    by = {r["method"]: r for r in rows}
    teacher_gain = by["teacher"]["psnr"] - by["blurred"]["psnr"]
    student_gain = by[final_label]["psnr"] - by["blurred"]["psnr"]
    teacher_vs_input = float(np.mean([psnr(b, t) for b, t in zip(outputs["blurred"], outputs["teacher"])]))
    teacher_warnings = teacher_problems(teacher_gain, teacher_vs_input)
    for warning in teacher_warnings:
        _log(f"warning: {warning}")

    student_macs = tflite_macs(files.get("int8_tflite", files["float_tflite"]), target.frame[1], target.frame[0])
    int8_vs_float = None
    if "int8_tflite" in files:
        a = np.stack(outputs["student (float)"]).astype(np.int16)
        b = np.stack(outputs["student (INT8)"]).astype(np.int16)
        int8_vs_float = {"psnr_db": round(float(np.mean([psnr(x, y) for x, y in zip(outputs["student (float)"], outputs["student (INT8)"])])), 2),
                         "max_abs_diff": int(np.abs(a - b).max()),
                         "within_1lsb": round(float(np.mean(np.abs(a - b) <= 1)), 4)}
    student_rate = student_macs / (timing["student"] / 1e3)
    mobilenet_rate = MOBILENET_V2_MACS / (timing["mobilenet"] / 1e3)
    expected_student = expected("student")
    repeats = [expected_ms(s, m, mobilenet_target) for s, m in zip(side.repeat_ms["student"], side.repeat_ms["mobilenet"])]
    spread = [round(min(repeats), 2), round(max(repeats), 2)]
    latency_check = latency_verdict(expected_student, spread, target.latency_budget_ms)
    latency = {"host": host_cpu(), "threads": threads, "student_ms": round(timing["student"], 2),
               "mobilenet_ms": round(timing["mobilenet"], 2), "expected_ms": expected_student,
               "expected_ms_range": spread, "expected_ms_repeats": [round(v, 2) for v in repeats],
               "repeats": side.repeats, "rounds_per_repeat": c.timing_rounds,
               "student_ms_range": [round(min(side.repeat_ms["student"]), 2), round(max(side.repeat_ms["student"]), 2)],
               "mobilenet_ms_range": [round(min(side.repeat_ms["mobilenet"]), 2), round(max(side.repeat_ms["mobilenet"]), 2)],
               "verdict": latency_check,
               "expected_fps": round(1000 / expected_student, 1), "budget_ms": target.latency_budget_ms,
               "mobilenet_target_ms": mobilenet_target, "mobilenet_kind": target.reference.mobilenet_kind,
               "basis": target.reference.mobilenet_basis, "student_macs_per_s": round(student_rate),
               "mobilenet_macs_per_s": round(mobilenet_rate), "mac_rate_ratio": round(student_rate / mobilenet_rate, 3)}
    if not conversion.int8:
        latency["basis"] += (" The student is timed here as float TFLite against MobileNetV2 INT8: on the target it "
                             f"runs {target.precision} under {', '.join(target.providers)}, so this is a conservative proxy.")
    mac_reduction = teacher.macs / student_macs if teacher.macs else None
    gain_detail = (f"student {student_gain:+.2f} dB, teacher {teacher_gain:+.2f} dB over the blurred input"
                   + ("" if teacher_gain > 0 else ": the teacher has no gain to keep"))
    # One MAC budget everywhere (log, card, report, check): what pruning aimed at, never above the target's.
    mac_budget = min(conversion.mac_budget(), target.mac_budget)
    mac_basis = conversion.mac_budget_basis() if mac_budget == conversion.mac_budget() else f"{target.name}'s budget"
    checks = [
        {"name": f"keeps >= {GAIN_KEPT:.0%} of the teacher's PSNR gain", "passed": bool(teacher_gain > 0 and student_gain >= GAIN_KEPT * teacher_gain),
         "detail": gain_detail, "kind": "gain"},
        by_class_check(by_class),
        {"name": f">= {MAC_REDUCTION:.0f}x fewer MACs than the teacher", "passed": bool(mac_reduction and mac_reduction >= MAC_REDUCTION),
         "detail": f"{student_macs / 1e6:.0f}M vs {teacher.macs / 1e6:.0f}M MACs per 640x480 frame" if teacher.macs else "teacher MACs unknown",
         "kind": "macs"},
        {"name": "MACs within the budget", "passed": bool(student_macs <= mac_budget),
         "detail": f"{student_macs / 1e6:.0f}M <= {mac_budget / 1e6:.0f}M ({mac_basis})", "kind": "macs"},
        {"name": "expected latency within the target's budget", "passed": bool(expected_student <= target.latency_budget_ms),
         "kind": "latency",
         "within_noise": latency_check == "within noise",
         "detail": f"{expected_student:.1f} ms ({1000 / expected_student:.1f} fps; {spread[0]:.1f}-{spread[1]:.1f} ms over "
                   f"{side.repeats} repeats) vs {target.latency_budget_ms} ms"
                   + (": within noise, the budget lies inside the repeats' range" if latency_check == "within noise" else "")
                   + f" (MobileNetV2 reference: {target.reference.mobilenet_kind})"},
    ]
    if conversion.int8:  # both INT8 on the same interpreter; a float student against INT8 MobileNetV2 says nothing
        checks.append({"name": "achieved MAC rate within 2x of MobileNetV2's", "passed": bool(student_rate >= 0.5 * mobilenet_rate),
                       "detail": f"{student_rate / 1e9:.1f} vs {mobilenet_rate / 1e9:.1f} GMAC/s here", "kind": "rate"})
    if "int8_tflite" in files:
        ops = tflite_ops(files["int8_tflite"])
        checks.append({"name": "only XNNPACK INT8 ops", "passed": set(ops) <= XNNPACK_INT8_OPS, "detail": ", ".join(ops),
                       "kind": "ops"})
        loss = by["student (float)"]["psnr"] - by["student (INT8)"]["psnr"]
        checks.append({"name": f"INT8 within {c.qat_threshold_db} dB of its float twin", "passed": bool(loss <= c.qat_threshold_db),
                       "detail": f"{loss:+.2f} dB lost on the held-out set" + (" (INT8 did better)" if loss < 0 else ""),
                       "kind": "int8_loss"})
    if "onnx" in files:
        onnx_model = Deblurrer.load(files["onnx"], threads=threads)
        diff = max(float(np.abs(onnx_model(b.astype(np.float32) / 255) - o.astype(np.float32) / 255).max())
                   for (_, b, _), o in zip(pairs[:2], outputs["student (float)"][:2]))
        checks.append({"name": "ONNX agrees with the float TFLite", "passed": diff <= 1.5 / 255,
                       "detail": f"max |difference| {diff * 255:.2f} levels", "kind": "onnx"})
    if c.quick:  # a smoke run's failures of quality and timing are expected; say so on each
        for check in checks:
            check["expected_in_smoke_run"] = check["kind"] in SMOKE_EXPECTED_FAILURES
    spec = conversion.base_spec()
    card = {
        "name": conversion.name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "smoke_run": SMOKE_RUN if c.quick else None,
        "target": {"name": target.name, "cpu": target.cpu, "runtime": target.runtime, "precision": target.precision,
                   "threads": target.threads, "latency_budget_ms": target.latency_budget_ms,
                   "mac_budget": target.mac_budget},
        "mac_budget": {"macs": mac_budget, "basis": mac_basis},
        "teacher": {**teacher.describe(), "psnr_vs_input": round(teacher_vs_input, 2), "warnings": teacher_warnings,
                    "timing": teacher_timing.get("how")},
        "student": {"base": {"widths": list(spec.widths), "blocks": list(spec.blocks), "middle": spec.middle,
                             "attention": spec.attention, "macs": prune_record["base_macs"]},
                    "widths": list(widths), "blocks": list(spec.blocks), "middle": spec.middle,
                    "attention": spec.attention, "macs": student_macs,
                    "params": int(conversion.student(widths).count_params()),
                    "mac_reduction": round(mac_reduction, 2) if mac_reduction else None},
        "files": {key: (_file_entry(files[key], conversion.out) if key in files else None)
                  for key in ("int8_tflite", "float_tflite", "onnx")},
        "steps": {k: {kk: vv for kk, vv in v.items() if kk != "fingerprint"} for k, v in conversion.steps.records.items()},
        "quality": {"dataset": eval_dataset_text(len(pairs), kernel_count, c.eval_crop), "pairs": len(pairs),
                    "kernels": kernel_count, "rows": rows,
                    "teacher_gain_db": round(teacher_gain, 3), "student_gain_db": round(student_gain, 3),
                    "gain_kept": round(student_gain / teacher_gain, 3) if teacher_gain > 0 else None,
                    "by_class": by_class},
        "int8_vs_float": int8_vs_float,
        "latency": latency,
        "checks": checks,
        "config": asdict(c),
    }
    card["steps"]["validate"] = {"seconds": round(time.monotonic() - started, 1)}
    for check in checks:
        _log(f"  {check_status(check)}  {check['name']}: {check['detail']}")
    return card


TEACHER_UNCHANGED_DB = 60.0  # PSNR of the teacher's output against its input above this: it does nothing


def teacher_problems(gain_db: float, psnr_vs_input_db: float) -> list[str]:
    """What the report must say about a teacher that leaves its input as it is or makes it worse."""
    problems = []
    if psnr_vs_input_db > TEACHER_UNCHANGED_DB:
        problems.append(f"the teacher does not change its input ({psnr_vs_input_db:.1f} dB PSNR from the blurred input): "
                        "is its value range right (--input-range)?")
    elif gain_db <= 0:
        problems.append(f"the teacher does not improve on the blurred input ({gain_db:+.2f} dB): a student distilled "
                        "from it learns no deblurring")
    return problems


def latency_verdict(expected: float, spread: list[float], budget: float) -> str:
    """"within" or "over" the budget when every repeat agrees, "within noise" when the budget lies
    inside the repeats' range: the timing noise is larger than the margin, so the check cannot tell."""
    if spread[0] <= budget <= spread[1] and spread[0] < spread[1]:
        return "within noise"
    return "within" if expected <= budget else "over"


def check_status(check: dict) -> str:
    """pass, FAIL, or noise: a check whose margin is inside its measurement's spread."""
    return "noise" if check.get("within_noise") else "pass" if check["passed"] else "FAIL"


def _time_teacher(conversion: Conversion, frame: tuple[int, ...], threads: int) -> dict:
    """The teacher's latency on one target frame here (median of 3, after one warm-up): through
    LiteRT beside MobileNetV2 when it is a resizable TFLite file (the bundled teacher's export, or
    the user's), so it gets an expected latency on the target too; otherwise its own runtime's
    (TensorFlow, onnxruntime), for this host only."""
    from converters.reference import expected_ms, mobilenet_v2_tflite, time_side_by_side
    from edge_deblur.model import MODELS_DIR

    teacher, c = conversion.teacher, conversion.config
    tflite = MODELS_DIR / f"{c.teacher}.tflite" if teacher.kind == "bundled" else Path(c.teacher)
    if tflite.suffix == ".tflite" and tflite.is_file() and teacher.fixed_size is None and teacher.layout == "NHWC":
        side = time_side_by_side({"teacher": (tflite, frame), "mobilenet": (mobilenet_v2_tflite(), None)},
                                 threads=threads, rounds=3, warmup=1).medians_ms
        return {"teacher": side["teacher"], "how": f"LiteRT, {tflite.name}, beside MobileNetV2",
                "teacher_expected": round(expected_ms(side["teacher"], side["mobilenet"],
                                                      conversion.target.reference.mobilenet_ms), 2)}
    image = np.random.default_rng(0).random((1, frame[1], frame[2], 3), dtype=np.float32)
    teacher.predict(image)
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        teacher.predict(image)
        seconds.append(time.perf_counter() - started)
    return {"teacher": 1000.0 * float(np.median(seconds)), "how": f"{teacher.kind} runtime on this host"}


def ship(out: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Bundle a finished conversion in the package: its deployable model (the INT8 ``.tflite``, or
    the ``.onnx`` for onnxruntime targets), the sidecar the runtime reads and the model card as
    ``<name>.card.json``. The float twin stays behind: it is for validation, not for boards."""
    from edge_deblur.model import MODELS_DIR

    out, models = Path(out), Path(models_dir or MODELS_DIR)
    card = json.loads((out / "model_card.json").read_text())
    key = "onnx" if card["files"]["onnx"] else "int8_tflite" if card["files"]["int8_tflite"] else "float_tflite"
    model = out / card["files"][key]["path"]
    shipped = []
    for src, name in ((model, f"{card['name']}{model.suffix}"), (model.with_suffix(".json"), f"{card['name']}.json"),
                      (out / "model_card.json", f"{card['name']}.card.json")):
        _atomic_copy(src, models / name)
        shipped.append(models / name)
    return shipped


def convert(config: ConvertConfig) -> dict:
    """Run (or resume) a conversion; returns the model card."""
    return Conversion(config).run()


def config_from_args(args) -> ConvertConfig:
    overrides = {k: v for k, v in {"distill_steps": args.distill_steps, "finetune_steps": args.finetune_steps,
                                   "crops": args.crops, "learning_rate": args.learning_rate,
                                   "reuse": args.reuse, "input_range": args.input_range}.items() if v is not None}
    base = dict(teacher=args.teacher, target=args.target, out=args.out, seed=args.seed, **overrides)
    return ConvertConfig.quick_config(**base) if args.quick else ConvertConfig(**base)


def main(argv: list[str] | None = None) -> int:
    """``python -m converters.convert ...`` is ``edge-deblur convert ...``."""
    from edge_deblur.cli import main as cli_main

    return cli_main(["convert", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
