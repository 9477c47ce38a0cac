"""A small KServe V2 client for the board: HTTP/1.1 keep-alive, binary tensors, standard library only.

The board's runtime installs numpy, LiteRT and OpenCV and nothing else, so this is ``http.client``
rather than tritonclient. It speaks the binary tensor extension both ways (JSON tensors cost ~30x
the bytes and most of a frame's time in encoding), asks for no output by name and reads the model's
only output, so the same call works against ``edge-deblur serve`` (output ``image``) and a Triton
repository from ``edge-deblur export triton`` (output ``deblurred``).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
# A response body is timed from its first TIMED_AFTER bytes to its last: what arrives before (with
# the header, in one read of the socket) says nothing of the link's rate; bodies under MIN_TIMED
# bytes are not timed at all (a few milliseconds of transfer, below a thread switch's noise).
TIMED_AFTER = 16_384
MIN_TIMED = 32_768
_DTYPES = {"UINT8": np.uint8, "FP32": np.float32, "UINT16": np.uint16, "FP16": np.float16, "INT32": np.int32,
           "FP64": np.float64}


class RemoteError(Exception):
    """The server answered, but not with a result. ``status``: HTTP status; ``retry_after``: seconds."""

    def __init__(self, message: str, status: int, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class Unreachable(Exception):
    """No answer: refused, reset, or past the deadline (``timed_out``)."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


@dataclass
class Exchange:
    """One call's result and what it cost on the wire."""

    output: np.ndarray
    seconds: float
    bytes_up: int
    bytes_down: int


class V2Client:
    """``V2Client("http://host:8000", token=...).infer("deblur", "image", frame[None])``."""

    def __init__(self, url: str, token: str | None = None, ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url}: expected an http:// or https:// URL")
        self.host, self.port, self.https = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), parts.scheme == "https"
        self.base = parts.path.rstrip("/")
        self.token, self.ssl_context = token, ssl_context
        self._conn: http.client.HTTPConnection | None = None
        # response bodies' bytes after their first TIMED_AFTER, and the seconds those took to
        # arrive, summed: the link's downstream rate as real transfers see it (the planner takes
        # differences around a call; a round trip and the server's compute are not in them)
        self.timed_bytes = 0
        self.timed_seconds = 0.0

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        else:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, body: bytes | None, headers: dict, timeout: float):
        headers = dict(headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            reused = self._conn is not None and self._conn.sock is not None
            conn = self._connection(timeout)
            try:
                conn.request(method, self.base + path, body=body, headers=headers)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                if not reused:
                    raise
                # A kept-alive connection the server has since closed (uvicorn: after 5 s idle) fails
                # before any answer; what urllib3 does: the same request once on a fresh connection.
                self.close()
                conn = self._connection(timeout)
                conn.request(method, self.base + path, body=body, headers=headers)
                response = conn.getresponse()
            data = self._read_timed(response)
        except (socket.timeout, TimeoutError) as e:
            self.close()  # a late answer must not be read as the next frame's
            raise Unreachable(f"no answer within {timeout:.3g} s", timed_out=True) from e
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise Unreachable(f"{type(e).__name__}: {e}") from e
        if response.getheader("connection", "").lower() == "close":
            self.close()
        return response, data

    def _read_timed(self, response) -> bytes:
        """The body; a large one's tail (after TIMED_AFTER bytes) timed into ``timed_bytes`` and
        ``timed_seconds``. The server has computed by the time its header arrives, so the tail's
        time is the transfer's alone."""
        length = response.length
        if length is None or length < MIN_TIMED:
            return response.read()
        head = response.read(TIMED_AFTER)
        start = time.perf_counter()
        tail = response.read()
        seconds = time.perf_counter() - start
        if len(head) == TIMED_AFTER and tail and seconds > 0:
            self.timed_bytes += len(tail)
            self.timed_seconds += seconds
        return head + tail

    def ready(self, model: str, timeout: float = 2.0) -> bool:
        try:
            response, _ = self._request("GET", f"/v2/models/{model}/ready", None, {}, timeout)
        except Unreachable:
            return False
        return response.status == 200

    def metadata(self, model: str, timeout: float = 2.0) -> dict:
        """``GET /v2/models/{model}``: the model's metadata (name, platform, inputs, outputs)."""
        return self._get_json(f"/v2/models/{model}", timeout)

    def config(self, model: str, timeout: float = 2.0) -> dict:
        """``GET /v2/models/{model}/config``: the model's configuration (Triton's endpoint, beside
        V2; ``edge-deblur serve`` answers it too), as JSON: its ``parameters`` carry the
        ``edge_deblur_engine`` marker where the model has one."""
        return self._get_json(f"/v2/models/{model}/config", timeout)

    def _get_json(self, path: str, timeout: float) -> dict:
        response, data = self._request("GET", path, None, {}, timeout)
        if response.status != 200:
            try:
                message = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                message = data[:200].decode(errors="replace")
            raise RemoteError(f"{response.status}: {message}", response.status)
        return json.loads(data)

    def infer(self, model: str, input_name: str, array: np.ndarray, timeout: float, binary: bool = True,
              parameters: dict | None = None) -> Exchange:
        """Send one input tensor (and request ``parameters``), return the model's only (or first) output."""
        start = time.perf_counter()
        datatype = {np.dtype(v): k for k, v in _DTYPES.items()}[array.dtype]
        spec = {"name": input_name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = np.ascontiguousarray(array).tobytes()
            spec["parameters"] = {"binary_data_size": len(raw)}
            header = json.dumps({"inputs": [spec], "parameters": {**(parameters or {}), "binary_data_output": True}}).encode()
            body, headers = header + raw, {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
        else:
            spec["data"] = array.reshape(-1).tolist()
            body = json.dumps({"inputs": [spec], "parameters": parameters or {}}).encode()
            headers = {"Content-Type": "application/json"}
        response, data = self._request("POST", f"/v2/models/{model}/infer", body, headers, timeout)
        if response.status != 200:
            try:
                message = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                message = data[:200].decode(errors="replace")
            retry = response.getheader("retry-after")
            raise RemoteError(f"{response.status}: {message}", response.status,
                              float(retry) if retry and retry.replace(".", "", 1).isdigit() else None)
        length = response.getheader(HEADER_LENGTH)
        header = json.loads(data[: int(length)] if length else data)
        out = header["outputs"][0]
        dtype, shape = np.dtype(_DTYPES[out["datatype"]]), tuple(out["shape"])
        if "parameters" in out and "binary_data_size" in out["parameters"]:
            size = out["parameters"]["binary_data_size"]
            result = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=int(length)).reshape(shape)
        else:
            result = np.asarray(out["data"], dtype=dtype).reshape(shape)
        return Exchange(result, time.perf_counter() - start, len(body), len(data))
