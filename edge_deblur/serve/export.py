"""``edge-deblur export triton DIR``: a Triton model repository serving what ``edge-deblur serve`` serves.

The feed-forward network is exported as ``teacher`` (``--name``), the name ``edge-deblur serve``
gives it and the one a board's stream offloads to (``partition.OffloadConfig``); ``deblur``, the
server's best quality for stills (the auto engine: blind estimation, checked, falling back to the
network; seconds per frame), is a Python-backend model like ``split`` and ``kernel`` below.

Triton's ONNX Runtime backend runs the network, so the frame's 8-bit handling that
:class:`edge_deblur.model.Deblurrer` does in numpy is written into the graph around the bundled
float teacher: UINT8 NHWC in, /255, reflect-padded to the network's stride, the network, cropped
back, clipped to [0, 1], x255, rounded, UINT8 out (the same arithmetic as one window of the local
runtime). An ONNX graph cannot give its input and output one name, so the repository's output is
``deblurred`` where ``edge-deblur serve`` says ``image``; a client that reads the model's only
output (as ``edge_deblur.partition`` does) works with both.

``config.pbtxt`` turns on dynamic batching (requests of one frame size are batched, up to
``max_batch_size``, waiting at most ``queue_delay_us``) with a queue policy that rejects what
waits longer than ``queue_timeout_us`` or finds ``max_queue`` requests waiting: the same
back-pressure as ``edge-deblur serve``'s 503. Needs ``onnx`` (the convert or test extra).

Beside ``teacher``, the repository gets the other models the board calls (``extra``):

- ``deblur``: the auto engine (``edge_deblur.blind.AutoDeblurrer``), what ``edge-deblur deblur
  --server`` sends stills to; Triton's Python backend gives it no response parameters, so unlike
  ``edge-deblur serve`` it does not say the path an image took;
- ``split``: the middle stages of the bundled INT8 students (the board's ``split`` mode), and
- ``kernel``: the blind engine's kernel estimate of a gray keyframe crop (the ``kernel`` mode),

as Triton Python-backend models (``1/model.py``): their work is LiteRT and numpy code, not a graph
Triton's ONNX Runtime backend could run (the split middle is an INT8 ``.tflite`` cut; Triton's
TFLite backend is arm64-only; the kernel estimate is iterative Python), so the Python backend's
stub imports this package and runs the same ``AutoDeblurModel`` / ``SplitModel`` / ``KernelModel``
as ``edge-deblur serve`` (``pip install edge-deblur`` in the Python that Triton's Python backend
uses). None batches: an auto engine's frame is seconds of iterations of its own, split's features are zlib bytes of a length of their own per frame, and an estimate is
one crop's iterations, so nothing is gained by stacking requests. Triton's queue (its bound and
timeout, the 503 of a full server) is part of its dynamic batcher, which needs a batch dimension
(Triton issue 6368), so both have ``max_batch_size: 1`` with a dynamic batcher that waits for
nothing (``max_queue_delay_microseconds: 0``) and the same queue policy as ``deblur``; their
tensors then carry a leading batch dimension of 1 (an image ``[1, H, W, 3]``, features ``[1, n]``,
a crop ``[1, H, W]``, the kernel ``[1, k, k]``), which the board's modes send and read.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgeDeblurError
from ..images import AtomicFile
from ..model import read_sidecar, resolve_model
from .registry import ENGINE_KEY

OUTPUT = "deblurred"


@dataclass(frozen=True)
class TritonExport:
    model: str = "teacher"  # a bundled .onnx model's name or an .onnx file: a float NHWC [0, 1] network
    name: str = "teacher"  # the network's name in the repository: what a stream's offload calls
    max_batch_size: int = 4
    queue_delay_us: int = 2000
    max_queue: int = 16
    queue_timeout_us: int = 5_000_000
    instances: int = 1
    extra: tuple[str, ...] = ("deblur", "split", "kernel")  # Python-backend models beside it (PYTHON_MODELS)


# the marker each config.pbtxt carries (parameters { key: "edge_deblur_engine" ... }), which
# ``edge-deblur serve`` reports as well (GET /v2/models/{m}/config): what runs there, so that a board
# tells the auto engine (seconds a frame, stills) from a network (frames) by what the model says it
# is, not by its name or backend (``partition.offload.ServerModel``)
ENGINES = {"deblur": "auto", "split": "split", "kernel": "kernel"}  # the network's own: "network"


def engine_parameter(engine: str) -> str:
    """The config.pbtxt lines of the engine marker."""
    return f'parameters {{\n  key: "{ENGINE_KEY}"\n  value: {{ string_value: "{engine}" }}\n}}\n'


# name -> (input, datatype, dims without the batch dimension, output, datatype, dims)
PYTHON_MODELS = {
    "deblur": ("image", "TYPE_UINT8", "[ -1, -1, 3 ]", "image", "TYPE_UINT8", "[ -1, -1, 3 ]"),
    "split": ("features", "TYPE_UINT8", "[ -1 ]", "features", "TYPE_UINT8", "[ -1 ]"),
    "kernel": ("image", "TYPE_UINT8", "[ -1, -1 ]", "kernel", "TYPE_FP32", "[ -1, -1 ]"),
}

MODEL_PY = '''"""Triton Python-backend model `{name}`, written by `edge-deblur export triton`: the same model as
`edge-deblur serve`'s `{name}` (edge_deblur.serve.registry), run by this package in Triton's Python
backend; the request's batch dimension of 1 is taken off and put back (edge_deblur.serve.export)."""

import json

import triton_python_backend_utils as pb_utils


def _invalid(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)  # where this Triton has error codes
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    def initialize(self, args):
        from edge_deblur.serve.export import python_model

        self.model = python_model("{name}")

    def execute(self, requests):
        from edge_deblur.serve.export import triton_predict

        responses = []
        for request in requests:
            inputs = {{t.name: pb_utils.get_input_tensor_by_name(request, t.name).as_numpy() for t in self.model.inputs}}
            outputs, error = triton_predict(self.model, inputs, json.loads(request.parameters() or "{{}}"))
            if error is not None:  # the request's fault: 400 as edge-deblur serve answers (Triton's default is 500)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_invalid(error)))
            else:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()]))
        return responses
'''


def python_model(name: str, threads: int = 1):
    """The ``edge-deblur serve`` model that the exported Python-backend model ``name`` runs."""
    from .registry import AutoDeblurModel, KernelModel, SplitModel, blind_available, blind_estimator, kernel_selector

    if name == "deblur":
        if not blind_available():
            raise EdgeDeblurError("the deblur model needs edge_deblur.blind.AutoDeblurrer in this installation")
        return AutoDeblurModel(threads=threads)
    if name == "split":
        return SplitModel(threads=threads)
    if name == "kernel":
        estimate = blind_estimator()
        if estimate is None:
            raise EdgeDeblurError("the kernel model needs edge_deblur.blind.estimate_kernel in this installation")
        return KernelModel(estimate, selector=kernel_selector(threads=threads) if blind_available() else None)
    raise EdgeDeblurError(f"no Python-backend model {name!r} (known: {', '.join(PYTHON_MODELS)})")


def triton_predict(model, inputs: dict[str, np.ndarray], parameters: dict) -> tuple[dict[str, np.ndarray], str | None]:
    """One Triton request (tensors with the batch dimension of ``max_batch_size: 1``) through an
    ``edge-deblur serve`` model: (outputs with the batch dimension, None), or ({}, the error a
    bad request gets, as ``edge-deblur serve`` words it). Triton has checked names, datatypes and
    ranks against config.pbtxt; the model checks the rest (pixel limits, the split features'
    student, cut and scale)."""
    from .protocol import ProtocolError
    from .registry import check_inputs

    try:
        if any(a.ndim < 1 or a.shape[0] != 1 for a in inputs.values()):
            raise ProtocolError(f"model '{model.name}': one request is one item (batch dimension 1)")
        # the serve model's own shapes: split takes [1, n] as it is; kernel's crop [1, H, W] as well
        check_inputs(model, inputs, getattr(model, "max_pixels", 12_000_000))
        out = model.predict(inputs, parameters)
    except ProtocolError as e:
        return {}, str(e)
    # split answers a [1, n] request in [1, m] already, deblur a [1, H, W, 3] one in kind; the
    # kernel [k, k] gets its batch dimension
    return {k: v if model.name in ("split", "deblur") else v[None] for k, v in out.items()}, None


def _batching_and_instances(spec: TritonExport, queue_delay_us: int) -> str:
    """The end every config.pbtxt here shares: the dynamic batcher (waiting ``queue_delay_us`` to
    fill a batch) with ``spec``'s rejecting queue policy, the CPU instances, the version policy."""
    return f"""dynamic_batching {{
  max_queue_delay_microseconds: {queue_delay_us}
  default_queue_policy {{
    timeout_action: REJECT
    default_timeout_microseconds: {spec.queue_timeout_us}
    allow_timeout_override: true
    max_queue_size: {spec.max_queue}
  }}
}}
instance_group [
  {{ count: {spec.instances}, kind: KIND_CPU }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


def python_config_pbtxt(name: str, spec: TritonExport) -> str:
    """config.pbtxt of a Python-backend model: a batch of one, the queue policy of ``spec``."""
    i_name, i_type, i_dims, o_name, o_type, o_dims = PYTHON_MODELS[name]
    return f"""name: "{name}"
backend: "python"
max_batch_size: 1
input [
  {{ name: "{i_name}", data_type: {i_type}, dims: {i_dims} }}
]
output [
  {{ name: "{o_name}", data_type: {o_type}, dims: {o_dims} }}
]
""" + engine_parameter(ENGINES[name]) + _batching_and_instances(spec, 0)


def _onnx_path(model: str) -> Path:
    path = resolve_model(model)
    if path.suffix != ".onnx":
        onnx_twin = path.with_suffix(".onnx")
        if not onnx_twin.exists():
            raise EdgeDeblurError(f"{path}: Triton runs ONNX here (its TFLite backend is arm64-only); give an .onnx model")
        path = onnx_twin
    return path


def uint8_wrapper(network, multiple: int):
    """The ModelProto: ``network`` (float NHWC [0, 1] in and out) inside the 8-bit pre/post steps."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = network.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise EdgeDeblurError("the network must have one input and one output")
    net_in, net_out = graph.input[0].name, graph.output[0].name
    inner_in = "edge_deblur_net_input"
    nodes = []
    for node in graph.node:  # feed the network from our padded tensor
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = [inner_in if i == net_in else i for i in node.input]
        nodes.append(node)
    const = lambda name, value: numpy_helper.from_array(np.asarray(value), name)
    inits = [const("ed_scale_in", np.float32(1 / 255)), const("ed_scale_out", np.float32(255)),
             const("ed_zero", np.float32(0)), const("ed_one", np.float32(1)), const("ed_m", np.array([multiple], np.int64)),
             const("ed_hw_start", np.array([1], np.int64)), const("ed_hw_end", np.array([3], np.int64)),
             const("ed_zeros5", np.zeros(5, np.int64)), const("ed_zero1", np.zeros(1, np.int64)),
             const("ed_crop_start", np.zeros(2, np.int64)), const("ed_crop_axes", np.array([1, 2], np.int64))]
    n = helper.make_node
    pre = [
        n("Cast", ["image"], ["ed_f"], to=TensorProto.FLOAT),
        n("Mul", ["ed_f", "ed_scale_in"], ["ed_x"]),
        n("Shape", ["ed_x"], ["ed_shape"]),
        n("Slice", ["ed_shape", "ed_hw_start", "ed_hw_end"], ["ed_hw"]),  # [H, W]
        n("Mod", ["ed_hw", "ed_m"], ["ed_rem"]),
        n("Sub", ["ed_m", "ed_rem"], ["ed_gap"]),
        n("Mod", ["ed_gap", "ed_m"], ["ed_pad_hw"]),  # (m - H % m) % m, likewise W
        n("Concat", ["ed_zeros5", "ed_pad_hw", "ed_zero1"], ["ed_pads"], axis=0),  # begins N,H,W,C = 0; ends N=0, H, W, C=0
        n("Pad", ["ed_x", "ed_pads"], [inner_in], mode="reflect"),
    ]
    post = [
        n("Slice", [net_out, "ed_crop_start", "ed_hw", "ed_crop_axes"], ["ed_crop"]),
        n("Clip", ["ed_crop", "ed_zero", "ed_one"], ["ed_clip"]),
        n("Mul", ["ed_clip", "ed_scale_out"], ["ed_y"]),
        n("Round", ["ed_y"], ["ed_round"]),
        n("Cast", ["ed_round"], [OUTPUT], to=TensorProto.UINT8),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", "height", "width", 3])
    out = helper.make_tensor_value_info(OUTPUT, TensorProto.UINT8, ["batch", "height", "width", 3])
    wrapped = helper.make_graph(pre + nodes + post, "edge_deblur_uint8", [image], [out],
                                initializer=list(graph.initializer) + inits, value_info=list(graph.value_info))
    model = helper.make_model(wrapped, opset_imports=list(network.opset_import), producer_name="edge-deblur")
    model.ir_version = network.ir_version
    onnx.checker.check_model(model)
    return model


def config_pbtxt(spec: TritonExport) -> str:
    """Triton's model configuration (protobuf text format)."""
    return f"""name: "{spec.name}"
backend: "onnxruntime"
max_batch_size: {spec.max_batch_size}
input [
  {{ name: "image", data_type: TYPE_UINT8, dims: [ -1, -1, 3 ] }}
]
output [
  {{ name: "{OUTPUT}", data_type: TYPE_UINT8, dims: [ -1, -1, 3 ] }}
]
""" + engine_parameter("network") + _batching_and_instances(spec, spec.queue_delay_us)


def export_triton(directory: str | Path, spec: TritonExport = TritonExport()) -> Path:
    """Write ``directory/<name>/config.pbtxt`` and ``directory/<name>/1/model.onnx``, and for each
    of ``spec.extra`` its ``config.pbtxt`` and ``1/model.py``; returns ``directory``. Each model is
    written to a temporary folder and moved into place: nothing half-written."""
    try:
        import onnx
    except ImportError as e:
        raise EdgeDeblurError("edge-deblur export triton needs onnx: pip install 'edge-deblur[convert]' "
                              "(or the test extra)") from e
    if spec.max_batch_size < 1 or spec.max_queue < 1 or spec.instances < 1:
        raise EdgeDeblurError("max batch size, queue size and instances must be at least 1")
    unknown = sorted(set(spec.extra) - set(PYTHON_MODELS))
    if unknown:
        raise EdgeDeblurError(f"no exportable model {', '.join(map(repr, unknown))} (known: {', '.join(PYTHON_MODELS)})")
    if spec.name in spec.extra:
        raise EdgeDeblurError(f"the network's name {spec.name!r} is also a Python-backend model's; choose another --name")
    source = _onnx_path(spec.model)
    sidecar = read_sidecar(source)
    if sidecar.get("input_range", [0, 1])[1] != 1:
        raise EdgeDeblurError(f"{source}: the wrapper expects a network on [0, 1] values, the sidecar says {sidecar['input_range']}")
    model = uint8_wrapper(onnx.load(str(source)), int(sidecar.get("multiple", 16)))
    root = Path(directory)
    for name in (spec.name, *spec.extra):
        if (root / name).exists() and any((root / name).iterdir()):
            raise EdgeDeblurError(f"{root / name} exists and is not empty; remove it or choose another folder")
    _write_model(root, spec.name, lambda staging: _write_deblur(staging, model, spec, source, sidecar))
    for name in spec.extra:
        _write_model(root, name, lambda staging, name=name: _write_python(staging, name, spec))
    return root


def _write_deblur(staging: Path, model, spec: TritonExport, source: Path, sidecar: dict) -> None:
    import onnx

    onnx.save(model, str(staging / "1" / "model.onnx"))
    (staging / "config.pbtxt").write_text(config_pbtxt(spec))
    with AtomicFile(staging / "source.json") as tmp:
        tmp.write_text(json.dumps({"source": source.name, "multiple": sidecar.get("multiple", 16),
                                   "output": OUTPUT}, indent=1))


def _write_python(staging: Path, name: str, spec: TritonExport) -> None:
    (staging / "1" / "model.py").write_text(MODEL_PY.format(name=name))
    (staging / "config.pbtxt").write_text(python_config_pbtxt(name, spec))


def _write_model(root: Path, name: str, write) -> None:
    """``write(staging)`` into a temporary folder, then moved to ``root/name``: nothing half-written."""
    target = root / name
    staging = root / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "1").mkdir(parents=True)
    try:
        write(staging)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
