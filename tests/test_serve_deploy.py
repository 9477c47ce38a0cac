"""Scale-out: the Triton model repository `edge-deblur export triton` writes, and deploy/k8s's
manifests, checked offline (the Kubernetes 1.37 JSON schemas bundled by kubernetes-validate, strict:
unknown fields fail) and against the server they deploy (probe paths, CLI arguments, HPA metric)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is not installed (pip install -e '.[test]')")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed "
                                          "(pip install -e '.[test]')")

from edge_deblur.errors import EdgeDeblurError  # noqa: E402
from edge_deblur.model import Deblurrer, MODELS_DIR  # noqa: E402

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
K8S_VERSION = "1.37.0"


def _documents():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _kind(kind):
    found = [d for _, d in _documents() if d["kind"] == kind]
    assert found, f"no {kind} in {K8S}"
    return found


def test_core_manifests_match_the_kubernetes_schemas():
    docs = _documents()
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService"} <= kinds
    checked = 0
    for name, doc in docs:
        if doc["apiVersion"].startswith("serving.kserve.io"):
            continue  # a CRD: checked below
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError on any mistake
        checked += 1
    assert checked >= 4
    # the validator does catch a mistake (the test would otherwise prove nothing)
    broken = dict(_kind("Service")[0])
    broken["spec"] = {**broken["spec"], "ports": [{"port": "eight thousand"}]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_inferenceservices_are_kserve_v1beta1_with_valid_pod_parts():
    for isvc in _kind("InferenceService"):
        assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["name"]
        predictor = isvc["spec"]["predictor"]
        assert ("containers" in predictor) != ("model" in predictor)
        if "model" in predictor:
            assert predictor["model"]["modelFormat"]["name"] == "triton"
            assert predictor["model"]["protocolVersion"] == "v2" and predictor["model"]["storageUri"]
            continue
        # the predictor's containers and volumes are a PodSpec's: validate them as one
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
               "spec": {"containers": predictor["containers"], "volumes": predictor.get("volumes", [])}}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        assert predictor["containers"][0]["name"] == "kserve-container"


def test_manifests_fit_the_server_they_deploy():
    from edge_deblur.cli import build_parser

    deployment = _kind("Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(["serve", *container["args"]])  # the CLI accepts them
    assert args.tokens == "/etc/edge-deblur/tokens.json"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/edge-deblur" in mounts and "/tmp" in mounts  # read-only root: the .proto compiles in /tmp
    for isvc in _kind("InferenceService"):
        for c in isvc["spec"]["predictor"].get("containers", []):
            build_parser().parse_args(["serve", *c["args"]])

    pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
    from edge_deblur.serve.engine import Engine
    from edge_deblur.serve.http import create_app
    from edge_deblur.serve.registry import ModelRegistry

    engine = Engine(ModelRegistry())
    paths = {route.path for route in create_app(engine).routes}
    engine.close()
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
    pod_annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/path"] in paths
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = _kind("Service")[0]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    hpa = _kind("HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")["pods"]["metric"]["name"]
    exposition = engine.metrics.exposition().decode()
    assert re.search(rf"^# TYPE {metric} gauge$", exposition, re.M), f"the server exports no gauge {metric}"
    rules = yaml.safe_load(_kind("ConfigMap")[0]["data"]["config.yaml"])
    assert any(metric in r["seriesQuery"] for r in rules["rules"])


def _config_fields(text: str) -> dict:
    """The scalar fields of a config.pbtxt, by name, first occurrence (the model's own name comes
    before its tensors'): enough to check what the export promises."""
    fields = {}
    for key, value in re.findall(r"(\w+):\s*\"?([\w.]+)\"?", text):
        fields.setdefault(key, value)
    return fields


def _engine_marker(text: str) -> str | None:
    """The ``edge_deblur_engine`` parameter of a config.pbtxt, parsed as Triton parses it (its
    ModelConfig protobuf) where tritonclient is installed, else by a pattern."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        found = re.search(r'key:\s*"edge_deblur_engine"\s*value:\s*\{\s*string_value:\s*"(\w+)"', text)
        return found and found.group(1)
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    return config.parameters["edge_deblur_engine"].string_value if "edge_deblur_engine" in config.parameters else None


def test_export_triton_repository(tmp_path, photo):
    pytest.importorskip("onnx", reason="onnx is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from edge_deblur.serve.export import OUTPUT, TritonExport, export_triton

    repo = export_triton(tmp_path / "repo", TritonExport(max_batch_size=4, max_queue=7, queue_delay_us=1500))
    model_dir = repo / "teacher"  # the network under the name a stream's offload calls
    text = (model_dir / "config.pbtxt").read_text()
    fields = _config_fields(text)
    assert fields["name"] == "teacher" and fields["backend"] == "onnxruntime" and fields["max_batch_size"] == "4"
    assert "dynamic_batching" in text and fields["max_queue_delay_microseconds"] == "1500"
    assert fields["max_queue_size"] == "7" and fields["timeout_action"] == "REJECT"
    assert "TYPE_UINT8" in text and f'"{OUTPUT}"' in text
    assert _engine_marker(text) == "network"  # a board may send frames here (partition.offload.ServerModel)

    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and session.get_outputs()[0].name == OUTPUT
    local = Deblurrer.load(MODELS_DIR / "teacher.onnx", threads=2)
    for h, w in [(64, 64), (61, 75)]:  # a size off the network's stride is padded and cropped inside the graph
        crop = np.ascontiguousarray(photo[100:100 + h, 100:100 + w])
        batch = np.stack([crop, crop[::-1].copy()])
        out = session.run(None, {"image": batch})[0]
        assert out.dtype == np.uint8 and out.shape == batch.shape
        assert np.abs(out[0].astype(int) - local(crop)).max() <= 1
        assert np.abs(out[1].astype(int) - local(batch[1])).max() <= 1
    with pytest.raises(EdgeDeblurError, match="not empty"):
        export_triton(tmp_path / "repo")
    assert not list((tmp_path / "repo").glob(".*partial"))


class _PbUtils:
    """The few names of Triton's ``triton_python_backend_utils`` an exported model.py uses, so the
    generated file itself runs here (the real backend in tests/test_serve_triton.py)."""

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        INTERNAL, INVALID_ARG = 1, 3  # Triton's codes (the default, 500; 400)

        def __init__(self, message, code=INTERNAL):
            self._message, self._code = message, code

        def message(self):
            return self._message

        def code(self):
            return self._code

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    class Request:
        def __init__(self, tensors, parameters):
            self.tensors, self._parameters = tensors, parameters

        def parameters(self):
            return json.dumps(self._parameters)

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return _PbUtils.Tensor(name, request.tensors[name])


def test_export_adds_the_split_and_kernel_models_and_their_model_py_runs(tmp_path, photo, monkeypatch):
    """The repository has ``deblur``, ``split`` and ``kernel`` beside ``teacher``: Python-backend
    configs with a batch of one and the queue policy, and a model.py that, run with Triton's backend
    API (a stand-in here), gives the split middle to the bit of the board's own, the blind engine's
    kernel and the auto engine's image; a bad request is an error response, not an exception."""
    pytest.importorskip("onnx", reason="onnx is not installed")
    import importlib.util
    import sys

    from edge_deblur.partition.split import Part, cut_student, pack, request_parameters, unpack
    from edge_deblur.serve.export import TritonExport, export_triton

    repo = export_triton(tmp_path / "repo", TritonExport(max_queue=5, queue_timeout_us=3_000_000))
    assert sorted(p.name for p in repo.iterdir()) == ["deblur", "kernel", "split", "teacher"]
    for name, (i_name, o_name) in {"split": ("features", "features"), "kernel": ("image", "kernel"),
                                   "deblur": ("image", "image")}.items():
        text = (repo / name / "config.pbtxt").read_text()
        fields = _config_fields(text)
        assert fields["name"] == name and fields["backend"] == "python" and fields["max_batch_size"] == "1"
        assert fields["max_queue_delay_microseconds"] == "0" and fields["max_queue_size"] == "5"
        assert fields["timeout_action"] == "REJECT" and fields["default_timeout_microseconds"] == "3000000"
        assert f'name: "{i_name}"' in text and f'name: "{o_name}"' in text
        assert _engine_marker(text) == {"deblur": "auto", "split": "split", "kernel": "kernel"}[name]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _PbUtils)

    def load(name):
        spec = importlib.util.spec_from_file_location(f"exported_{name}", repo / name / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.TritonPythonModel()
        model.initialize({})
        return model

    split = load("split")
    cut = cut_student("student-rpi5", 2)
    quant = Deblurrer.load("student-rpi5", threads=1).info.input_quant  # a real frame's codes, as the runtime makes them
    features = Part(cut.head, 1)(quant.quantize(photo[:128, :128].astype(np.float32) / 255)[None])[-1]
    request = _PbUtils.Request({"features": np.frombuffer(pack(features), np.uint8)[None]},
                               request_parameters(cut, features.shape))
    (response,) = split.execute([request])
    assert response.error is None and response.output_tensors[0].as_numpy().shape[0] == 1
    below = unpack(response.output_tensors[0].as_numpy()[0].tobytes(), (*features.shape[:3], cut.down_channels))
    np.testing.assert_array_equal(below, Part(cut.middle, 1)(features)[0])  # the board's own middle, to the bit
    bad = _PbUtils.Request({"features": np.frombuffer(pack(features), np.uint8)[None]},
                           {**request_parameters(cut, features.shape), "student": "0" * 16})
    (refused,) = split.execute([bad])
    assert refused.error is not None and "no student" in refused.error.message() and refused.output_tensors == []
    assert refused.error.code() == _PbUtils.TritonError.INVALID_ARG  # the request's fault: 400, not 500

    from edge_deblur.serve.registry import blind_estimator

    if blind_estimator() is None:
        pytest.skip("this installation has no edge_deblur.blind.estimate_kernel: the kernel model cannot run")
    kernel = load("kernel")
    gray = np.ascontiguousarray(photo[100:228, 100:228].mean(axis=2).astype(np.uint8))
    (answer,) = kernel.execute([_PbUtils.Request({"image": gray[None]}, {"kernel_size": 9})])
    k = answer.output_tensors[0].as_numpy()
    assert answer.error is None and k.shape == (1, 9, 9) and k.dtype == np.float32 and abs(k.sum() - 1) < 1e-3
    (too_big,) = kernel.execute([_PbUtils.Request({"image": np.zeros((1, 2048, 2048), np.uint8)}, {})])
    assert too_big.error is not None and "pixels" in too_big.error.message()

    from edge_deblur.blind import AutoDeblurrer, BlindConfig, BlindDeblurrer

    deblur = load("deblur")  # the auto engine, as edge-deblur serve's deblur (one thread)
    auto = AutoDeblurrer(BlindDeblurrer.load(BlindConfig(threads=1)), Deblurrer.load("teacher", threads=1))
    crop = np.ascontiguousarray(photo[200:264, 200:264])
    (image,) = deblur.execute([_PbUtils.Request({"image": crop[None]}, {})])
    assert image.error is None and image.output_tensors[0].as_numpy().shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(image.output_tensors[0].as_numpy()[0], auto(crop))
    (wrong,) = deblur.execute([_PbUtils.Request({"image": crop[None, ..., :2].copy()}, {})])
    assert wrong.error is not None and "shape" in wrong.error.message()
