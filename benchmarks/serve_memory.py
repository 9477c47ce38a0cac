"""What serving ``deblur`` as the auto engine costs the server: `edge-deblur serve --deblur auto`
against `--deblur teacher`, each started fresh: seconds until /v2/health/ready, resident memory
then, and the peak resident memory after one 640x480 RGB request to ``deblur`` (a shaken frame,
so that auto takes its blind path; the path the server reports is printed).

    python benchmarks/serve_memory.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as thttp

from converters.blur import center_kernel
from converters.data import blur_photo, levin_kernels, load_photo

CLI = str(Path(sys.executable).with_name("edge-deblur"))


def memory_mib(pid: int, key: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of a process, in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def measure(mode: str, port: int, frame: np.ndarray) -> tuple[float, float, float, float, str]:
    start = time.perf_counter()
    server = subprocess.Popen([CLI, "serve", "--port", str(port), "--grpc-port", "-1", "--deblur", mode, "--workers", "1",
                               "--threads", "2", "--timeout", "600", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"edge-deblur serve --deblur {mode} exited with {server.returncode}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        ready = time.perf_counter() - start
        rss = memory_mib(server.pid, "VmRSS")
        client = thttp.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=900, connection_timeout=900)
        tensor = thttp.InferInput("image", list(frame.shape), "UINT8")
        tensor.set_data_from_numpy(frame)
        t = time.perf_counter()
        reply = client.infer("deblur", [tensor])
        took = time.perf_counter() - t
        path = reply.get_response().get("parameters", {}).get("path", "-")
        return ready, rss, memory_mib(server.pid, "VmHWM"), took, path
    finally:
        server.terminate()
        server.wait(30)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--port", type=int, default=18431)
    args = ap.parse_args(argv)
    photo = np.ascontiguousarray(load_photo("skimage/motorcycle_left")[:480, :640])
    frame = blur_photo(photo, center_kernel(levin_kernels()[3]), 0.01, np.random.default_rng(0))[None]
    print("| --deblur | ready s | resident at ready MiB | peak after one 640x480 deblur MiB | request s | path |")
    print("|---|---:|---:|---:|---:|---|")
    for _ in range(args.rounds):
        for mode in ("teacher", "auto"):
            ready, rss, peak, took, path = measure(mode, args.port, frame)
            print(f"| {mode} | {ready:.2f} | {rss:.0f} | {peak:.0f} | {took:.1f} | {path} |", flush=True)


if __name__ == "__main__":
    main()
