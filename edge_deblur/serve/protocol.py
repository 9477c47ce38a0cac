"""The KServe V2 / Open Inference Protocol's tensors, without any server around them.

A request is a JSON object whose ``inputs`` are tensors ``{name, datatype, shape, data}``; with the
binary tensor extension the JSON header is followed by the raw bytes of some tensors, each input
saying how many in ``parameters.binary_data_size`` and the header's length given by the HTTP header
``Inference-Header-Content-Length``. Outputs come back the same way, in binary when the request asks
for it (``parameters.binary_data`` on an output, or ``binary_data_output`` on the request).

Everything a client can get wrong raises :class:`ProtocolError` with the HTTP status and a message
naming the tensor and the problem; the transports (``http``, ``grpc``) map it to their own codes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

# The protocol's datatypes and numpy's, little-endian as the wire is. BYTES (length-prefixed strings)
# is not here: no model of this server takes strings, and refusing it is clearer than half-supporting it.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}


class ProtocolError(Exception):
    """A request the server refuses; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def datatype_of(dtype: np.dtype) -> str:
    try:
        return _NAMES[np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" else np.dtype(dtype)]
    except KeyError:
        raise ProtocolError(f"dtype {dtype} has no V2 datatype") from None


def dtype_of(datatype: str, tensor: str) -> np.dtype:
    if datatype == "BYTES":
        raise ProtocolError(f"input '{tensor}': datatype BYTES is not supported by this server")
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise ProtocolError(f"input '{tensor}': unknown datatype {datatype!r}") from None


def _shape(value, tensor: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ProtocolError(f"input '{tensor}': shape must be a list of non-negative integers, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Tensor:
    name: str
    array: np.ndarray

    @property
    def datatype(self) -> str:
        return datatype_of(self.array.dtype)


@dataclass
class InferRequest:
    """A decoded request: input arrays by name, the outputs asked for, whether each comes back binary."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: list[str] | None = None  # None: all of the model's outputs
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False
    parameters: dict = field(default_factory=dict)

    def wants_binary(self, name: str) -> bool:
        return self.binary_outputs.get(name, self.binary_default)


def array_from_bytes(raw: bytes | memoryview, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """The tensor held by ``raw``: exactly prod(shape) elements of ``datatype``, row-major."""
    dtype = dtype_of(datatype, tensor)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ProtocolError(f"input '{tensor}': {len(raw)} bytes of data for shape {list(shape)} {datatype} "
                            f"({expected} bytes expected)")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def array_from_list(data, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """A JSON ``data`` list (flat or nested, row-major) as an array of ``shape``."""
    dtype = dtype_of(datatype, tensor)
    if not isinstance(data, list):
        raise ProtocolError(f"input '{tensor}': 'data' must be a list, got {type(data).__name__}")
    try:
        flat = np.asarray(data).reshape(-1)
    except ValueError as e:  # ragged nesting
        raise ProtocolError(f"input '{tensor}': 'data' is not a regular array: {e}") from None
    if flat.size != math.prod(shape):
        raise ProtocolError(f"input '{tensor}': {flat.size} values for shape {list(shape)} "
                            f"({math.prod(shape)} expected)")
    if flat.size and flat.dtype.kind not in "biuf":
        raise ProtocolError(f"input '{tensor}': 'data' holds {flat.dtype.kind!r} values, not numbers")
    if dtype.kind in "iu" and flat.size:
        if flat.dtype.kind == "f" and not np.array_equal(flat, np.round(flat)):
            raise ProtocolError(f"input '{tensor}': non-integer values for datatype {datatype}")
        info = np.iinfo(dtype)
        if flat.min() < info.min or flat.max() > info.max:
            raise ProtocolError(f"input '{tensor}': values outside {datatype}'s range [{info.min}, {info.max}]")
    return flat.astype(dtype).reshape(shape)


def _parameters(obj: dict, where: str) -> dict:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise ProtocolError(f"{where}: 'parameters' must be an object")
    return params


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse an HTTP infer request body: JSON alone, or a JSON header of ``header_length`` bytes
    followed by the binary tensors in the order of the inputs that declare ``binary_data_size``."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes")
        header, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed JSON request header: {e}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the request must be a JSON object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("the request has no 'inputs' list")
    request_params = _parameters(doc, "request")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for spec in inputs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError("every input must be an object with a 'name'")
        name = spec["name"]
        if name in arrays:
            raise ProtocolError(f"input '{name}' is given twice")
        shape = _shape(spec.get("shape"), name)
        datatype = spec.get("datatype")
        size = _parameters(spec, f"input '{name}'").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input '{name}': binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise ProtocolError(f"input '{name}': binary_data_size {size} runs past the end of the body "
                                    f"({len(binary) - offset} bytes left): truncated request")
            arrays[name] = array_from_bytes(binary[offset: offset + size], datatype, shape, name)
            offset += size
        elif "data" in spec:
            arrays[name] = array_from_list(spec["data"], datatype, shape, name)
        else:
            raise ProtocolError(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes after the last binary input: the inputs' "
                            "binary_data_size do not add up to the body")
    outputs, binary_outputs = None, {}
    if "outputs" in doc:
        if not isinstance(doc["outputs"], list):
            raise ProtocolError("'outputs' must be a list")
        outputs = []
        for spec in doc["outputs"]:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise ProtocolError("every requested output must be an object with a 'name'")
            outputs.append(spec["name"])
            flag = _parameters(spec, f"output '{spec['name']}'").get("binary_data")
            if flag is not None:
                binary_outputs[spec["name"]] = bool(flag)
    request_id = doc.get("id")
    return InferRequest(arrays, id=str(request_id) if request_id is not None else None, outputs=outputs,
                        binary_outputs=binary_outputs, binary_default=bool(request_params.get("binary_data_output", False)),
                        parameters=request_params)


def encode_response(model: str, version: str, request: InferRequest, outputs: list[Tensor],
                    parameters: dict | None = None) -> tuple[bytes, int | None]:
    """The HTTP response body and, when some output is binary, the JSON header's length (for the
    ``Inference-Header-Content-Length`` header). ``parameters``: the response's own (V2's
    ``parameters`` object), left out when empty."""
    specs, blobs = [], []
    for t in outputs:
        arr = np.ascontiguousarray(t.array)
        spec = {"name": t.name, "datatype": t.datatype, "shape": list(arr.shape)}
        if request.wants_binary(t.name):
            blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            spec["data"] = arr.reshape(-1).tolist()
        specs.append(spec)
    doc = {"model_name": model, "model_version": version, "outputs": specs}
    if request.id is not None:
        doc["id"] = request.id
    if parameters:
        doc["parameters"] = dict(parameters)
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
