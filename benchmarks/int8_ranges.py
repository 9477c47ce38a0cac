"""What INT8 activation ranges cost a student: one conversion's fine-tuned float weights quantized
with the converter's min/max ranges and with least-error ranges (``converters.quantize``,
``ranges="mse"``), scored against the float model on the validation crops the conversion's PTQ
step checks, on a Levin-like validation set (``converters.data.shake_validation_pairs``) and on
the held-out Levin set the model card reports.

    python benchmarks/int8_ranges.py build/rpi5

Results: docs/BENCHMARKS.md, issue 4 section.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(folder: Path) -> None:
    from converters.convert import ConvertConfig, validation_scores
    from converters.data import shake_validation_pairs
    from converters.export import export_tflite
    from converters.quantize import quantize_int8, representative_crops
    from converters.student import STUDENTS, litert_student
    from edge_deblur import Deblurrer
    from edge_deblur.metrics import psnr
    from edge_deblur.pipeline import read_pairs

    card = json.loads((folder / "model_card.json").read_text())
    sidecar = json.loads(next(folder.glob("student-*.json")).read_text())
    config = ConvertConfig()
    spec = replace(STUDENTS[card["target"]["name"]], widths=tuple(card["student"]["widths"]))
    model = spec.build(sidecar["name"].replace("-", "_"))
    model.load_weights(folder / "work" / "finetune" / "student.weights.h5")
    model = litert_student(model)
    levin = [(b, s) for _, b, s, _ in read_pairs(folder / "work" / f"eval-levin-{config.eval_crop}")]
    shake = shake_validation_pairs()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {"float": export_tflite(model, tmp / "float.tflite")}
        for ranges in ("minmax", "mse"):
            crops = representative_crops(count=config.calibration, crop=256, seed=config.seed + 5)
            paths[ranges] = quantize_int8(model, crops, tmp / f"{ranges}.tflite", ranges=ranges)
        for path in paths.values():
            path.with_suffix(".json").write_text(json.dumps(sidecar))
        minmax, mse = (validation_scores(paths["float"], paths[k]) for k in ("minmax", "mse"))
        val = {"float": minmax["float_psnr"], "minmax": minmax["int8_psnr"], "mse": mse["int8_psnr"]}
        for name, path in paths.items():
            run = Deblurrer.load(path, threads=2)
            rows.append((name, val[name], *(float(np.mean([psnr(s, run(b)) for b, s in pairs])) for pairs in (shake, levin))))
    blurred = [float(np.mean([psnr(s, b) for b, s in pairs])) for pairs in (shake, levin)]
    print(f"{folder}: widths {card['student']['widths']}; blurred: shake {blurred[0]:.3f}, Levin {blurred[1]:.3f} dB\n")
    print("| model | validation crops (dB) | shake validation (dB) | held-out Levin (dB) | Levin gain kept |")
    print("|---|---:|---:|---:|---:|")
    teacher_gain = card["quality"]["teacher_gain_db"]
    for name, v, sh, lv in rows:
        print(f"| {name} | {v:.3f} | {sh:.3f} | {lv:.3f} | {(lv - blurred[1]) / teacher_gain:.1%} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
