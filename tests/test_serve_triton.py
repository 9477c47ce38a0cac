"""The board's code against a real Triton (2.51, as nvidia-pytriton 0.7 bundles it), unchanged: the
repository `edge-deblur export triton` writes, served by Triton's own HTTP/gRPC front ends, dynamic
batcher and queue policy (tests/serve_triton_bind.py). PyTriton's wheel has no ONNX Runtime backend,
so a Python callable runs the exported ONNX `teacher` with onnxruntime; the Python-backend models
(`deblur`, `split`, `kernel`) are loaded as exported, config.pbtxt and 1/model.py, by the Triton
Python backend the wheel bundles.

Triton needs its own venv (PyTriton wants numpy<2) and libpython on LD_LIBRARY_PATH:

    python3.12 -m venv .venv-triton
    .venv-triton/bin/pip install 'nvidia-pytriton==0.7.0' 'numpy<2' onnxruntime

For the Python-backend models (running this package), that venv also needs what they import:
`.venv-triton/bin/pip install ai-edge-litert opencv-python-headless` (with numpy<2); without them
those tests are skipped, saying so.

The tests are skipped, saying so, where that venv is absent (EDGE_DEBLUR_TRITON_PYTHON names another)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import threading
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
        line, said = "", {"skipped": {}, "failed": {}}
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline().partition("edge-deblur-bind: ")[2]  # Triton's log lines say nothing here
            for what in said:
                if line.startswith(f"{what} "):
                    name, _, why = line[len(what) + 1:].partition(":")
                    said[what][name] = why.strip()
            if line.startswith("ready"):
                break
        if not line.startswith("ready"):
            pytest.fail(f"Triton did not start (exit {proc.poll()}): {log.read_text()[-2000:]}")
        # Triton's log goes on on the same pipe: read on, so that a full pipe never blocks the server
        threading.Thread(target=lambda: all(True for _ in proc.stdout), daemon=True).start()
        yield {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}", "metrics": metrics_port,
               **said}
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
    if name in triton["failed"]:
        pytest.fail(f"Triton's Python backend did not load the exported '{name}': {triton['failed'][name]}")
    if name in triton["skipped"]:
        pytest.skip(f"the Triton venv cannot serve '{name}': {triton['skipped'][name]}")
    meta = json.loads(urlopen(f"http://{triton['http']}/v2/models/{name}", timeout=30).read())
    assert meta["platform"] == "python", meta  # Triton's Python backend runs the exported model.py


def test_tritons_deblur_says_it_is_the_auto_engine_in_its_configuration(triton):
    """Triton's ``GET /v2/models/deblur/config`` carries the ``edge_deblur_engine`` marker the
    export wrote into config.pbtxt, in the form the board reads (``ServerModel``: ``auto``, so no
    stream is sent there whatever the name)."""
    from edge_deblur.partition import V2Client
    from edge_deblur.partition.offload import ServerModel

    _served(triton, "deblur")
    client = V2Client(f"http://{triton['http']}")
    config = client.config("deblur")
    assert config["parameters"]["edge_deblur_engine"] == {"string_value": "auto"}, config
    assert ServerModel("teacher", "triton")._engine(client, 30) == "auto"
    client.close()


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

    # a bad request is the request's fault, 400 as edge-deblur serve answers it (Triton's Python
    # backend answers an error without a code 500)
    thttp = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
    from tritonclient.utils import InferenceServerException

    client = thttp.InferenceServerClient(triton["http"], network_timeout=120)
    inp = thttp.InferInput("image", [1, 96, 96], "UINT8")
    inp.set_data_from_numpy(np.ascontiguousarray(photo[:96, :96, 1])[None])
    for parameters, said in (({"restarts": "yes"}, "restarts must be true or false"),
                             ({"kernel_size": 4}, "kernel_size must be an odd positive integer")):
        with pytest.raises(InferenceServerException, match=said) as e:
            client.infer("kernel", [inp], parameters=parameters)
        assert e.value.status() == "400", (parameters, e.value.status())
    client.close()


def _clock_motion_crop(side: int = 96) -> np.ndarray:
    """The middle of the bundled photo with real camera motion (the auto engine keeps its blind result)."""
    import cv2

    image = cv2.imread(str(REPO / "examples" / "images" / "clock_motion.png"), cv2.IMREAD_COLOR)[..., ::-1]
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side])


AUTO_HERE = """import sys
import numpy as np
from edge_deblur import blind
from edge_deblur.model import Deblurrer

auto = blind.AutoDeblurrer(blind.BlindDeblurrer.load(blind.BlindConfig(threads=1)), Deblurrer.load("teacher", threads=1))
np.save(sys.argv[2], auto(np.load(sys.argv[1])))
print(auto.last.path, auto.last.candidates)
"""


def _auto_in_the_triton_venv(frame: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, str]:
    """``AutoDeblurrer`` on ``frame`` in the Triton venv (its numpy<2 and OpenCV), this checkout's code."""
    src, dst = tmp_path / "frame.npy", tmp_path / "auto.npy"
    np.save(src, frame)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    run = subprocess.run([str(_triton_python()), "-c", AUTO_HERE, str(src), str(dst)], capture_output=True, text=True,
                         timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    return np.load(dst), run.stdout.split()[0]


def test_deblur_is_the_exported_auto_engine_in_tritons_python_backend(triton, photo, tmp_path):
    """The repository's ``deblur`` (its config.pbtxt and 1/model.py, run by Triton's own Python
    backend with the real triton_python_backend_utils) is the auto engine, on a blurred photo (the
    blind path) and a sharp Kodak crop (returned as it is), through the stock HTTP client and then
    ``edge-deblur deblur --server`` (stills).

    Reference: ``AutoDeblurrer`` built as ``edge-deblur deblur --method auto`` builds it, run in
    the Triton venv, whose libraries Triton's stub imports: the same bytes. Against this venv's
    (numpy 2, OpenCV 5 here; the Triton venv needs numpy<2) the blind path agrees (same path, same
    number of estimates) but not to the byte: the iterative kernel estimate comes out another
    kernel under the other libraries (max 118 levels apart on this crop, both results passing the
    engine's checks), so only the path and the sharp crop's bytes are compared across venvs."""
    _served(triton, "deblur")
    thttp = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
    blind = pytest.importorskip("edge_deblur.blind", reason="no blind engine in this installation")
    import cv2
    from edge_deblur import cli
    from edge_deblur.model import Deblurrer

    client = thttp.InferenceServerClient(triton["http"], network_timeout=300)
    meta = client.get_model_metadata("deblur")
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    teacher = Deblurrer.load("teacher", threads=1)
    auto = blind.AutoDeblurrer(blind.BlindDeblurrer.load(blind.BlindConfig(threads=1)), teacher)
    motion, sharp = _clock_motion_crop(), np.ascontiguousarray(photo[200:264, 200:264])
    served = {}
    for name, frame, path in (("motion", motion, "blind"), ("sharp", sharp, "input")):
        inp = thttp.InferInput("image", [1, *frame.shape], "UINT8")
        inp.set_data_from_numpy(frame[None], binary_data=True)
        out = client.infer("deblur", [inp]).as_numpy("image")
        assert out.shape == (1, *frame.shape) and out.dtype == np.uint8
        served[name] = out[0]
        there, there_path = _auto_in_the_triton_venv(frame, tmp_path)
        np.testing.assert_array_equal(out[0], there)  # the same engine and libraries: the same bytes
        here = auto(frame)
        assert there_path == auto.last.path == path, (there_path, auto.last.reason)
        if path == "input":
            np.testing.assert_array_equal(out[0], here)
            np.testing.assert_array_equal(out[0], frame)
    assert not np.array_equal(served["motion"], motion) and not np.array_equal(served["motion"], teacher(motion))
    client.close()

    # `edge-deblur deblur --server` (stills) against Triton: its deblur, the served bytes written
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.ascontiguousarray(motion[..., ::-1]))
    assert cli.main(["deblur", str(still), "-o", str(tmp_path / "out"), "--server", f"http://{triton['http']}",
                     "--mode", "offload", "--threads", "1"]) == 0
    written = cv2.imread(str(next((tmp_path / "out").glob("*.png"))), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(written, served["motion"])  # not this venv's bytes: Triton answered
