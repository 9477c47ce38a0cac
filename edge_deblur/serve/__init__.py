"""``edge-deblur serve``: the KServe V2 / Open Inference Protocol over HTTP and gRPC.

An extra (``pip install 'edge-deblur[serve]'``): importing ``edge_deblur`` never imports this
package, and this module itself imports no server package until :func:`serve` or
:class:`RunningServer` is asked for. Layers, each its own module:

- ``protocol``: V2 tensors, JSON and the binary tensor extension, no server around them;
- ``registry``: the models served (``deblur``, ``kernel`` when the blind estimator exists);
- ``tokens``, ``limits``: bearer tokens stored as hashes; rate limits, queue bound;
- ``engine``: authenticate, admit, validate, compute, count, for any transport;
- ``http`` (FastAPI), ``grpc_service`` (grpcio): the two transports; ``metrics``: Prometheus;
- ``server``: putting them together; ``commands``: what the CLI's sub-commands call;
- ``export``: a Triton model repository for scale-out.
"""

from __future__ import annotations

MISSING = ("the server needs the 'serve' extra, which is not installed here ({}); "
           "pip install 'edge-deblur[serve]'")


def __getattr__(name: str):
    if name in ("serve", "ServeConfig", "RunningServer"):
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
