"""Putting a server together: models, limits, tokens, then HTTP (uvicorn) and gRPC on their ports.

``serve(ServeConfig(...))`` runs until interrupted; :class:`RunningServer` runs the same in
background threads on ephemeral ports (tests, benchmarks, a device and its server in one process).
TLS: give ``tls_cert`` and ``tls_key`` (PEM); uvicorn gets them as ``ssl_certfile``/``ssl_keyfile``
and gRPC as ``grpc.ssl_server_credentials``, so both ports speak TLS only.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import uvicorn

from .engine import Engine
from .grpc_service import InferenceServicer
from .http import create_app
from .limits import Limits
from .registry import DeblurModel, ModelRegistry, default_registry
from .tokens import TokenAuth


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # HTTP; 0: any free port
    grpc_port: int | None = 8001  # None: no gRPC
    tokens: Path | None = None  # token file; None: no authentication (a warning is printed)
    # the feed-forward network served as `teacher` (a stream's offload, ~0.2 s for 640x480) and the
    # auto engine's fallback: a bundled name or a .tflite/.onnx path
    model: str = "teacher"
    # what `deblur` (stills: the best quality here) runs: "auto" (the blind engine, checked, falling
    # back to `model`; seconds per frame), "teacher" (`model` itself) or another network's name/path
    deblur: str = "auto"
    threads: int | None = None  # CPU threads per model instance (default: cores / workers)
    limits: Limits = field(default_factory=Limits)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    model_dir: Path | None = None  # every .tflite/.onnx image-to-image model in it, served by its stem


def build_engine(config: ServeConfig, registry: ModelRegistry | None = None) -> Engine:
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.limits.workers)
    if registry is None:
        registry = default_registry(config.model, instances=config.limits.workers, threads=threads,
                                    max_pixels=config.limits.max_pixels, deblur=config.deblur)
        for path in sorted(Path(config.model_dir).glob("*")) if config.model_dir else []:
            if path.suffix in (".tflite", ".onnx") and path.stem not in registry.names():
                registry.add(DeblurModel(path, instances=config.limits.workers, threads=threads, name=path.stem,
                                         max_pixels=config.limits.max_pixels))
    auth = TokenAuth(config.tokens) if config.tokens else None
    return Engine(registry, config.limits, auth)


def _grpc_server(engine: Engine, config: ServeConfig, port: int) -> tuple[grpc.Server, int]:
    limits = config.limits
    options = [("grpc.max_receive_message_length", limits.max_request_bytes),
               ("grpc.max_send_message_length", max(limits.max_request_bytes, 4 * limits.max_pixels * 4))]
    threads = limits.workers + limits.max_queue + 4  # room to refuse (503) and to answer health probes
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="edge-deblur-grpc"),
                         handlers=[InferenceServicer(engine).handler()], options=options,
                         maximum_concurrent_rpcs=threads * 4)
    address = f"{config.host}:{port}"
    if config.tls_cert:
        credentials = grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"gRPC could not bind {address}")
    server.start()
    return server, bound


def _uvicorn(engine: Engine, config: ServeConfig) -> uvicorn.Server:
    tls = dict(ssl_certfile=str(config.tls_cert), ssl_keyfile=str(config.tls_key)) if config.tls_cert else {}
    return uvicorn.Server(uvicorn.Config(create_app(engine), log_level="warning", access_log=False,
                                         timeout_keep_alive=30, **tls))


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections wait in the backlog from now on, before uvicorn accepts them
    sock.set_inheritable(True)
    return sock


def serve(config: ServeConfig, on_ready=print) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM)."""
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ValueError("TLS needs both a certificate and its key")
    engine = build_engine(config)
    sock = _socket(config.host, config.port)
    grpc_server = None
    try:
        if config.grpc_port is not None:
            grpc_server, grpc_port = _grpc_server(engine, config, config.grpc_port)
        scheme = "https" if config.tls_cert else "http"
        on_ready(f"serving {', '.join(engine.registry.names())} on {scheme}://{config.host}:{sock.getsockname()[1]}"
                 + (f" and gRPC {config.host}:{grpc_port}" if grpc_server else "")
                 + ("" if config.tokens else " (no --tokens: anyone who can reach the port may use it)"))
        deblur = engine.registry.get("deblur")
        on_ready(f"deblur runs {'the auto engine (blind, falling back to ' + str(config.model) + ')' if deblur.platform == 'edge-deblur_python' else deblur.path.name}"
                 f", teacher runs {engine.registry.get('teacher').path.name}")
        _uvicorn(engine, config).run(sockets=[sock])
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=1).wait()
        engine.close()
        sock.close()


class RunningServer:
    """A server in background threads on free ports: ``with RunningServer(config) as s: s.http_url``."""

    def __init__(self, config: ServeConfig = ServeConfig(port=0, grpc_port=0), registry: ModelRegistry | None = None):
        self.config = config
        self.engine = build_engine(config, registry)
        self._sock = _socket(config.host, config.port)
        self.http_port = self._sock.getsockname()[1]
        self._grpc, self.grpc_port = (None, None) if config.grpc_port is None else _grpc_server(self.engine, config, config.grpc_port)
        self._uvicorn = _uvicorn(self.engine, config)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    def start(self, timeout: float = 20.0) -> "RunningServer":
        self._thread.start()
        stop = threading.Event()
        while not self._uvicorn.started:
            if not self._thread.is_alive() or stop.wait(0.02) or timeout <= 0:
                raise RuntimeError("the HTTP server did not start")
            timeout -= 0.02
        return self

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(10)
        if self._grpc is not None:
            self._grpc.stop(grace=0).wait()
        self.engine.close()
        self._sock.close()

    def __enter__(self) -> "RunningServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
