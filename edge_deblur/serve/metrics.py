"""Prometheus metrics, per model and version, named as Triton names them where they mean the same.

Triton's names, same type and meaning (so Triton's dashboards and HPA rules apply unchanged):
``nv_inference_request_success``, ``nv_inference_request_failure`` (with Triton's ``reason``
label: REJECTED, CANCELED, BACKEND, OTHER), ``nv_inference_count``, ``nv_inference_exec_count``,
the cumulative microsecond counters ``nv_inference_request_duration_us``,
``nv_inference_queue_duration_us``, ``nv_inference_compute_infer_duration_us``, and the gauge
``nv_inference_pending_request_count`` (admitted, waiting for a worker).

Our own, because Triton has no metric of that meaning: histograms with millisecond buckets
``edge_deblur_request_duration_ms``, ``edge_deblur_queue_duration_ms``,
``edge_deblur_compute_duration_ms`` (Triton offers summaries, ``*_summary_us``, which cannot be
aggregated across replicas; histograms can), and the gauge ``edge_deblur_inflight_requests``
(admitted and not yet answered: waiting or computing), plus the counter ``edge_deblur_refused_requests_total`` by
HTTP status for refusals that reach no model (401, 403, 413, 429 before a model is known).
``edge_deblur_paths_total`` counts, per model, the path answered images took where the model says
one (``deblur``'s auto engine: ``blind``, ``network`` or ``input``).

Triton's counters carry no ``_total`` suffix; prometheus-client's Counter would add one, so they
are written out by :class:`_TritonCounters` itself.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

_COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (does not include cached requests)",
    "nv_inference_exec_count": "Number of model executions performed (does not include cached requests)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in microseconds",
}


class _TritonCounters:
    """Counters exposed under their exact names (no ``_total``), labelled model, version[, reason]."""

    def __init__(self):
        self._values: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._lock = threading.Lock()

    def inc(self, name: str, labels: tuple, amount: float = 1.0) -> None:
        with self._lock:
            self._values[name][labels] += amount

    def value(self, name: str, labels: tuple) -> float:
        with self._lock:
            return self._values[name].get(labels, 0.0)

    def exposition(self) -> str:
        """Prometheus text format, written here: prometheus-client names a counter family
        ``NAME_total`` in its HELP and TYPE lines, which would not match Triton's samples."""
        with self._lock:
            snapshot = {n: dict(v) for n, v in self._values.items()}
        lines = []
        for name, doc in _COUNTERS.items():
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter"]
            for labels, value in sorted(snapshot.get(name, {}).items()):
                keys = ("model", "version", "reason")[: len(labels)]
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(keys, labels))
                lines.append(f"{name}{{{text}}} {value!r}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ServerMetrics:
    """One server's metrics, in their own registry (several servers in one process do not mix)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.counters = _TritonCounters()
        labels = ["model", "version"]
        self.pending = Gauge("nv_inference_pending_request_count", "Instantaneous number of pending requests "
                             "awaiting execution per-model", labels, registry=self.registry)
        self.inflight = Gauge("edge_deblur_inflight_requests", "Requests admitted and not yet answered "
                              "(waiting or computing)", labels, registry=self.registry)
        histogram = lambda name, doc: Histogram(name, doc, labels, buckets=BUCKETS_MS, registry=self.registry)
        self.request_ms = histogram("edge_deblur_request_duration_ms", "Inference request duration, admission to answer, ms")
        self.queue_ms = histogram("edge_deblur_queue_duration_ms", "Time waiting for a worker, ms")
        self.compute_ms = histogram("edge_deblur_compute_duration_ms", "Model execution time, ms")
        self.paths = Counter("edge_deblur_paths", "Answered images by the path they took (deblur: blind, network, input)",
                             ["model", "version", "path"], registry=self.registry)
        self.refused = Counter("edge_deblur_refused_requests", "Requests refused before reaching a model, by HTTP status",
                             ["status"], registry=self.registry)

    def success(self, model: str, version: str, request_s: float, queue_s: float, compute_s: float) -> None:
        key = (model, version)
        self.counters.inc("nv_inference_request_success", key)
        self.counters.inc("nv_inference_count", key)
        self.counters.inc("nv_inference_exec_count", key)
        self.counters.inc("nv_inference_request_duration_us", key, request_s * 1e6)
        self.counters.inc("nv_inference_queue_duration_us", key, queue_s * 1e6)
        self.counters.inc("nv_inference_compute_infer_duration_us", key, compute_s * 1e6)
        self.request_ms.labels(model, version).observe(request_s * 1e3)
        self.queue_ms.labels(model, version).observe(queue_s * 1e3)
        self.compute_ms.labels(model, version).observe(compute_s * 1e3)

    def failure(self, model: str, version: str, reason: str) -> None:
        assert reason in FAILURE_REASONS, reason
        self.counters.inc("nv_inference_request_failure", (model, version, reason))

    def path(self, model: str, version: str, path: str) -> None:
        self.paths.labels(model, version, path).inc()

    def refusal(self, status: int) -> None:
        self.refused.labels(str(status)).inc()

    def exposition(self) -> bytes:
        return self.counters.exposition().encode() + generate_latest(self.registry)
