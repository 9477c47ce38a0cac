"""Run by tests/test_serve_triton.py in its own venv (nvidia-pytriton, numpy<2, onnxruntime): the real
Triton server that PyTriton bundles, serving the ONNX model of an `edge-deblur export triton`
repository through a Python callable (the wheel has no ONNX Runtime backend), with the repository's
dynamic batching and queue policy.

    python tests/serve_triton_bind.py REPO/deblur HTTP_PORT GRPC_PORT METRICS_PORT

Prints "ready" once Triton serves, then serves until stdin closes or it is terminated."""

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


def main() -> None:
    model_dir, http_port, grpc_port, metrics_port = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    config = (model_dir / "config.pbtxt").read_text()
    field = lambda name: int(re.search(rf"{name}:\s*(\d+)", config).group(1))
    output = re.search(r'output \[\s*\{\s*name:\s*"(\w+)"', config).group(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"])

    @batch
    def infer(image: np.ndarray):
        return {output: session.run(None, {"image": image})[0]}

    batcher = DynamicBatcher(
        max_queue_delay_microseconds=field("max_queue_delay_microseconds"),
        default_queue_policy=QueuePolicy(timeout_action=TimeoutAction.REJECT, max_queue_size=field("max_queue_size"),
                                         default_timeout_microseconds=field("default_timeout_microseconds"),
                                         allow_timeout_override=True))
    triton_config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                                 grpc_port=grpc_port, metrics_address="127.0.0.1", metrics_port=metrics_port,
                                 allow_gpu_metrics=False, exit_timeout_secs=5)
    with Triton(config=triton_config) as triton:
        triton.bind(model_name=model_dir.name, infer_func=infer,
                    inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))],
                    outputs=[Tensor(name=output, dtype=np.uint8, shape=(-1, -1, 3))],
                    config=ModelConfig(max_batch_size=field("max_batch_size"), batcher=batcher))
        triton.run()
        print("ready", flush=True)
        done = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait()


if __name__ == "__main__":
    main()
