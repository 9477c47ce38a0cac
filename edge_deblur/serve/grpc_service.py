"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``, with Triton's
``ModelConfig`` RPC beside it (a subset of Triton's ModelConfig message, its field numbers, so
tritonclient.grpc's ``get_model_config`` reads it; what ``GET /v2/models/{m}/config`` says on HTTP,
the ``edge_deblur_engine`` marker included).

The messages come from ``grpc_predict_v2.proto`` (beside this file), compiled when this module is
imported, by grpcio-tools' protoc (in the ``serve`` extra, run as a child process): no generated code is committed, so no
protoc version is pinned against the installed protobuf runtime (generated ``_pb2`` files check
it), and nothing a build can regenerate is in the repository. The handlers take the raw
request bytes and parse them themselves, so a malformed message is INVALID_ARGUMENT with a reason
(grpc's own deserializer would answer INTERNAL), and the error mapping is the HTTP side's.
"""

from __future__ import annotations

import math
import tempfile
from types import SimpleNamespace
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError

from .. import __version__
from .engine import Engine
from .http import EXTENSIONS, SERVER_NAME
from .limits import retry_after_header
from .protocol import ProtocolError, Tensor, array_from_bytes, array_from_list

PROTO = Path(__file__).with_name("grpc_predict_v2.proto")


def _compile_protos() -> SimpleNamespace:
    """The .proto's message classes, built in a private descriptor pool.

    grpcio-tools' protoc turns the .proto into a FileDescriptorSet (in a temporary folder); its
    messages are made in a pool of their own rather than protobuf's default one, because stock
    clients register the very same names there (tritonclient.grpc's ``inference.*``), and a device
    or a test that loads both in one process would otherwise fail with "duplicate symbol"."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "v2.pb"
        # In a child process: grpc_tools' protoc, run in a process that has already loaded another
        # protobuf C++ runtime (TensorFlow's, in the test suite), crashes with a segmentation fault.
        done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}",
                               f"--descriptor_set_out={out}", PROTO.name], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"protoc could not compile {PROTO} (status {done.returncode}): {done.stderr.strip()}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    messages = {}
    for f in files.file:
        for m in f.message_type:
            messages[m.name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{f.package}.{m.name}"))
    return SimpleNamespace(**messages)


pb = _compile_protos()
SERVICE = "inference.GRPCInferenceService"

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 408: grpc.StatusCode.DEADLINE_EXCEEDED, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# Which InferTensorContents field holds each datatype (FP16 has none: raw bytes only).
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents"}


def parameters(params) -> dict:
    out = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def decode_infer(message: bytes):
    """(ModelInferRequest, {name: array}); ProtocolError for anything malformed."""
    try:
        request = pb.ModelInferRequest.FromString(message)
    except DecodeError as e:
        raise ProtocolError(f"malformed ModelInferRequest: {e}") from None
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    if not request.inputs:
        raise ProtocolError("the request has no inputs")
    arrays = {}
    for i, spec in enumerate(request.inputs):
        if spec.name in arrays:
            raise ProtocolError(f"input '{spec.name}' is given twice")
        shape = tuple(spec.shape)
        if any(d < 0 for d in shape):
            raise ProtocolError(f"input '{spec.name}': negative dimension in shape {list(shape)}")
        if raw:
            arrays[spec.name] = array_from_bytes(raw[i], spec.datatype, shape, spec.name)
        else:
            field = _CONTENTS.get(spec.datatype)
            if field is None:
                raise ProtocolError(f"input '{spec.name}': datatype {spec.datatype!r} needs raw_input_contents")
            values = getattr(spec.contents, field)
            if len(values) != math.prod(shape):
                raise ProtocolError(f"input '{spec.name}': {len(values)} values for shape {list(shape)}")
            arrays[spec.name] = array_from_list(list(values), spec.datatype, shape, spec.name)
    return request, arrays


class InferenceServicer:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _abort(self, context, e: ProtocolError):
        if e.retry_after is not None:
            context.set_trailing_metadata((("retry-after", retry_after_header(e.retry_after)),))
        context.abort(STATUS_CODES.get(e.status, grpc.StatusCode.UNKNOWN), str(e))

    def _guard(self, context) -> None:
        metadata = dict(context.invocation_metadata())
        identity = self.engine.authenticate(metadata.get("authorization"), context.peer())
        self.engine.throttle(identity)

    def _call(self, fn):
        def handler(message: bytes, context):
            try:
                return fn(message, context)
            except ProtocolError as e:
                self._abort(context, e)
            except Exception as e:  # one failed request, never a dead server
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")
        return handler

    def server_live(self, message, context):
        return pb.ServerLiveResponse(live=True)

    def server_ready(self, message, context):
        return pb.ServerReadyResponse(ready=bool(self.engine.registry.names()))

    def model_ready(self, message, context):
        request = _parse(pb.ModelReadyRequest, message)
        self.engine.registry.get(request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    def server_metadata(self, message, context):
        self._guard(context)
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    def model_metadata(self, message, context):
        self._guard(context)
        request = _parse(pb.ModelMetadataRequest, message)
        meta = self.engine.registry.metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]])

    def model_config(self, message, context):
        """Triton's ModelConfig RPC: the registry's configuration (``GET /v2/models/{m}/config``'s
        JSON, Triton's field names) as the ModelConfig message, so both transports say the same
        (the ``edge_deblur_engine`` marker among its parameters)."""
        self._guard(context)
        request = _parse(pb.ModelConfigRequest, message)
        config = json_format.ParseDict(self.engine.registry.config(request.name, request.version), pb.ModelConfig())
        return pb.ModelConfigResponse(config=config)

    def model_infer(self, message, context):
        self._guard(context)
        request, arrays = decode_infer(message)
        model = self.engine.registry.get(request.model_name, request.model_version)
        requested = [o.name for o in request.outputs] or None
        self.engine.check_outputs(model, requested)
        params = parameters(request.parameters)
        timeout = self.engine.deadline(params.get("timeout"), context.time_remaining())
        outputs = self.engine.infer(model, arrays, params, timeout)
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for key, value in getattr(outputs, "parameters", {}).items():  # the model's own (deblur: path)
            field = ("bool_param" if isinstance(value, bool) else "int64_param" if isinstance(value, int)
                     else "double_param" if isinstance(value, float) else "string_param")
            setattr(response.parameters[key], field, value if field != "string_param" else str(value))
        for name in requested or [s.name for s in model.outputs]:
            t = Tensor(name, np.ascontiguousarray(outputs[name]))
            response.outputs.add(name=name, datatype=t.datatype, shape=list(t.array.shape))
            response.raw_output_contents.append(t.array.astype(t.array.dtype.newbyteorder("<"), copy=False).tobytes())
        return response

    def handler(self) -> grpc.GenericRpcHandler:
        serialize = lambda m: m.SerializeToString()
        methods = {"ServerLive": self.server_live, "ServerReady": self.server_ready, "ModelReady": self.model_ready,
                   "ServerMetadata": self.server_metadata, "ModelMetadata": self.model_metadata,
                   "ModelConfig": self.model_config, "ModelInfer": self.model_infer}
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(self._call(fn), request_deserializer=None,
                                                      response_serializer=serialize)
            for name, fn in methods.items()})


def _parse(cls, message: bytes):
    try:
        return cls.FromString(message)
    except DecodeError as e:
        raise ProtocolError(f"malformed {cls.__name__}: {e}") from None
