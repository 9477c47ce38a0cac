"""Run by tests/test_serve_triton.py in its own venv (nvidia-pytriton, numpy<2, onnxruntime): the real
Triton server that PyTriton bundles, serving an `edge-deblur export triton` repository with each
model's max_batch_size, dynamic batching and queue policy from its config.pbtxt:

- `deblur`: its ONNX model through a Python callable that runs onnxruntime (the wheel has no ONNX
  Runtime backend);
- `split` and `kernel` (Python-backend models, `1/model.py`): the same two functions their model.py
  calls, `edge_deblur.serve.export.python_model` and `triton_predict`, from this checkout, when this
  venv has what they import (ai-edge-litert, OpenCV); else they are left out, saying why.

    python tests/serve_triton_bind.py REPO HTTP_PORT GRPC_PORT METRICS_PORT

Prints "skipped NAME: WHY" for a model it cannot serve, then "ready" once Triton serves, then serves
until stdin closes or it is terminated."""

from __future__ import annotations

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


def _python(name: str):
    """What the exported model.py runs, as a PyTriton callable (one request at a time: a batch of one)."""
    sys.path.insert(0, str(ROOT))
    from edge_deblur.serve.export import python_model, triton_predict

    model = python_model(name)

    def infer(requests):
        answers = []
        for request in requests:
            inputs = {t.name: np.asarray(request[t.name]) for t in model.inputs}
            outputs, error = triton_predict(model, inputs, dict(getattr(request, "parameters", None) or {}))
            if error is not None:
                raise ValueError(error)  # Triton answers it as an error response
            answers.append(outputs)
        return answers

    return infer


def main() -> None:
    repo, http_port, grpc_port, metrics_port = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    dirs = [repo] if (repo / "config.pbtxt").exists() else sorted(p for p in repo.iterdir() if (p / "config.pbtxt").exists())
    triton_config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                                 grpc_port=grpc_port, metrics_address="127.0.0.1", metrics_port=metrics_port,
                                 allow_gpu_metrics=False, exit_timeout_secs=5)
    with Triton(config=triton_config) as triton:
        for model_dir in dirs:
            spec = _config(model_dir)
            try:
                infer = _onnx(model_dir, spec["outputs"][0].name) if spec["backend"] == "onnxruntime" else _python(model_dir.name)
            except Exception as e:  # noqa: BLE001 - this venv lacks what the model imports: said, and left out
                print(f"skipped {model_dir.name}: {type(e).__name__}: {e}", flush=True)
                continue
            triton.bind(model_name=model_dir.name, infer_func=infer, inputs=spec["inputs"], outputs=spec["outputs"],
                        config=spec["config"])
        triton.run()
        print("ready", flush=True)
        done = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait()


if __name__ == "__main__":
    main()
