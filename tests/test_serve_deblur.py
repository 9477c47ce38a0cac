"""The server's ``deblur`` is its best quality, the auto engine (blind, falling back to the network),
for stills; ``teacher`` is the feed-forward network, what a stream's offload calls (issue 13).

Images are real: a crop of the bundled ``examples/images/clock_motion.png`` (a photo with real
camera motion, on which the auto engine keeps its blind result: ~7 s for 96x96 on this host), and
64x64 crops of a Kodak photo (which the auto engine calls sharp and returns as they are; the
teacher changes them). One server for the module, one worker thread, so its auto engine and the
one built here compute the same numbers."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

for _module in ("fastapi", "uvicorn", "prometheus_client", "tritonclient.http", "tritonclient.grpc"):
    pytest.importorskip(_module, reason=f"the 'serve' extra and the test tools are not installed ({_module} missing): "
                                        "pip install -e '.[test]'")

import tritonclient.grpc as tgrpc  # noqa: E402
import tritonclient.http as thttp  # noqa: E402

from edge_deblur.model import Deblurrer  # noqa: E402
from edge_deblur.serve.limits import Limits  # noqa: E402
from edge_deblur.serve.server import RunningServer, ServeConfig  # noqa: E402
from serve_metrics import scrape  # noqa: E402

blind = pytest.importorskip("edge_deblur.blind", reason="no blind engine in this installation")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    config = ServeConfig(port=0, grpc_port=0, threads=1, limits=Limits(rate=0, timeout_s=120))
    with RunningServer(config) as s:
        yield s


@pytest.fixture(scope="module")
def auto():
    """The auto engine as ``edge-deblur deblur --method auto`` builds it (pipeline.blind_method)."""
    return blind.AutoDeblurrer(blind.BlindDeblurrer.load(blind.BlindConfig(threads=1)),
                               Deblurrer.load("teacher", threads=1))


@pytest.fixture(scope="module")
def teacher():
    return Deblurrer.load("teacher", threads=1)


@pytest.fixture(scope="module")
def motion():
    """96x96 from the middle of a real motion-blurred photo: the auto engine's blind path."""
    image = cv2.imread(str(REPO / "examples" / "images" / "clock_motion.png"), cv2.IMREAD_COLOR)[..., ::-1]
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[(h - 96) // 2:(h - 96) // 2 + 96, (w - 96) // 2:(w - 96) // 2 + 96])


@pytest.fixture(scope="module")
def crops(photo):
    return [np.ascontiguousarray(photo[y:y + 64, x:x + 64]) for y, x in [(200, 200), (100, 50), (300, 120)]]


def _metrics(server) -> dict[str, float]:
    return scrape(server.http_url)


def _success(server, model: str) -> float:
    return _metrics(server).get(f'nv_inference_request_success{{model="{model}",version="1"}}', 0.0)


def _http(server, model, frame):
    client = thttp.InferenceServerClient(server.http_url, network_timeout=120)
    inp = thttp.InferInput("image", list(frame.shape), "UINT8")
    inp.set_data_from_numpy(frame, binary_data=True)
    result = client.infer(model, [inp], outputs=[thttp.InferRequestedOutput("image", binary_data=True)])
    return result.as_numpy("image"), result.get_response().get("parameters", {})


def test_deblur_is_the_auto_engine_through_the_stock_http_client(server, auto, teacher, motion):
    meta = thttp.InferenceServerClient(server.http_url).get_model_metadata("deblur")
    assert meta["platform"] == "edge-deblur_python"
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [1, -1, -1, 3]}]
    before = _metrics(server).get('edge_deblur_paths_total{model="deblur",path="blind",version="1"}', 0.0)
    served, params = _http(server, "deblur", motion[None])
    local = auto(motion)
    assert auto.last.path == "blind", auto.last.reason  # the image this test is about: blind kept
    assert served.shape == (1, *motion.shape) and served.dtype == np.uint8
    # the same engine, configuration, model files and thread count: the same bytes
    np.testing.assert_array_equal(served[0], local)
    assert params["path"] == "blind" and params["candidates"] == auto.last.candidates, params
    assert not np.array_equal(served[0], teacher(motion))  # not the network's answer
    after = _metrics(server)['edge_deblur_paths_total{model="deblur",path="blind",version="1"}']
    assert after == before + 1


def test_teacher_is_the_network_and_grpc_carries_the_path(server, auto, teacher, crops):
    crop = crops[0]
    served, params = _http(server, "teacher", crop[None])
    np.testing.assert_array_equal(served[0], teacher(crop))
    assert "path" not in params  # the network takes no path of its own
    assert not np.array_equal(served[0], crop)

    client = tgrpc.InferenceServerClient(server.grpc_url)
    inp = tgrpc.InferInput("image", [1, *crop.shape], "UINT8")
    inp.set_data_from_numpy(crop[None])
    result = client.infer("deblur", [inp])
    local = auto(crop)
    np.testing.assert_array_equal(result.as_numpy("image")[0], local)
    said = result.get_response(as_json=True).get("parameters", {})
    assert said["path"]["string_param"] == auto.last.path == "input", (said, auto.last.reason)
    np.testing.assert_array_equal(local, crop)  # already sharp: returned as it is


def test_bad_input_to_deblur_is_still_400(server):
    host, port = server.http_url.split(":")
    cases = {"dtype": {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 2, 2, 3], "data": [0.5] * 12}]},
             "shape": {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2, 2, 4], "data": [1] * 16}]},
             "name": {"inputs": [{"name": "frame", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [1] * 12}]}}
    for what, doc in cases.items():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/v2/models/deblur/infer", body=json.dumps(doc).encode())
        response = conn.getresponse()
        status, body = response.status, json.loads(response.read())
        conn.close()
        assert status == 400 and "error" in body, (what, status, body)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/v2/models/deblur/infer", body=b"{not json")
    response = conn.getresponse()
    assert response.status == 400 and "error" in json.loads(response.read())
    conn.close()


def test_stream_offload_uses_teacher_and_stills_use_deblur(server, teacher, crops, tmp_path):
    from edge_deblur import cli
    from edge_deblur.partition.methods import partitioned_method

    url = f"http://{server.http_url}"
    deblur_before, teacher_before = _success(server, "deblur"), _success(server, "teacher")
    stream = partitioned_method(teacher, url, mode="offload")
    assert stream.offload.config.model == "teacher" and stream.offload.config.deadline_s == 1.0
    outs = [stream(f) for f in crops]
    assert stream.offload.summary.offloaded == len(crops), str(stream.offload.summary)
    assert all(np.array_equal(o, teacher(f)) for o, f in zip(outs, crops))
    stream.close()
    assert _success(server, "teacher") == teacher_before + len(crops)
    assert _success(server, "deblur") == deblur_before

    planned = partitioned_method(teacher, url, mode="auto")  # the planner's offload and its link's sized pings
    assert planned.offload.config.model == "teacher" and planned.planner.link.model == "teacher"
    planned.close()

    # `edge-deblur deblur ... --server` (stills): the server's deblur, with a still's deadline
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.ascontiguousarray(crops[1][..., ::-1]))
    teacher_before = _success(server, "teacher")
    assert cli.main(["deblur", str(still), "-o", str(tmp_path / "out"), "--server", url, "--mode", "offload",
                     "--threads", "1"]) == 0
    assert _success(server, "deblur") == deblur_before + 1
    assert _success(server, "teacher") == teacher_before
    written = cv2.imread(str(next((tmp_path / "out").glob("*.png"))), cv2.IMREAD_COLOR)[..., ::-1]
    assert written.shape == crops[1].shape


def test_kernel_model_chooses_among_restarts_when_asked(server):
    """``restarts: true``: the kernel the blind method would pick (BlindDeblurrer.estimate); without
    it, the single estimate it always gave (estimate_kernel). The crop (the top-left 96x96 of the
    motion-blurred photo) is one where the two differ, so each assertion tells them apart."""
    image = cv2.imread(str(REPO / "examples" / "images" / "clock_motion.png"), cv2.IMREAD_GRAYSCALE)
    gray = np.ascontiguousarray(image[:96, :96])
    x = gray.astype(np.float32) * np.float32(1 / 255)
    client = thttp.InferenceServerClient(server.http_url, network_timeout=120)
    inp = thttp.InferInput("image", [1, *gray.shape], "UINT8")
    inp.set_data_from_numpy(gray[None])
    chosen = client.infer("kernel", [inp], parameters={"restarts": True, "kernel_size": 15}).as_numpy("kernel")
    single = client.infer("kernel", [inp], parameters={"kernel_size": 15}).as_numpy("kernel")
    method = blind.BlindDeblurrer.load(blind.BlindConfig(threads=1, kernel_size=15))
    np.testing.assert_array_equal(chosen, method.estimate(x, method.noise_sigma(x)).astype(np.float32))
    np.testing.assert_array_equal(single, blind.estimate_kernel(x, size=15).astype(np.float32))
    assert chosen.shape == (15, 15) and abs(float(chosen.sum()) - 1) < 1e-3
    assert not np.array_equal(chosen, single)
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="restarts must be true or false") as e:
        client.infer("kernel", [inp], parameters={"restarts": "yes"})
    assert e.value.status() == "400"
