"""The runtime on aarch64 gives the results it gives on x86.

The Raspberry Pi 4 (Cortex-A72) and Pi 5 (Cortex-A76) stacks run under qemu-user: Debian 12's arm64
Python 3.11 with the aarch64 wheels of LiteRT, numpy and OpenCV (see tests/arm64.py). Each check runs
the same script on the host and under emulation, with arrays and images passed through files, and
compares what they wrote. The first run downloads about 100 MB into .cache/arm64; later runs reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

import arm64
import tiny_models as tm

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.arm

CPUS = pytest.mark.parametrize("cpu", list(arm64.CPUS), ids=[f"{c.board}-{name}" for name, c in arm64.CPUS.items()])

# The interpreter and what it runs on: machine, Python, whether numpy sees the dot-product
# instructions (the Pi 5's core has them, the Pi 4's has not), and the ops LiteRT executed for one
# window of the model given, DELEGATE when XNNPACK took the graph.
PROBE = textwrap.dedent("""
    import json, platform, sys
    import numpy as np
    from numpy._core._multiarray_umath import __cpu_features__
    from edge_deblur import logs
    from edge_deblur.model import Deblurrer
    logs.set_verbosity(logs.VERBOSE)  # LiteRT's own delegate line is kept only in verbose mode
    deblur = Deblurrer.load(sys.argv[1], threads=1)
    deblur.infer(np.full((64, 64, 3), 0.5, np.float32))
    print(json.dumps({
        "machine": platform.machine(), "python": list(sys.version_info[:2]),
        "dotprod": __cpu_features__["ASIMDDP"],
        "ops": sorted({op["op_name"] for op in deblur.runner.interp._get_ops_details()}),
    }))
""")

# One invoke on one window through Deblurrer.infer (which quantizes for an INT8 model); saves the
# model's raw output tensor, int8 for an INT8 model, and prints the ops LiteRT executed.
INFER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from edge_deblur.model import Deblurrer
    model, window, out = sys.argv[1:4]
    deblur = Deblurrer.load(model, threads=1)
    deblur.infer(np.load(window))
    interp = deblur.runner.interp
    np.save(out, interp.get_tensor(deblur.runner.output["index"]))
    print(json.dumps(sorted({op["op_name"] for op in interp._get_ops_details()})))
""")

CLI = "import sys; from edge_deblur.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def arm() -> arm64.Arm64Env:
    return arm64.ensure_sysroot()


@pytest.fixture(scope="module")
def models(tmp_path_factory, photo_paths):
    """An INT8 model calibrated on crops of real photos, and a float encoder-decoder."""
    d = tmp_path_factory.mktemp("arm_models")
    crops = []
    for path in photo_paths:
        rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
        crops += [rgb[y : y + 96, x : x + 96] for y in (0, 150) for x in (0, 150)]
    return {
        "int8": tm.unsharp(d / "unsharp_int8.tflite", representative=crops),
        "int8_conv": tm.strided(d / "strided_int8.tflite", representative=crops),
        "float": tm.strided(d / "strided.tflite"),
    }


@pytest.fixture(scope="module")
def window(photo) -> np.ndarray:
    """A 256x256 float32 [0, 1] crop of the real photo: one model window, no tiling."""
    return np.ascontiguousarray(photo[122:378, 122:378], dtype=np.float32) / 255


def run_host(code: str, *args) -> subprocess.CompletedProcess:
    """The script under the host's Python; run from the repository root (``-c`` puts it first on
    sys.path) it imports the same working tree as the emulated one."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=arm64.REPO,
                          capture_output=True, text=True, timeout=300)


def succeeded(result: subprocess.CompletedProcess, where: str) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{where}: exit {result.returncode}\n{result.stderr[-3000:]}"
    return result


def infer_both(arm, cpu, model, window, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """The model's raw output for ``window`` on x86 and on the emulated ``cpu``, each checked to
    have run under XNNPACK (so the ARM side exercises the NEON kernels, not LiteRT's reference ones)."""
    np.save(tmp_path / "window.npy", window)
    outputs = []
    for name, run in (("x86", run_host), ("arm", lambda *a: arm.run(*a, cpu=cpu))):
        out = tmp_path / f"{name}.npy"
        ops = json.loads(succeeded(run(INFER, model, tmp_path / "window.npy", out), name).stdout)
        assert "DELEGATE" in ops, f"{name}: XNNPACK did not take the graph, ops {ops}"
        outputs.append(np.load(out))
    return outputs[0], outputs[1]


@CPUS
def test_emulated_runtime_is_python311_on_aarch64_with_xnnpack(arm, models, cpu):
    result = succeeded(arm.run(PROBE, models["int8"], cpu=cpu), cpu)
    probe = json.loads(result.stdout)
    assert probe["machine"] == "aarch64"
    assert probe["python"] == [3, 11]
    assert probe["dotprod"] == (cpu == "cortex-a76"), f"{cpu}: the emulated core's features are not the board's"
    assert "Created TensorFlow Lite XNNPACK delegate for CPU" in result.stderr
    assert "DELEGATE" in probe["ops"], probe["ops"]


@CPUS
@pytest.mark.parametrize("model", ["int8", "int8_conv"])  # depthwise + element-wise; full, strided and 1x1 convolutions
def test_int8_output_is_within_one_lsb_of_x86(arm, models, window, tmp_path, cpu, model):
    x86, aarch64 = infer_both(arm, cpu, models[model], window, tmp_path)
    assert x86.dtype == aarch64.dtype == np.int8 and x86.shape == aarch64.shape == (1, 256, 256, 3)
    assert np.unique(x86).size > 100, "the model's output is degenerate: nothing to compare"
    diff = np.abs(x86.astype(np.int16) - aarch64.astype(np.int16))
    within = np.mean(diff <= 1)
    assert within >= 0.999, f"{cpu}: only {within:.4%} of int8 values within 1 LSB of x86 (max {diff.max()})"


@CPUS
@pytest.mark.parametrize("name", ["student-rpi5", "student-rpi4"])
def test_shipped_student_matches_x86(arm, window, tmp_path, cpu, name):
    """The INT8 students ``edge-deblur convert`` produced for the Pi 5 (the bundled default) and the
    Pi 4, with their output on the input's grid (issue 14), through the aarch64 XNNPACK kernels: at
    most 1 LSB from x86 on at least 99.9% of their output values."""
    student = arm64.REPO / "edge_deblur" / "models" / f"{name}.tflite"
    x86, aarch64 = infer_both(arm, cpu, student, window, tmp_path)
    assert x86.dtype == aarch64.dtype == np.int8 and x86.shape == aarch64.shape == (1, 256, 256, 3)
    assert np.unique(x86).size > 100, "the student's output is degenerate: nothing to compare"
    diff = np.abs(x86.astype(np.int16) - aarch64.astype(np.int16))
    within = np.mean(diff <= 1)
    assert within >= 0.999, f"{cpu}: only {within:.4%} of int8 values within 1 LSB of x86 (max {diff.max()})"


@CPUS
def test_float_output_matches_x86(arm, models, window, tmp_path, cpu):
    x86, aarch64 = infer_both(arm, cpu, models["float"], window, tmp_path)
    assert x86.dtype == aarch64.dtype == np.float32 and x86.shape == aarch64.shape == (1, 256, 256, 3)
    # x86 and NEON kernels sum each convolution in a different order (and fuse multiply-adds
    # differently), so the two may differ by float32 rounding: at most about n * eps * sum|terms|,
    # 72 terms of values near 1 here, i.e. ~4e-6 (seen: 6e-8, one ulp). 1e-5 allows that and still
    # fails on a kernel computing in half or bfloat16 precision (errors ~1e-3), which would change
    # 8-bit output pixels (half a level is 2e-3).
    diff = np.max(np.abs(x86 - aarch64))
    assert diff <= 1e-5, f"{cpu}: float output differs from x86 by up to {diff:.2e}"


@CPUS
def test_cli_deblurs_a_photo_on_aarch64_as_on_x86(arm, models, photo_paths, tmp_path, cpu):
    photo = photo_paths[0]  # Kodak, 500x500: one model window
    results = {}
    for name, run in (("x86", run_host), ("arm", lambda *a: arm.run(*a, cpu=cpu))):
        out = tmp_path / name
        succeeded(run(CLI, "deblur", photo, "-o", out, "--method", "network", "--model", models["int8"], "--threads", "1", "--suffix", ".png"), name)
        results[name] = cv2.imread(str(out / f"{photo.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert results[name] is not None, f"{name}: no {photo.stem}.png in {sorted(os.listdir(out))}"
    source = cv2.imread(str(photo), cv2.IMREAD_UNCHANGED)
    x86, aarch64 = (results[k].astype(np.int16) for k in ("x86", "arm"))
    assert x86.shape == aarch64.shape == source.shape
    assert np.mean(x86 != source) > 0.5, "the x86 result is (nearly) the input: nothing was deblurred"
    within = np.mean(np.abs(x86 - aarch64) <= 1)
    assert within >= 0.999, f"{cpu}: only {within:.4%} of pixels within 1 level of x86"
