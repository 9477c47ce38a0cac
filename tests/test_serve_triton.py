"""The board's code against a real Triton (2.51, as nvidia-pytriton 0.7 bundles it), unchanged: the
repository `edge-deblur export triton` writes, served by Triton's own HTTP/gRPC front ends, dynamic
batcher and queue policy; PyTriton's wheel has no ONNX Runtime backend, so a Python callable runs
the exported ONNX model with onnxruntime (tests/serve_triton_bind.py).

Triton needs its own venv (PyTriton wants numpy<2) and libpython on LD_LIBRARY_PATH:

    python3.12 -m venv .venv-triton
    .venv-triton/bin/pip install 'nvidia-pytriton==0.7.0' 'numpy<2' onnxruntime

For the repository's `split` and `kernel` models (Python-backend models running this package), that
venv also needs what they import: `.venv-triton/bin/pip install ai-edge-litert opencv-python-headless`
(with numpy<2); without them those two tests are skipped, saying so.

The tests are skipped, saying so, where that venv is absent (EDGE_DEBLUR_TRITON_PYTHON names another)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = Path(os.environ.get("EDGE_DEBLUR_TRITON_PYTHON", REPO / ".venv-triton" / "bin" / "python"))


def _triton_python() -> Path:
    if not PYTHON.exists():
        pytest.skip(f"no Triton venv at {PYTHON} (see this module's docstring to make one)")
    probe = subprocess.run([str(PYTHON), "-c", "import pytriton, onnxruntime, numpy; print(numpy.__version__)"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"{PYTHON} lacks nvidia-pytriton/onnxruntime: {probe.stderr.strip()[-200:]}")
    return PYTHON


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    python = _triton_python()
    pytest.importorskip("onnx", reason="onnx is not installed (the export needs it)")
    from edge_deblur.serve.export import TritonExport, export_triton

    repo = export_triton(tmp_path_factory.mktemp("triton") / "models", TritonExport(max_batch_size=4, max_queue=4))
    http_port, grpc_port, metrics_port = _ports(3)
    libdir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, timeout=60).stdout.strip() or sysconfig.get_config_var("LIBDIR")
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    log = tmp_path_factory.mktemp("triton-log") / "triton.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([str(python), str(REPO / "tests" / "serve_triton_bind.py"), str(repo),
                                 str(http_port), str(grpc_port), str(metrics_port)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=sink, text=True, env=env)
    try:
        deadline = time.monotonic() + 180
        line, skipped = "", {}
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            if line.startswith("skipped "):
                name, _, why = line[len("skipped "):].partition(":")
                skipped[name] = why.strip()
            if "ready" in line:
                break
        if "ready" not in line:
            pytest.fail(f"Triton did not start (exit {proc.poll()}): {log.read_text()[-2000:]}")
        yield {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}", "metrics": metrics_port,
               "skipped": skipped}
    finally:
        try:
            proc.stdin.close()
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_the_board_talks_to_a_real_triton_unchanged(triton, photo):
    from edge_deblur.model import Deblurrer
    from edge_deblur.partition import Offload, OffloadConfig, V2Client

    teacher = Deblurrer.load("teacher", threads=1)
    crops = [np.ascontiguousarray(photo[y:y + 64, x:x + 72]) for y, x in [(0, 0), (150, 200), (300, 40)]]
    crops.append(np.ascontiguousarray(photo[10:71, 20:95]))  # 61x75: off the network's stride
    offload = Offload(OffloadConfig(f"http://{triton['http']}", deadline_s=60), local=teacher)
    assert offload.config.model == "teacher"  # a stream's offload: the network, exported as teacher
    assert V2Client(f"http://{triton['http']}").ready("teacher")
    for crop in crops:
        out = offload(crop)
        assert out.shape == crop.shape and np.abs(out.astype(int) - teacher(crop).astype(int)).max() <= 1
    assert offload.summary.offloaded == len(crops) and offload.summary.local == 0, str(offload.summary)

    metrics = urlopen(f"http://127.0.0.1:{triton['metrics']}/metrics", timeout=30).read().decode()
    # the names our server's dashboards and HPA rules use are Triton's own
    for name in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us", "nv_inference_pending_request_count"):
        assert f"# TYPE {name} " in metrics, name
    ok = [l for l in metrics.splitlines() if l.startswith('nv_inference_request_success{model="teacher"')]
    assert ok and float(ok[0].rsplit(" ", 1)[1]) >= len(crops)


def test_stock_grpc_client_against_triton(triton, photo):
    tgrpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    crop = np.ascontiguousarray(photo[:64, :64])[None]
    client = tgrpc.InferenceServerClient(triton["grpc"])
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "triton"
    print(f"Triton {server['version']}")  # 2.51.0 in nvidia-pytriton 0.7.0
    meta = client.get_model_metadata("teacher", as_json=True)
    assert meta["inputs"][0]["name"] == "image" and meta["inputs"][0]["datatype"] == "UINT8"
    inp = tgrpc.InferInput("image", list(crop.shape), "UINT8")
    inp.set_data_from_numpy(crop)
    out = client.infer("teacher", [inp]).as_numpy("deblurred")
    assert out.shape == crop.shape and out.dtype == np.uint8


def _served(triton, name):
    if name in triton["skipped"]:
        pytest.skip(f"the Triton venv cannot serve '{name}': {triton['skipped'][name]}")


def test_split_mode_through_a_real_triton(triton, photo):
    """The board's split mode against the exported ``split`` model (Triton's dynamic batcher with a
    batch of one, its queue policy): the student's result to the bit, every middle on the server."""
    _served(triton, "split")
    from edge_deblur.model import Deblurrer
    from edge_deblur.partition import OffloadConfig, SplitOffload

    student = Deblurrer.load("student-rpi5", threads=1)
    split = SplitOffload(OffloadConfig(f"http://{triton['http']}", model="split", deadline_s=60), threads=1)
    for crop in (np.ascontiguousarray(photo[:96, :128]), np.ascontiguousarray(photo[50:171, 30:163])):
        np.testing.assert_array_equal(split(crop), student(crop))
    assert split.summary.split == 2 and split.summary.local == 0, str(split.summary)
    split.close()


def test_kernel_mode_through_a_real_triton(triton, photo):
    """The board's kernel mode against the exported ``kernel`` model: the crop goes up, the [1, k, k]
    kernel comes back and restores the frames on the board."""
    _served(triton, "kernel")
    from edge_deblur.model import Deblurrer
    from edge_deblur.partition import KernelModeConfig, KernelOffload, OffloadConfig

    student = Deblurrer.load("student-rpi5", threads=1)
    mode = KernelOffload(KernelModeConfig(OffloadConfig(f"http://{triton['http']}", model="kernel", deadline_s=120),
                                          crop=96, kernel_size=9), local=student)
    frame = np.ascontiguousarray(photo[:128, :128])
    out = mode(frame)
    assert out.shape == frame.shape and mode.summary.kernels == 1 and mode.summary.restored == 1, str(mode.summary)
    assert mode.kernel.shape == (9, 9) and abs(mode.kernel.sum() - 1) < 1e-6
    mode.close()
