"""converters.output_grid (issue 14): a shipped INT8 student with its output on its input's grid
(scale 1/255, zero point -128) runs through the runtime's all-XOR frame path, bit-identical to the
plain path, and stays within one 8-bit level of the shipped student on real images."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from converters.output_grid import output_on_input_grid  # noqa: E402
from edge_deblur import Deblurrer  # noqa: E402
from edge_deblur.model import MODELS_DIR  # noqa: E402


def _off_grid_student() -> str:
    """The first bundled INT8 student whose output is not on its input's grid: students made since
    issue 14 part 2 ship on it (``ConvertConfig.output_grid``), the others still have PTQ's scale."""
    for name in ("student-rpi5", "student-rpi4"):
        info = Deblurrer.load(name, threads=1).info
        if info.output_quant != info.input_quant:
            return name
    raise AssertionError("no bundled INT8 student off its input's grid is left to convert")


@pytest.fixture(scope="module")
def shipped_name():
    return _off_grid_student()


@pytest.fixture(scope="module")
def grid(tmp_path_factory, shipped_name):
    return output_on_input_grid(MODELS_DIR / f"{shipped_name}.tflite", tmp_path_factory.mktemp("grid") / "s.tflite")


def test_the_output_takes_the_input_quantization_and_the_sidecar(grid, shipped_name):
    d = Deblurrer.load(grid, threads=1)
    assert d.info.output_quant == d.info.input_quant
    assert d.info.tile == 640 and d.info.multiple == 16  # the sidecar came along
    shipped = Deblurrer.load(shipped_name, threads=1)
    assert shipped.info.output_quant != shipped.info.input_quant  # the shipped file is untouched
    assert d._fused.xor and d._fused.out_xor and not shipped._fused.out_xor


def test_grid_student_is_exact_on_both_paths_and_within_a_level_of_the_shipped(grid, photo, shipped_name):
    fused, plain = Deblurrer.load(grid, threads=2), Deblurrer.load(grid, threads=2)
    fused_tiled, plain_tiled = Deblurrer.load(grid, threads=2, tile=256), Deblurrer.load(grid, threads=2, tile=256)
    plain.fused = plain_tiled.fused = False
    shipped = Deblurrer.load(shipped_name, threads=2)
    for frame in (photo, photo[:237, :301]):
        out = fused(frame)
        np.testing.assert_array_equal(out, plain(frame))
        np.testing.assert_array_equal(fused_tiled(frame), plain_tiled(frame))
        diff = np.abs(out.astype(int) - shipped(frame))
        # The same real sum rounded to steps of 1 level, against 1.28 levels then 1: at most 1 apart.
        assert diff.max() <= 1 and 0.05 < (diff > 0).mean() < 0.6


def test_a_float_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="quantized tensors"):
        output_on_input_grid(MODELS_DIR / "teacher.tflite", tmp_path / "t.tflite")
    assert not (tmp_path / "t.tflite").exists()
