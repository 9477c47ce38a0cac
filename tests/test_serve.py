"""edge-deblur serve: the KServe V2 protocol over HTTP and gRPC, called by stock clients (tritonclient),
its refusals (auth, limits, validation), its metrics, and that no bad request stops it.
Inference goes to the ``teacher`` model (the feed-forward network: milliseconds for a 64x64 crop);
refusals and validation to ``deblur`` as well, whose auto engine is tested in test_serve_deblur.

Servers run in-process on 127.0.0.1, ephemeral ports, stopped at the end of each module or test; one
test runs the real CLI in a subprocess. Frames are 64x64 crops of a real photo blurred by a real
measured camera-shake kernel (Levin et al. 2009), deblurred by the bundled teacher."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

for _module, _why in [("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("grpc_tools", "grpcio-tools"),
                      ("prometheus_client", "prometheus-client"), ("tritonclient.http", "tritonclient[http]"),
                      ("tritonclient.grpc", "tritonclient[grpc]")]:
    pytest.importorskip(_module, reason=f"the 'serve' extra and the test tools are not installed ({_why} missing): "
                                        "pip install -e '.[test]'")

import grpc  # noqa: E402
import tritonclient.grpc as tgrpc  # noqa: E402
import tritonclient.http as thttp  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from edge_deblur.metrics import psnr  # noqa: E402
from edge_deblur.model import Deblurrer  # noqa: E402
from edge_deblur.serve.limits import Limits  # noqa: E402
from edge_deblur.serve.protocol import ProtocolError  # noqa: E402
from edge_deblur.serve.registry import DeblurModel, ModelRegistry, TensorSpec  # noqa: E402
from edge_deblur.serve.server import RunningServer, ServeConfig  # noqa: E402
from edge_deblur.serve.tokens import add_token, read_tokens, revoke_token  # noqa: E402
from serve_metrics import metrics_text, parse  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pair(photo, levin_kernels):
    """(blurred, sharp): a 64x64 crop of a Kodak photo, blurred by Levin's first kernel."""
    sharp = np.ascontiguousarray(photo[200:264, 200:264])
    k = levin_kernels[0].astype(np.float32)
    blurred = cv2.filter2D(sharp.astype(np.float32), -1, k[::-1, ::-1], borderType=cv2.BORDER_REFLECT)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8), sharp


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    return path, {"alice": add_token(path, "alice"), "bob": add_token(path, "bob")}


@pytest.fixture(scope="module")
def server(tokens):
    config = ServeConfig(port=0, grpc_port=0, tokens=tokens[0], threads=2,
                         limits=Limits(max_request_bytes=1 << 20, max_pixels=256 * 256, rate=0, max_queue=4))
    with RunningServer(config) as s:
        yield s


def _auth(tokens, who="alice"):
    return {"Authorization": f"Bearer {tokens[1][who]}"}


def _http_infer(url, frame, headers, binary=True, model="teacher"):
    client = thttp.InferenceServerClient(url)
    inp = thttp.InferInput("image", list(frame.shape), "UINT8")
    inp.set_data_from_numpy(frame, binary_data=binary)
    out = thttp.InferRequestedOutput("image", binary_data=binary)
    return client.infer(model, [inp], outputs=[out], headers=headers).as_numpy("image")


def _grpc_infer(url, frame, token):
    client = tgrpc.InferenceServerClient(url)
    inp = tgrpc.InferInput("image", list(frame.shape), "UINT8")
    inp.set_data_from_numpy(frame)
    return client.infer("teacher", [inp], headers={"authorization": f"Bearer {token}"}).as_numpy("image")


def _post(url, path, body: bytes, headers=None):
    """A raw HTTP request, for what stock clients would never send: (status, headers, JSON or bytes)."""
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        try:
            data = json.loads(data)
        except ValueError:
            pass
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def test_stock_http_client_health_metadata_infer(server, tokens, pair):
    blurred, sharp = pair
    client = thttp.InferenceServerClient(server.http_url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("deblur")
    assert client.is_model_ready("teacher")
    meta = client.get_server_metadata(headers=_auth(tokens))
    assert meta["name"] == "edge-deblur" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("deblur", headers=_auth(tokens))
    assert model["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [1, -1, -1, 3]}]
    assert model["outputs"] == [{"name": "image", "datatype": "UINT8", "shape": [1, -1, -1, 3]}]

    served = _http_infer(server.http_url, blurred[None], _auth(tokens))
    local = Deblurrer.load("teacher", threads=2)(blurred)
    assert served.shape == (1, 64, 64, 3) and served.dtype == np.uint8
    # The same model file and code as a local run: at most one 8-bit step of float rounding apart.
    assert np.abs(served[0].astype(int) - local.astype(int)).max() <= 1
    # and it deblurred (the teacher's quality is tested in test_teacher; here only that it ran)
    assert psnr(served[0], sharp) > psnr(blurred, sharp)

    as_json = _http_infer(server.http_url, blurred[None], _auth(tokens), binary=False)
    np.testing.assert_array_equal(as_json, served)


def test_stock_grpc_client_health_metadata_infer(server, tokens, pair):
    blurred, _ = pair
    client = tgrpc.InferenceServerClient(server.grpc_url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("deblur")
    token = {"authorization": f"Bearer {tokens[1]['alice']}"}
    meta = client.get_model_metadata("deblur", headers=token, as_json=True)
    assert meta["inputs"][0]["datatype"] == "UINT8" and [int(d) for d in meta["inputs"][0]["shape"]] == [1, -1, -1, 3]
    assert client.get_server_metadata(headers=token).name == "edge-deblur"
    via_grpc = _grpc_infer(server.grpc_url, blurred[None], tokens[1]["alice"])
    via_http = _http_infer(server.http_url, blurred[None], _auth(tokens))
    np.testing.assert_array_equal(via_grpc, via_http)


def test_stock_grpc_client_model_config_carries_the_engine_marker(server, tokens):
    """Triton's ModelConfig RPC, as tritonclient.grpc's ``get_model_config`` calls it and parses it
    (with Triton's own model_config.proto): each model's ``edge_deblur_engine`` marker, its tensors
    (Triton's data types, the batch dimension in the dims, ``max_batch_size`` 0), the same as HTTP's
    ``GET /v2/models/{m}/config`` says; a token as metadata needs, and NOT_FOUND for no such model."""
    from edge_deblur.serve.registry import blind_available

    client = tgrpc.InferenceServerClient(server.grpc_url)
    token = {"authorization": f"Bearer {tokens[1]['alice']}"}
    engines = {"teacher": "network", "deblur": "auto" if blind_available() else "network", "split": "split"}
    http_client = thttp.InferenceServerClient(server.http_url)
    for name, engine in engines.items():
        config = client.get_model_config(name, headers=token).config  # tritonclient's inference.ModelConfig
        assert config.name == name and config.parameters["edge_deblur_engine"].string_value == engine, config
        assert config.max_batch_size == 0 and config.platform.startswith("edge-deblur_")
        as_json = client.get_model_config(name, headers=token, as_json=True)["config"]
        via_http = http_client.get_model_config(name, headers=_auth(tokens))
        # the same configuration both ways (gRPC's JSON writes int64 as strings)
        for tensors in ("input", "output"):
            for t in as_json[tensors]:
                t["dims"] = [int(d) for d in t["dims"]]
        assert {k: v for k, v in as_json.items() if k != "max_batch_size"} == \
            {k: v for k, v in via_http.items() if k != "max_batch_size"}, (as_json, via_http)
    teacher = client.get_model_config("teacher", headers=token).config
    assert [(t.name, t.data_type, list(t.dims)) for t in teacher.input] == [("image", 2, [1, -1, -1, 3])]  # TYPE_UINT8
    assert [(t.name, t.data_type, list(t.dims)) for t in teacher.output] == [("image", 2, [1, -1, -1, 3])]
    with pytest.raises(InferenceServerException) as e:
        client.get_model_config("teacher")
    assert e.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as e:
        client.get_model_config("nothing", headers=token)
    assert e.value.status() == "StatusCode.NOT_FOUND" and "unknown model" in e.value.message()
    client.close()


def test_tokens_401_403_and_open_health(server, tokens, pair, tmp_path):
    blurred, _ = pair
    url = server.http_url
    assert _post(url, "/v2/health/live", None)[0] == 200
    assert _post(url, "/v2/health/ready", None)[0] == 200
    assert _post(url, "/v2/models/deblur/ready", None)[0] == 200
    status, _, body = _post(url, "/v2/models/deblur", None)
    assert status == 401 and "Authorization" in body["error"]
    assert _post(url, "/v2", None)[0] == 401
    assert _post(url, "/v2/models/deblur", None, {"Authorization": "Bearer edb_not-a-token"})[0] == 401
    assert _post(url, "/v2/models/deblur", None, {"Authorization": "Basic abc"})[0] == 401
    with pytest.raises(InferenceServerException, match="Authorization"):
        _http_infer(url, blurred[None], {})

    # The file holds hashes only; revoking takes effect in the running server without a restart.
    text = tokens[0].read_text()
    assert tokens[1]["bob"] not in text and tokens[1]["alice"] not in text
    assert _post(url, "/v2/models/deblur", None, _auth(tokens, "bob"))[0] == 200
    revoke_token(tokens[0], "bob")
    status, _, body = _post(url, "/v2/models/deblur", None, _auth(tokens, "bob"))
    assert status == 403 and "revoked" in body["error"]
    with pytest.raises(InferenceServerException) as e:
        _grpc_infer(server.grpc_url, blurred[None], tokens[1]["bob"])
    assert e.value.status() == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(InferenceServerException) as e:
        _grpc_infer(server.grpc_url, blurred[None], "edb_wrong")
    assert e.value.status() == "StatusCode.UNAUTHENTICATED"
    assert _post(url, "/v2/models/deblur", None, _auth(tokens, "alice"))[0] == 200  # the others still work


def _binary_request(frame: np.ndarray, name="image", datatype="UINT8", shape=None, cut=0, extra=b""):
    raw = frame.tobytes()
    header = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape or list(frame.shape),
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "image", "parameters": {"binary_data": True}}]}).encode()
    return header + raw[: len(raw) - cut] + extra, len(header)


def test_bad_requests_are_400_and_the_server_lives_on(server, tokens, pair):
    blurred, _ = pair
    url, auth = server.http_url, _auth(tokens)
    frame = blurred[None]
    length = "Inference-Header-Content-Length"
    cases = {}
    body, n = _binary_request(frame[..., :2].copy())
    cases["wrong shape"] = (body, {length: str(n)}, "shape")
    body, n = _binary_request(frame.astype(np.float32), datatype="FP32")
    cases["wrong datatype"] = (body, {length: str(n)}, "datatype FP32")
    body, n = _binary_request(frame, name="picture")
    cases["wrong input name"] = (body, {length: str(n)}, "no input 'picture'")
    body, n = _binary_request(frame, cut=10)
    cases["truncated binary"] = (body, {length: str(n)}, "truncated")
    body, n = _binary_request(frame, extra=b"xx")
    cases["trailing bytes"] = (body, {length: str(n)}, "after the last binary input")
    body, n = _binary_request(frame)
    cases["header length past the body"] = (body, {length: str(len(body) + 5)}, length)
    cases["header length not a number"] = (body, {length: "ten"}, length)
    cases["malformed JSON"] = (b'{"inputs": [', {}, "malformed JSON")
    cases["not an object"] = (b"[1, 2]", {}, "JSON object")
    cases["no inputs"] = (b'{"outputs": []}', {}, "no 'inputs'")
    cases["ragged data"] = (json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2, 1, 3],
                                                    "data": [[1, 2, 3], [4]]}]}).encode(), {}, "regular")
    cases["data count"] = (json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2, 2, 3],
                                                   "data": [1, 2, 3]}]}).encode(), {}, "12 expected")
    cases["out of range"] = (json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3],
                                                     "data": [1, 2, 300]}]}).encode(), {}, "range")
    cases["BYTES"] = (json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                              "data": ["x"]}]}).encode(), {}, "BYTES")
    cases["negative shape"] = (json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, -1, 1, 3],
                                                       "data": [1, 2, 3]}]}).encode(), {}, "non-negative")
    body, n = _binary_request(frame)
    cases["unknown output"] = (body.replace(b'"outputs": [{"name": "image"', b'"outputs": [{"name": "mask_"', 1),
                               {length: str(n)}, "no output 'mask_'")
    cases["compressed garbage"] = (b"not gzip", {"Content-Encoding": "gzip"}, "gzip")
    for what, (body, headers, needle) in cases.items():
        status, _, reply = _post(url, "/v2/models/deblur/infer", body, {**auth, **headers})
        assert status == 400, (what, status, reply)
        assert needle in reply["error"], (what, reply)
    status, _, reply = _post(url, "/v2/models/nope/infer", b"{}", auth)
    assert status == 404 and "unknown model 'nope'" in reply["error"]
    status, _, reply = _post(url, "/v2/nothing/here", b"{}", auth)
    assert status == 404 and "error" in reply

    # gRPC: a message that is not a protobuf, and a wrong datatype from the stock client.
    channel = grpc.insecure_channel(server.grpc_url)
    raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as e:
        raw(b"\xff\xff\xff\xff garbage", metadata=(("authorization", f"Bearer {tokens[1]['alice']}"),), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in e.value.details()
    client = tgrpc.InferenceServerClient(server.grpc_url)
    inp = tgrpc.InferInput("image", list(frame.shape), "FP32")
    inp.set_data_from_numpy(frame.astype(np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("deblur", [inp], headers={"authorization": f"Bearer {tokens[1]['alice']}"})
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "datatype FP32" in e.value.message()
    channel.close()

    # After all that, a good request through each transport still succeeds.
    assert _http_infer(url, frame, auth).shape == frame.shape
    assert _grpc_infer(server.grpc_url, frame, tokens[1]["alice"]).shape == frame.shape


def test_size_and_pixel_limits(server, tokens):
    url, auth = server.http_url, _auth(tokens)
    big = np.zeros((1, 600, 600, 3), np.uint8)  # 1.08 MB > the 1 MiB limit
    body, n = _binary_request(big)
    status, _, reply = _post(url, "/v2/models/deblur/infer", body, {**auth, "Inference-Header-Content-Length": str(n)})
    assert status == 413 and "at most" in reply["error"]
    wide = np.zeros((1, 8, 257 * 256 // 8 + 8, 3), np.uint8)  # 65.8k pixels > 256x256, but < 1 MiB
    body, n = _binary_request(wide)
    status, _, reply = _post(url, "/v2/models/deblur/infer", body, {**auth, "Inference-Header-Content-Length": str(n)})
    assert status == 400 and "pixels" in reply["error"]


def test_metrics_triton_names_and_histograms(server, tokens, pair):
    _http_infer(server.http_url, pair[0][None], _auth(tokens))
    status, headers, _ = _post(server.http_url, "/metrics", None)
    assert status == 200
    text = metrics_text(server.http_url)
    values = parse(text)
    ok = values['nv_inference_request_success{model="teacher",version="1"}']
    assert ok >= 1
    assert "# TYPE nv_inference_request_success counter" in text
    assert values['nv_inference_request_failure{model="deblur",version="1",reason="OTHER"}'] >= 1  # earlier 400s
    assert values['nv_inference_compute_infer_duration_us{model="teacher",version="1"}'] > 0
    assert values['nv_inference_pending_request_count{model="teacher",version="1"}'] == 0
    assert values['edge_deblur_inflight_requests{model="teacher",version="1"}'] == 0
    assert values['edge_deblur_compute_duration_ms_count{model="teacher",version="1"}'] == ok
    assert values['edge_deblur_queue_duration_ms_bucket{le="+Inf",model="teacher",version="1"}'] == ok
    assert 'edge_deblur_request_duration_ms_bucket{le="5.0",model="teacher",version="1"}' in values
    assert values['edge_deblur_refused_requests_total{status="401"}'] >= 1


class _GatedModel:
    """A model whose predictions wait until the test opens the gate: makes a queue fill on demand."""

    name, version, platform = "gated", "1", "test"
    inputs = [TensorSpec("x", "FP32", (-1,))]
    outputs = [TensorSpec("y", "FP32", (-1,))]

    def __init__(self):
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def predict(self, inputs, parameters):
        self.started.release()
        if not self.gate.wait(20):
            raise RuntimeError("gate never opened")
        if parameters.get("fail"):
            raise ValueError("asked to fail")
        return {"y": inputs["x"] * 2}


def _gated_request(fail=False, timeout_us=None):
    params = {"fail": True} if fail else {}
    if timeout_us:
        params["timeout"] = timeout_us
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}],
                       "parameters": params}).encode()


def test_queue_full_503_timeout_504_model_error_500():
    model = _GatedModel()
    registry = ModelRegistry()
    registry.add(model)
    config = ServeConfig(port=0, grpc_port=None, limits=Limits(workers=1, max_queue=1, timeout_s=20, rate=0))
    with RunningServer(config, registry=registry) as s:
        results = {}
        first = threading.Thread(target=lambda: results.update(first=_post(s.http_url, "/v2/models/gated/infer", _gated_request())))
        first.start()
        assert model.started.acquire(timeout=10)  # the worker is busy
        # one more may wait (max_queue=1) and give up after 0.3 s; a third is refused at once
        waiting = threading.Thread(target=lambda: results.update(
            waiting=_post(s.http_url, "/v2/models/gated/infer", _gated_request(timeout_us=300_000))))
        waiting.start()
        time.sleep(0.1)
        status, headers, reply = _post(s.http_url, "/v2/models/gated/infer", _gated_request())
        assert status == 503 and "busy" in reply["error"] and int(headers["retry-after"]) >= 1
        waiting.join(10)
        assert results["waiting"][0] == 504 and "timed out" in results["waiting"][2]["error"]
        model.gate.set()
        first.join(10)
        assert results["first"][0] == 200 and results["first"][2]["outputs"][0]["data"] == [2, 4, 6]
        status, _, reply = _post(s.http_url, "/v2/models/gated/infer", _gated_request(fail=True))
        assert status == 500 and "asked to fail" in reply["error"]
        status, _, reply = _post(s.http_url, "/v2/models/gated/infer", _gated_request())
        assert status == 200  # the worker came back from the model's error
        text = s.engine.metrics.exposition().decode()
        assert 'nv_inference_request_failure{model="gated",version="1",reason="REJECTED"} 1.0' in text
        assert 'nv_inference_request_failure{model="gated",version="1",reason="CANCELED"} 1.0' in text
        assert 'nv_inference_request_failure{model="gated",version="1",reason="BACKEND"} 1.0' in text


def test_rate_limit_429_with_retry_after(tokens, pair):
    config = ServeConfig(port=0, grpc_port=0, tokens=tokens[0], threads=1, limits=Limits(rate=0.5, burst=2))
    with RunningServer(config) as s:
        auth = _auth(tokens)
        assert _post(s.http_url, "/v2/models/deblur", None, auth)[0] == 200
        assert _post(s.http_url, "/v2/models/deblur", None, auth)[0] == 200
        status, headers, reply = _post(s.http_url, "/v2/models/deblur", None, auth)
        assert status == 429 and "rate limit" in reply["error"] and 1 <= int(headers["retry-after"]) <= 2
        with pytest.raises(InferenceServerException) as e:  # the same bucket, through gRPC
            _grpc_infer(s.grpc_url, pair[0][None], tokens[1]["alice"])
        assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert _post(s.http_url, "/v2/health/ready", None)[0] == 200  # probes are never throttled


def test_token_file_and_cli(tmp_path):
    path = tmp_path / "t.json"
    out = subprocess.run([sys.executable, "-m", "edge_deblur.cli", "token", "add", "cam1", "--tokens", str(path)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    token = out.stdout.splitlines()[0]
    assert token.startswith("edb_") and len(token) >= 40
    assert token not in path.read_text() and oct(path.stat().st_mode & 0o777) == "0o600"
    (record,) = read_tokens(path)
    assert record.name == "cam1" and record.matches(token) and not record.matches(token + "x")
    again = subprocess.run([sys.executable, "-m", "edge_deblur.cli", "token", "add", "cam1", "--tokens", str(path)],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert again.returncode == 2 and "exists" in again.stderr
    out = subprocess.run([sys.executable, "-m", "edge_deblur.cli", "token", "revoke", "cam1", "--tokens", str(path)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and read_tokens(path)[0].revoked is not None
    with pytest.raises(Exception, match="no live token"):
        revoke_token(path, "cam1")


def test_cli_serve_subprocess(tmp_path, pair):
    tokens = tmp_path / "tokens.json"
    token = add_token(tokens, "device")
    proc = subprocess.Popen([sys.executable, "-m", "edge_deblur.cli", "serve", "--port", "0", "--grpc-port", "-1",
                             "--tokens", str(tokens), "--threads", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()  # "serving deblur on http://127.0.0.1:PORT ..."
        assert "serving deblur" in line, (line, proc.poll())
        url = line.split("http://")[1].split()[0]
        frame = pair[0][None]
        result = _http_infer(url, frame, {"Authorization": f"Bearer {token}"})
        assert result.shape == frame.shape
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode in (0, 130), proc.stderr.read()


def test_importing_edge_deblur_imports_no_server_package():
    code = ("import sys, edge_deblur, edge_deblur.cli; edge_deblur.cli.build_parser(); "
            "print([m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'uvicorn', 'grpc', 'grpc_tools', 'prometheus_client', 'starlette', 'google')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_model_dir_serves_other_models(tmp_path, pair):
    import shutil

    from edge_deblur.model import MODELS_DIR

    shutil.copy(MODELS_DIR / "student-rpi5.tflite", tmp_path / "fast.tflite")
    shutil.copy(MODELS_DIR / "student-rpi5.json", tmp_path / "fast.json")
    config = ServeConfig(port=0, grpc_port=None, threads=1, model_dir=tmp_path)
    with RunningServer(config) as s:
        served = _http_infer(s.http_url, pair[0][None], {}, model="fast")
    local = Deblurrer.load(tmp_path / "fast.tflite", threads=1)(pair[0])
    assert np.abs(served[0].astype(int) - local.astype(int)).max() <= 1


def test_kernel_model_when_the_blind_engine_exists(pair):
    from edge_deblur.serve.registry import KernelModel, blind_estimator

    estimate = blind_estimator()
    if estimate is None:
        pytest.skip("edge_deblur.blind.estimate_kernel does not exist yet: the 'kernel' model is not registered")
    registry = ModelRegistry()
    registry.add(KernelModel(estimate))
    gray = cv2.cvtColor(pair[0], cv2.COLOR_RGB2GRAY)
    with RunningServer(ServeConfig(port=0, grpc_port=None, limits=Limits(timeout_s=120)), registry=registry) as s:
        client = thttp.InferenceServerClient(s.http_url, network_timeout=120)
        inp = thttp.InferInput("image", [1, *gray.shape], "UINT8")
        inp.set_data_from_numpy(gray[None])
        kernel = client.infer("kernel", [inp], parameters={"kernel_size": 15}).as_numpy("kernel")
        with pytest.raises(InferenceServerException, match="model 'kernel'") as e:  # the estimator's ValueError
            client.infer("kernel", [inp], parameters={"kernel_size": 41})
        assert e.value.status() == "400"
        with pytest.raises(InferenceServerException, match="odd positive integer"):
            client.infer("kernel", [inp], parameters={"kernel_size": 14})
    assert kernel.shape == (15, 15) and kernel.dtype == np.float32
    assert abs(float(kernel.sum()) - 1.0) < 1e-3 and kernel.min() >= -1e-6


def test_registry_refuses_and_protocol_errors_carry_status():
    registry = ModelRegistry()
    with pytest.raises(ProtocolError) as e:
        registry.get("deblur")
    assert e.value.status == 404
    model = DeblurModel("student-rpi4", threads=1)
    registry.add(model)
    assert registry.metadata("deblur")["platform"] == "edge-deblur_litert"
    with pytest.raises(ProtocolError, match="no version '7'"):
        registry.get("deblur", "7")


def test_tls_https_and_grpc(tmp_path, pair):
    import shutil
    import ssl

    from edge_deblur.partition import V2Client

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                           "-out", str(cert)], capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    config = ServeConfig(port=0, grpc_port=0, threads=1, tls_cert=cert, tls_key=key)
    with RunningServer(config) as s:
        frame = pair[0][None]
        trusted = ssl.create_default_context(cafile=str(cert))
        result = V2Client(f"https://{s.http_url}", ssl_context=trusted).infer("teacher", "image", frame, timeout=30)
        assert result.output.shape == frame.shape
        with pytest.raises(Exception):  # plain HTTP to a TLS port gets no answer
            V2Client(f"http://{s.http_url}").infer("teacher", "image", frame, timeout=5)
        client = tgrpc.InferenceServerClient(s.grpc_url, ssl=True, root_certificates=str(cert))
        assert client.is_server_live()


def test_gzip_request_and_slow_body(tokens, pair):
    config = ServeConfig(port=0, grpc_port=None, tokens=tokens[0], threads=1, limits=Limits(timeout_s=1.0, rate=0))
    with RunningServer(config) as s:
        client = thttp.InferenceServerClient(s.http_url)
        inp = thttp.InferInput("image", [1, 64, 64, 3], "UINT8")
        inp.set_data_from_numpy(pair[0][None])
        zipped = client.infer("teacher", [inp], headers=_auth(tokens), request_compression_algorithm="gzip")
        plain = client.infer("teacher", [inp], headers=_auth(tokens))
        np.testing.assert_array_equal(zipped.as_numpy("image"), plain.as_numpy("image"))

        # a client that announces 1000 bytes and sends 10 is cut off after the timeout, with 408
        host, port = s.http_url.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall((f"POST /v2/models/deblur/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                          f"Authorization: Bearer {tokens[1]['alice']}\r\n\r\n").encode() + b"0123456789")
            started = time.monotonic()
            reply = b""
            while b"}" not in reply:  # headers and the JSON body may come in separate packets
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            reply = reply.decode(errors="replace")
        assert reply.startswith("HTTP/1.1 408") and "not received within" in reply
        assert time.monotonic() - started < 5
        assert _post(s.http_url, "/v2/health/live", None)[0] == 200
