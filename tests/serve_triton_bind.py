"""Run by tests/test_serve_triton.py in its own venv (nvidia-pytriton, numpy<2, onnxruntime): the real
Triton server that PyTriton bundles, serving an `edge-deblur export triton` repository with each
model's max_batch_size, dynamic batching and queue policy from its config.pbtxt:

- `teacher` (the ONNX network): through a Python callable bound with PyTriton that runs the
  exported model.onnx with onnxruntime (the wheel has no ONNX Runtime backend);
- `deblur`, `split` and `kernel` (Python-backend models): as exported, by Triton's own Python
  backend (the libtriton_python.so and stub the wheel bundles): the model's config.pbtxt (parsed
  as Triton's ModelConfig protobuf) and its `1/model.py` go to Triton's repository API (load with
  file overrides), and Triton runs that model.py's TritonPythonModel with the real
  `triton_python_backend_utils`; its stub imports `edge_deblur` from this checkout (PYTHONPATH),
  so this venv needs what the models import (ai-edge-litert, OpenCV): without them the models
  are left out, saying so; with them, a model that does not load is reported as failed.

    python tests/serve_triton_bind.py REPO HTTP_PORT GRPC_PORT METRICS_PORT

Prints (after "edge-deblur-bind: ", as Triton's log shares stdout) "skipped NAME: WHY" for a model
this venv cannot serve, "failed NAME: WHY" for one Triton would not load, then "ready" once Triton serves, then serves
until stdin closes or it is terminated."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor, TimeoutAction
from pytriton.triton import Triton, TritonConfig

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"TYPE_UINT8": np.uint8, "TYPE_FP32": np.float32}
MARK = "edge-deblur-bind: "  # before what this script says: Triton's own log shares its stdout
PYTHON_BACKEND_IMPORTS = ("cv2", "ai_edge_litert")  # what edge_deblur's models import beside numpy


def _config(model_dir: Path) -> dict:
    text = (model_dir / "config.pbtxt").read_text()
    field = lambda name: int(re.search(rf"{name}:\s*(-?\d+)", text).group(1))

    def tensor(kind):
        m = re.search(rf'{kind} \[\s*\{{\s*name:\s*"(\w+)",\s*data_type:\s*(\w+),\s*dims:\s*\[([^\]]*)\]', text)
        return Tensor(name=m.group(1), dtype=DTYPES[m.group(2)], shape=tuple(int(d) for d in m.group(3).split(",")))

    batcher = DynamicBatcher(
        max_queue_delay_microseconds=field("max_queue_delay_microseconds"),
        default_queue_policy=QueuePolicy(timeout_action=TimeoutAction.REJECT, max_queue_size=field("max_queue_size"),
                                         default_timeout_microseconds=field("default_timeout_microseconds"),
                                         allow_timeout_override=True))
    return {"inputs": [tensor("input")], "outputs": [tensor("output")],
            "config": ModelConfig(max_batch_size=field("max_batch_size"), batcher=batcher),
            "backend": re.search(r'backend:\s*"(\w+)"', text).group(1)}


def _onnx(model_dir: Path, output: str):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"])

    @batch
    def infer(image: np.ndarray):
        return {output: session.run(None, {"image": image})[0]}

    return infer


def _load_python_backend(http_port: int, token: str, model_dir: Path) -> None:
    """Triton's Python backend loads the exported model as it is: its config.pbtxt and 1/model.py."""
    import tritonclient.http as thttp
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    files = {f"file:{p.relative_to(model_dir).as_posix()}": p.read_bytes()
             for p in sorted(model_dir.rglob("*")) if p.is_file() and p.name != "config.pbtxt"}
    client = thttp.InferenceServerClient(f"127.0.0.1:{http_port}", network_timeout=300)
    try:  # pytriton guards the repository API with its access token
        client.load_model(model_dir.name, headers={"triton-access-token": token},
                          config=json_format.MessageToJson(config), files=files)
    finally:
        client.close()


def main() -> None:
    repo, http_port, grpc_port, metrics_port = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    dirs = [repo] if (repo / "config.pbtxt").exists() else sorted(p for p in repo.iterdir() if (p / "config.pbtxt").exists())
    triton_config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                                 grpc_port=grpc_port, metrics_address="127.0.0.1", metrics_port=metrics_port,
                                 allow_gpu_metrics=False, exit_timeout_secs=5)
    # the Python backend's stub (an embedded interpreter with this venv's packages) imports edge_deblur from here
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with Triton(config=triton_config) as triton:
        python_dirs = []
        for model_dir in dirs:
            spec = _config(model_dir)
            if spec["backend"] == "python":
                python_dirs.append(model_dir)
                continue
            triton.bind(model_name=model_dir.name, infer_func=_onnx(model_dir, spec["outputs"][0].name),
                        inputs=spec["inputs"], outputs=spec["outputs"], config=spec["config"])
        triton.run()
        missing = [m for m in PYTHON_BACKEND_IMPORTS if importlib.util.find_spec(m) is None]
        for model_dir in python_dirs:
            if missing:  # this venv lacks what the models import: said, and left out
                print(f"{MARK}skipped {model_dir.name}: this venv has no {', '.join(missing)}", flush=True)
                continue
            try:
                _load_python_backend(http_port, triton.get_access_token(), model_dir)
            except Exception as e:  # noqa: BLE001 - with all it imports, a model that does not load is a failure
                why = " ".join(str(e).split())[-600:]
                print(f"{MARK}failed {model_dir.name}: {type(e).__name__}: {why}", flush=True)
        print(f"{MARK}ready", flush=True)
        done = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait()


if __name__ == "__main__":
    main()
