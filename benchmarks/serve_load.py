"""``edge-deblur serve`` on loopback: what the wire format costs, and the load it holds.

The real CLI server runs in a subprocess (`edge-deblur serve --grpc-port -1 --rate 0`); clients are
threads of this process using the board's client (``edge_deblur.partition.V2Client``), one
keep-alive connection each.

1. Binary vs JSON tensors for one 640x480 RGB frame (a held-out Kodak photo resized): bytes each way
   and the round-trip time, median of ``--repeats``, the two interleaved; the model's own compute
   is the same in both, so the difference is the JSON encoding and parsing.
2. Load: N clients, each sending ``--size`` frames back to back for ``--seconds``: requests/s
   answered, p50/p99 latency of the answered ones, and refusals (503: queue full) per N.

    python benchmarks/serve_load.py --clients 1 2 4 8 16 --seconds 10 --size 128x128
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from edge_deblur.partition import RemoteError, V2Client

ROOT = Path(__file__).resolve().parents[1]


def start_server(threads: int, max_queue: int, workers: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "edge_deblur.cli", "serve", "--port", "0", "--grpc-port", "-1",
                             "--rate", "0", "--threads", str(threads), "--max-queue", str(max_queue),
                             "--workers", str(workers)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, "http://" + line.split("http://")[1].split()[0]


def frame_of(size: tuple[int, int]) -> np.ndarray:
    photos = sorted((ROOT.parent / "shared" / "data" / "photos" / "kodak24").iterdir())
    rgb = cv2.imread(str(photos[0]))[..., ::-1]
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


def wire_cost(url: str, repeats: int) -> None:
    frame = frame_of((640, 480))[None]
    client = V2Client(url)
    client.infer("teacher", "image", frame, timeout=120)  # warm-up
    times = {True: [], False: []}
    sizes = {}
    for _ in range(repeats):
        for binary in (True, False):
            ex = client.infer("teacher", "image", frame, timeout=120, binary=binary)
            times[binary].append(ex.seconds * 1000)
            sizes[binary] = (ex.bytes_up, ex.bytes_down)
    client.close()
    print("| 640x480 frame | up | down | round trip, median ms |")
    print("| --- | --- | --- | --- |")
    for binary, name in ((True, "binary tensors"), (False, "JSON tensors")):
        up, down = sizes[binary]
        print(f"| {name} | {up / 1e6:.2f} MB | {down / 1e6:.2f} MB | {statistics.median(times[binary]):.0f} "
              f"({min(times[binary]):.0f}-{max(times[binary]):.0f}) |")


def load(url: str, clients: int, seconds: float, frame: np.ndarray) -> tuple[float, list[float], Counter]:
    latencies: list[float] = []
    outcomes: Counter = Counter()
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def run():
        client = V2Client(url)
        while time.perf_counter() < stop:
            try:
                ex = client.infer("teacher", "image", frame[None], timeout=60)
                with lock:
                    latencies.append(ex.seconds * 1000)
                    outcomes["200"] += 1
            except RemoteError as e:
                with lock:
                    outcomes[str(e.status)] += 1
                time.sleep(0.01)  # a refused client does not spin
        client.close()

    threads = [threading.Thread(target=run) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, outcomes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--size", default="128x128", help="WIDTHxHEIGHT of the load frames")
    ap.add_argument("--threads", type=int, default=2, help="server: CPU threads for the model")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}; "
          f"python {platform.python_version()}")
    proc, url = start_server(args.threads, args.max_queue, args.workers)
    try:
        wire_cost(url, args.repeats)
        w, h = (int(v) for v in args.size.split("x"))
        frame = frame_of((w, h))
        load(url, 1, 1.0, frame)  # warm-up
        print(f"\n| clients | {w}x{h} requests/s | p50 ms | p99 ms | refused (503) |")
        print("| --- | --- | --- | --- | --- |")
        for n in args.clients:
            elapsed, lat, outcomes = load(url, n, args.seconds, frame)
            q = np.percentile(lat, [50, 99]) if lat else (float("nan"),) * 2
            refused = sum(v for k, v in outcomes.items() if k != "200")
            print(f"| {n} | {outcomes['200'] / elapsed:.1f} | {q[0]:.0f} | {q[1]:.0f} | {refused} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
