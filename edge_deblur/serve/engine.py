"""The transport-free part of a request: authenticate, rate-limit, admit, validate, compute, count.

HTTP and gRPC handlers decode their wire format into arrays and call :meth:`Engine.infer` (or
:meth:`Engine.infer_async` from an event loop); everything they refuse is a ``ProtocolError``.
Models run on ``workers`` threads (onnxruntime and LiteRT release the GIL while they compute);
a request waits for a worker at most until its deadline, and one still waiting then is dropped
from the queue without being computed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass

import numpy as np

from .limits import Admission, Limits, RateLimiter
from .metrics import ServerMetrics
from .protocol import ProtocolError
from .registry import ModelRegistry, check_inputs
from .tokens import TokenAuth


@dataclass
class _Timing:
    admitted: float
    started: float | None = None
    finished: float | None = None


class Engine:
    def __init__(self, registry: ModelRegistry, limits: Limits = Limits(), auth: TokenAuth | None = None,
                 metrics: ServerMetrics | None = None):
        self.registry, self.limits, self.auth = registry, limits, auth
        self.metrics = metrics or ServerMetrics()
        self.rate = RateLimiter(limits.rate, limits.burst)
        self.admission = Admission(limits.workers, limits.max_queue)
        self.pool = concurrent.futures.ThreadPoolExecutor(limits.workers, thread_name_prefix="edge-deblur-model")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- before any work -------------------------------------------------------------------------
    def authenticate(self, authorization: str | None, client: str) -> str:
        """The client's identity for rate limits: its token's name, or its address without tokens."""
        try:
            return f"token:{self.auth.check(authorization)}" if self.auth else f"addr:{client}"
        except ProtocolError as e:
            self.metrics.refusal(e.status)
            raise

    def throttle(self, identity: str) -> None:
        try:
            self.rate.take(identity)
        except ProtocolError as e:
            self.metrics.refusal(e.status)
            raise

    def deadline(self, requested_us=None, remaining_s: float | None = None) -> float:
        """Seconds this request may take: the server's limit, or less if the client asks (Triton's
        ``timeout`` parameter in microseconds, or a gRPC deadline)."""
        limit = self.limits.timeout_s
        if isinstance(requested_us, (int, float)) and not isinstance(requested_us, bool) and requested_us > 0:
            limit = min(limit, requested_us / 1e6)
        if remaining_s is not None:
            limit = min(limit, max(0.0, remaining_s))
        return limit

    # -- the work ----------------------------------------------------------------------------------
    def _submit(self, model, inputs: dict[str, np.ndarray], parameters: dict):
        key = (model.name, model.version)
        try:
            check_inputs(model, inputs, self.limits.max_pixels)
        except ProtocolError:
            self.metrics.failure(*key, "OTHER")
            raise
        try:
            self.admission.enter()
        except ProtocolError:
            self.metrics.failure(*key, "REJECTED")
            raise
        timing = _Timing(time.perf_counter())
        self.metrics.pending.labels(*key).inc()
        self.metrics.inflight.labels(*key).inc()

        def work():
            timing.started = time.perf_counter()
            self.metrics.pending.labels(*key).dec()
            try:
                return model.predict(inputs, parameters)
            finally:
                timing.finished = time.perf_counter()

        future = self.pool.submit(work)

        def done(f):
            self.admission.leave()
            self.metrics.inflight.labels(*key).dec()
            if timing.started is None:  # cancelled while waiting: never left the queue
                self.metrics.pending.labels(*key).dec()

        future.add_done_callback(done)
        return future, timing

    def _result(self, model, future, timing: _Timing, timeout: float):
        key = (model.name, model.version)
        try:
            outputs = future.result()
        except concurrent.futures.CancelledError:
            self.metrics.failure(*key, "CANCELED")
            raise ProtocolError(f"model '{model.name}': timed out after {timeout:.3g} s waiting for a worker", status=504) from None
        except ProtocolError:
            self.metrics.failure(*key, "OTHER")
            raise
        except Exception as e:  # the model failed: the request fails, the server goes on
            self.metrics.failure(*key, "BACKEND")
            raise ProtocolError(f"model '{model.name}' failed: {type(e).__name__}: {e}", status=500) from None
        now = time.perf_counter()
        self.metrics.success(model.name, model.version, now - timing.admitted, timing.started - timing.admitted,
                             timing.finished - timing.started)
        path = getattr(outputs, "parameters", {}).get("path")
        if path is not None:  # deblur's: which way the image went (blind, network, input)
            self.metrics.path(model.name, model.version, str(path))
        return outputs

    def _timed_out(self, model, future, timeout: float):
        if not future.cancel():  # already computing: let it finish, its answer is dropped
            self.metrics.failure(model.name, model.version, "CANCELED")
            raise ProtocolError(f"model '{model.name}': no answer within {timeout:.3g} s", status=504)
        return self._result(model, future, None, timeout)

    def infer(self, model, inputs: dict[str, np.ndarray], parameters: dict, timeout: float) -> dict[str, np.ndarray]:
        future, timing = self._submit(model, inputs, parameters)
        finished, _ = concurrent.futures.wait([future], timeout=timeout)
        if not finished:
            self._timed_out(model, future, timeout)
        return self._result(model, future, timing, timeout)

    async def infer_async(self, model, inputs: dict[str, np.ndarray], parameters: dict, timeout: float) -> dict[str, np.ndarray]:
        future, timing = self._submit(model, inputs, parameters)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except asyncio.TimeoutError:
            self._timed_out(model, future, timeout)
        except Exception:
            pass  # the model's own error: reported by _result
        return self._result(model, future, timing, timeout)

    def check_outputs(self, model, requested: list[str] | None) -> None:
        if requested is None:
            return
        known = {s.name for s in model.outputs}
        for name in requested:
            if name not in known:
                self.metrics.failure(model.name, model.version, "OTHER")
                raise ProtocolError(f"model '{model.name}' has no output '{name}' (outputs: {', '.join(sorted(known))})")
