"""The ``serve``, ``token`` and ``export`` sub-commands: argument parsing and thin handlers.

Only the standard library is imported here, so ``edge-deblur --help`` works without the ``serve``
extra; each handler imports what it needs and says which extra is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import EdgeDeblurError
from . import MISSING


def cmd_serve(args) -> int:
    try:
        from .limits import Limits
        from .server import ServeConfig, serve
    except ImportError as e:
        raise EdgeDeblurError(MISSING.format(e)) from e
    if bool(args.tls_cert) != bool(args.tls_key):
        raise EdgeDeblurError("--tls-cert and --tls-key go together")
    limits = Limits(max_request_bytes=int(args.max_request_mb * (1 << 20)), max_pixels=args.max_pixels,
                    workers=args.workers, max_queue=args.max_queue, timeout_s=args.timeout, rate=args.rate,
                    burst=args.burst)
    config = ServeConfig(host=args.host, port=args.port, grpc_port=None if args.grpc_port < 0 else args.grpc_port,
                         tokens=Path(args.tokens) if args.tokens else None, model=args.model, deblur=args.deblur,
                         threads=args.threads,
                         limits=limits, tls_cert=args.tls_cert, tls_key=args.tls_key,
                         model_dir=Path(args.model_dir) if args.model_dir else None)
    serve(config, on_ready=lambda line: print(line, flush=True))
    return 0


def cmd_token(args) -> int:
    from .tokens import add_token, read_tokens, revoke_token

    if args.action == "add":
        token = add_token(args.tokens, args.name)
        print(token, flush=True)  # alone on stdout: `token add NAME --tokens F > NAME.token` keeps just the token
        print(f"token '{args.name}' added to {args.tokens}; it is shown only now (the file keeps its hash)",
              file=sys.stderr)
    elif args.action == "revoke":
        count = revoke_token(args.tokens, args.name)
        print(f"revoked {count} token(s) named '{args.name}' in {args.tokens}")
    else:
        for r in read_tokens(args.tokens):
            state = f"revoked {time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.revoked))} UTC" if r.revoked else "live"
            print(f"{r.name}\tcreated {time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.created))} UTC\t{state}")
    return 0


def cmd_export(args) -> int:
    from .export import TritonExport, export_triton

    out = export_triton(args.dir, TritonExport(model=args.model, name=args.name, max_batch_size=args.max_batch,
                                              queue_delay_us=args.queue_delay_us, max_queue=args.max_queue,
                                              queue_timeout_us=args.queue_timeout_us, instances=args.instances,
                                              extra=tuple(args.extra)))
    models = ", ".join(f"'{m}'" for m in (args.name, *args.extra))
    print(f"wrote a Triton model repository to {out} (models {models}); run: tritonserver --model-repository {out}"
          + (f" ({', '.join(args.extra)} run in Triton's Python backend: install edge-deblur in its Python)" if args.extra else ""))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over the KServe V2 protocol (HTTP and gRPC; needs the 'serve' extra)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (0: any free port)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (0: any free port, -1: no gRPC)")
    p.add_argument("--tokens", help="token file (edge-deblur token add): require 'Authorization: Bearer TOKEN'")
    p.add_argument("--model", default="teacher",
                   help="the feed-forward network served as 'teacher' (what a stream's offload calls, ~0.2 s for "
                        "640x480) and the auto engine's fallback: a bundled model or a .tflite/.onnx file (default: teacher)")
    p.add_argument("--deblur", default="auto", metavar="auto|teacher|FILE",
                   help="what serves 'deblur' (stills, the best quality here): auto (the blind engine, checked, falling "
                        "back to --model; seconds per frame), teacher (--model itself), or another network "
                        "(a bundled model or a .tflite/.onnx file) (default: auto)")
    p.add_argument("--model-dir", help="also serve every .tflite/.onnx image-to-image model in this folder, named by its stem")
    p.add_argument("--workers", type=int, default=1, help="requests computed at once")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: cores / workers)")
    p.add_argument("--max-queue", type=int, default=8, help="requests waiting for a worker before 503")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take, admission to answer")
    p.add_argument("--rate", type=float, default=50.0, help="requests/s per client (token) before 429; 0: no limit")
    p.add_argument("--burst", type=int, default=100, help="requests a client may send at once")
    p.add_argument("--max-pixels", type=int, default=12_000_000, help="largest image, in pixels")
    p.add_argument("--max-request-mb", type=float, default=64.0, help="largest request body, MiB")
    p.add_argument("--tls-cert", help="PEM certificate: serve HTTPS and gRPC over TLS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", help="add, revoke or list the server's bearer tokens")
    p.add_argument("action", choices=["add", "revoke", "list"])
    p.add_argument("name", nargs="?", help="the token's name (add, revoke)")
    p.add_argument("--tokens", required=True, help="the token file (created by the first add)")
    p.set_defaults(func=_token_checked)

    p = sub.add_parser("export", help="export models for another engine: 'export triton DIR'")
    p.add_argument("engine", choices=["triton"])
    p.add_argument("dir", help="the model repository folder to write")
    p.add_argument("--model", default="teacher", help="a bundled .onnx model or an .onnx file (default: the teacher)")
    p.add_argument("--name", default="teacher",
                   help="the network's name in the repository (default: teacher, what a stream's offload calls)")
    p.add_argument("--max-batch", type=int, default=4, help="dynamic batching: largest batch")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic batching: longest wait to fill a batch")
    p.add_argument("--max-queue", type=int, default=16, help="queue policy: requests waiting before rejection")
    p.add_argument("--queue-timeout-us", type=int, default=5_000_000, help="queue policy: longest wait in the queue")
    p.add_argument("--instances", type=int, default=1, help="model instances (CPU)")
    p.add_argument("--extra", nargs="*", choices=["deblur", "split", "kernel"], default=["deblur", "split", "kernel"],
                   help="Python-backend models beside the network: deblur (the auto engine, for stills), split (the "
                        "students' middle stages), kernel (the blind engine's kernel estimate) (default: all three; "
                        "--extra alone: none)")
    p.set_defaults(func=cmd_export)


def _token_checked(args) -> int:
    if args.action in ("add", "revoke") and not args.name:
        raise EdgeDeblurError(f"token {args.action} needs a NAME")
    return cmd_token(args)
