"""converters.output_grid (issue 14): the bundled INT8 students ship with their output on their
input's grid (scale 1/255, zero point -128; part 3). Each is its PTQ file with only the output
tensor's quantization rewritten: the PTQ file, rebuilt from the scale and zero point its card keeps,
has the card's recorded hash, and rewriting it again gives the shipped bytes. The shipped student
runs through the runtime's all-XOR frame path, bit-identical to the plain path, and stays within one
8-bit level of its PTQ file on real images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edge_deblur import Deblurrer
from edge_deblur.model import MODELS_DIR

STUDENTS = ["student-rpi5", "student-rpi4"]


def _card(name: str) -> dict:
    return json.loads((MODELS_DIR / f"{name}.card.json").read_text())


@pytest.mark.parametrize("name", STUDENTS)
def test_the_shipped_student_is_on_its_input_grid_and_its_card_says_so(name):
    d = Deblurrer.load(name, threads=1)
    assert d.info.output_quant == d.info.input_quant
    assert d.info.output_quant.scale == np.float32(1 / 255) and d.info.output_quant.zero_point == -128
    assert d._fused.xor and d._fused.out_xor and d._fused.final1d is not None
    assert json.loads((MODELS_DIR / f"{name}.json").read_text())["output_grid"] == "input"
    card, data = _card(name), (MODELS_DIR / f"{name}.tflite").read_bytes()
    assert card["files"]["int8_tflite"] == {"path": f"{name}.tflite", "bytes": len(data),
                                            "sha256": hashlib.sha256(data).hexdigest()}
    grid = card["output_grid"]
    assert grid["output_quantization"] == {"scale": float(np.float32(1 / 255)), "zero_point": -128}
    assert grid["pre_rewrite"]["sha256"] != card["files"]["int8_tflite"]["sha256"]


@pytest.fixture(scope="module", params=STUDENTS)
def rederived(request, tmp_path_factory):
    """(name, the PTQ file rebuilt from the shipped one and the card's pre-rewrite quantization)."""
    pytest.importorskip("tensorflow")
    from converters.output_grid import output_quantized_as

    name = request.param
    pre = _card(name)["output_grid"]["pre_rewrite"]
    folder = tmp_path_factory.mktemp(name)
    path = output_quantized_as(MODELS_DIR / f"{name}.tflite", folder / f"{name}.tflite",
                               pre["output_quantization"]["scale"], pre["output_quantization"]["zero_point"])
    sidecar = json.loads((MODELS_DIR / f"{name}.json").read_text())
    del sidecar["output_grid"]
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return name, path


def test_the_shipped_student_is_its_ptq_file_with_only_the_output_quantization_changed(rederived, tmp_path):
    from converters.output_grid import output_on_input_grid

    name, ptq = rederived
    pre = _card(name)["output_grid"]["pre_rewrite"]
    data, shipped = ptq.read_bytes(), (MODELS_DIR / f"{name}.tflite").read_bytes()
    assert hashlib.sha256(data).hexdigest() == pre["sha256"] and len(data) == pre["bytes"]
    changed = np.count_nonzero(np.frombuffer(data, np.uint8) != np.frombuffer(shipped, np.uint8))
    assert changed == pre["bytes_changed_by_the_rewrite"] and 0 < changed <= 8  # one float32 and one int64
    d = Deblurrer.load(ptq, threads=1)
    assert d.info.output_quant != d.info.input_quant and not d._fused.out_xor
    again = output_on_input_grid(ptq, tmp_path / f"{name}.tflite")
    assert again.read_bytes() == shipped
    assert json.loads(again.with_suffix(".json").read_text())["output_grid"] == "input"


def test_shipped_student_is_exact_on_both_paths_and_within_a_level_of_its_ptq_file(rederived, photo):
    name, ptq = rederived
    fused, plain = Deblurrer.load(name, threads=2), Deblurrer.load(name, threads=2)
    fused_tiled, plain_tiled = Deblurrer.load(name, threads=2, tile=256), Deblurrer.load(name, threads=2, tile=256)
    plain.fused = plain_tiled.fused = False
    before = Deblurrer.load(ptq, threads=2)
    for frame in (photo, photo[:237, :301]):
        out = fused(frame)
        np.testing.assert_array_equal(out, plain(frame))
        np.testing.assert_array_equal(fused_tiled(frame), plain_tiled(frame))
        diff = np.abs(out.astype(int) - before(frame))
        # The same real sum rounded to steps of 1 level, against ~1.28 levels then 1: at most 1 apart.
        assert diff.max() <= 1 and 0.05 < (diff > 0).mean() < 0.6


def test_a_float_model_is_refused(tmp_path):
    pytest.importorskip("tensorflow")
    from converters.output_grid import output_on_input_grid, output_quantized_as

    with pytest.raises(ValueError, match="quantized tensors"):
        output_on_input_grid(MODELS_DIR / "teacher.tflite", tmp_path / "t.tflite")
    with pytest.raises(ValueError, match="quantized tensors"):
        output_quantized_as(MODELS_DIR / "teacher.tflite", tmp_path / "t.tflite", 0.005, -80)
    assert not (tmp_path / "t.tflite").exists()
