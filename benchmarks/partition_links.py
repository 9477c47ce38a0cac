"""Local, offload and the planner's choice over emulated links, side by side in one run.

The "board" is this host running the bundled Pi 5 student (INT8, LiteRT, ``--board-threads``); the
"server" is ``edge-deblur serve`` (the teacher) in a subprocess on the same host, reached through
tests/serve_link.py's loopback proxy, which adds half the round trip to each direction and caps each
direction's rate (a user-space stand-in for tc's tbf; this kernel has no netem). Frames are
``--size`` centre crops of held-out Kodak24 photos blurred by Levin et al.'s measured camera-shake
kernels (the project's evaluation forward model).
Per link: median wall time per frame of each mode, the planner's median and the modes it chose,
and PSNR against the sharp photo (the planner's frames are deblurred by whichever side it chose).
Both sides share this host's 2 cores, so the board here is far faster than a Pi and the server far
slower than a server: the table shows the mechanism, not a deployment.

    python benchmarks/partition_links.py --frames 6 --size 320x240
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from converters.blur import center_kernel
from converters.data import blur_photo, heldout_photos, levin_kernels
from edge_deblur.metrics import psnr
from edge_deblur.model import Deblurrer
from edge_deblur.partition import Offload, OffloadConfig, Planner, PlannerConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serve_link import LinkProxy  # noqa: E402

LINKS = [(mbit, rtt) for mbit in (1, 10, 100) for rtt in (5, 50, 150)]


def frames_of(n: int, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out photos blurred by the evaluation forward model (converters.data.blur_photo: a centred
    Levin kernel in linear light, noise 0.01), full frame, then centre-cropped to ``size``."""
    w, h = size
    kernels = levin_kernels()
    rng = np.random.default_rng(0)
    pairs = []
    for i, (_, sharp) in enumerate(heldout_photos()[:n]):
        if sharp.shape[0] < h or sharp.shape[1] < w:
            raise SystemExit(f"--size {w}x{h}: larger than the held-out photos ({sharp.shape[1]}x{sharp.shape[0]})")
        blurred = blur_photo(sharp, center_kernel(kernels[i % len(kernels)]), 0.01, rng)
        y, x = (sharp.shape[0] - h) // 2, (sharp.shape[1] - w) // 2
        pairs.append((np.ascontiguousarray(blurred[y:y + h, x:x + w]), np.ascontiguousarray(sharp[y:y + h, x:x + w])))
    return pairs


def timed(method, pairs):
    times, scores = [], []
    for blurred, sharp in pairs:
        start = time.perf_counter()
        out = method(blurred)
        times.append(1000 * (time.perf_counter() - start))
        scores.append(psnr(out, sharp))
    return statistics.median(times), float(np.mean(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--board-threads", type=int, default=1)
    ap.add_argument("--server-threads", type=int, default=1)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    pairs = frames_of(args.frames, (w, h))
    board = Deblurrer.load("student-rpi5", threads=args.board_threads)
    proc = subprocess.Popen([sys.executable, "-m", "edge_deblur.cli", "serve", "--port", "0", "--grpc-port", "-1",
                             "--rate", "0", "--threads", str(args.server_threads)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    line = proc.stdout.readline()
    host, port = line.split("http://")[1].split()[0].split(":")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}; "
          f"{args.frames} frames of {w}x{h} ({w * h * 3 / 1e3:.0f} kB raw)")
    try:
        timed(board, pairs[:1])
        local_ms, local_db = timed(board, pairs)
        blurred_db = float(np.mean([psnr(b, s) for b, s in pairs]))
        print(f"blurred input {blurred_db:.2f} dB; local (student-rpi5) {local_ms:.0f} ms, {local_db:.2f} dB\n")
        print("| link | offload ms | offload dB | planner ms (mean) | planner dB | planner chose | best mode |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for mbit, rtt in LINKS:
            link = LinkProxy((host, int(port)), one_way_s=rtt / 2000, rate_bytes_s=mbit * 1e6 / 8)
            url = f"http://127.0.0.1:{link.port}"
            offload = Offload(OffloadConfig(url, deadline_s=60), local=board)
            timed(offload, pairs[:1])  # connection and the server's allocation for this size
            off_ms, off_db = timed(offload, pairs)
            offload.close()
            planner_offload = Offload(OffloadConfig(url, deadline_s=60), local=board)
            planner = Planner({"local": board, "offload": planner_offload}, PlannerConfig(reprobe_every=20))
            stream = pairs * 5
            start = time.perf_counter()
            plan_ms, plan_db = timed(planner, stream)  # the first frames are its measurements
            plan_mean = 1000 * (time.perf_counter() - start) / len(stream)
            planner_offload.close()
            link.close()
            best = "offload" if off_ms < local_ms else "local"
            chose = ", ".join(f"{n} {m}" for m, n in sorted(planner.summary.frames.items()))
            print(f"| {mbit} Mbit/s, {rtt} ms | {off_ms:.0f} | {off_db:.2f} | {plan_ms:.0f} ({plan_mean:.0f}) | {plan_db:.2f} | "
                  f"{chose} | {best} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
