"""The Open Inference Protocol over HTTP/REST (FastAPI): health, metadata, infer, and ``/metrics``.

Health (``/v2/health/*``, ``/v2/models/{m}/ready``) and ``/metrics`` stay open for probes and
scrapers; server metadata (``/v2``), model metadata and infer need the bearer token when the server
has a token file. Every error is JSON ``{"error": "..."}`` with the status Triton would give.
"""

from __future__ import annotations

import asyncio
import json
import zlib

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .engine import Engine
from .limits import retry_after_header
from .metrics import CONTENT_TYPE
from .protocol import HEADER_LENGTH, ProtocolError, Tensor, decode_request, encode_response

SERVER_NAME = "edge-deblur"
EXTENSIONS = ["binary_tensor_data", "parameters"]


def error_response(e: ProtocolError) -> JSONResponse:
    headers = {"Retry-After": retry_after_header(e.retry_after)} if e.retry_after is not None else None
    return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to pass ``limit`` bytes, before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProtocolError(f"bad Content-Length {declared!r}")
        if int(declared) > limit:
            raise ProtocolError(f"request of {declared} bytes; this server takes at most {limit}", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request over {limit} bytes; this server takes at most {limit}", status=413)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):  # tritonclient's request_compression_algorithm
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as e:
            raise ProtocolError(f"body is not valid {encoding}: {e}") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise ProtocolError(f"request inflates past {limit} bytes; this server takes at most {limit}", status=413)
    elif encoding != "identity":
        raise ProtocolError(f"unsupported Content-Encoding {encoding!r} (identity, gzip, deflate)")
    return body


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ProtocolError(f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}")
    return int(value)


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="edge-deblur inference server", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request, e: ProtocolError):
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request, e: Exception):  # a bug must cost one request, never the server
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)

    def guard(request: Request) -> str:
        client = request.client.host if request.client else "unknown"
        identity = engine.authenticate(request.headers.get("authorization"), client)
        engine.throttle(identity)
        return identity

    @app.get("/v2/health/live")
    async def live():
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready():
        return Response(status_code=200 if engine.registry.names() else 503)

    @app.get("/v2")
    async def server_metadata(request: Request):
        guard(request)
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    @app.get("/v2/models/{model}/ready")
    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def model_ready(model: str, version: str | None = None):
        engine.registry.get(model, version)  # 404 when unknown
        return Response(status_code=200)

    @app.get("/v2/models/{model}")
    @app.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(request: Request, model: str, version: str | None = None):
        guard(request)
        return engine.registry.metadata(model, version)

    @app.get("/v2/models/{model}/config")
    @app.get("/v2/models/{model}/versions/{version}/config")
    async def model_config(request: Request, model: str, version: str | None = None):
        """Triton's model configuration endpoint (beside V2, not in it): the engine marker."""
        guard(request)
        return engine.registry.config(model, version)

    @app.post("/v2/models/{model}/infer")
    @app.post("/v2/models/{model}/versions/{version}/infer")
    async def infer(request: Request, model: str, version: str | None = None):
        guard(request)
        served = engine.registry.get(model, version)
        try:
            try:  # a client that trickles its body (slowloris) holds a connection, not the server
                body = await asyncio.wait_for(_read_body(request, engine.limits.max_request_bytes),
                                              engine.limits.timeout_s)
            except asyncio.TimeoutError:
                raise ProtocolError(f"request body not received within {engine.limits.timeout_s:g} s", status=408) from None
            header_length = _header_length(request)
            decoded = await asyncio.to_thread(decode_request, body, header_length)
            engine.check_outputs(served, decoded.outputs)
        except ProtocolError as e:
            if e.status == 400:
                engine.metrics.failure(served.name, served.version, "OTHER")
            else:
                engine.metrics.refusal(e.status)
            raise
        timeout = engine.deadline(decoded.parameters.get("timeout"))
        outputs = await engine.infer_async(served, decoded.inputs, decoded.parameters, timeout)
        names = decoded.outputs or [s.name for s in served.outputs]
        tensors = [Tensor(n, outputs[n]) for n in names]
        body, header_length = await asyncio.to_thread(encode_response, served.name, served.version, decoded, tensors,
                                                   getattr(outputs, "parameters", None))
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})

    @app.get("/metrics")
    async def metrics():
        return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE)

    return app


def json_error(body: bytes) -> str:
    """The ``error`` of an error body (for clients and tests)."""
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")
