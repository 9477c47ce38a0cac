"""The server in a network namespace of its own, reached over a veth pair shaped by tc's token bucket
filter (this kernel has tbf but no netem): the link's rate shows in the frame time, and a server
killed mid-stream costs the board no frame. Traffic goes only to the namespace this test makes.

Needs root (``ip netns``, ``tc``); skipped, saying why, where those are not allowed."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed (pip install -e '.[test]')")

from edge_deblur.model import Deblurrer  # noqa: E402
from edge_deblur.partition import Offload, OffloadConfig, V2Client  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE_MBIT = 8


def _run(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def namespace():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("needs root with ip and tc to make a network namespace and shape its link")
    tag = f"{os.getpid() % 100000}"
    ns, host_if, ns_if = f"edserve{tag}", f"edh{tag}", f"eds{tag}"
    subnet = 200 + os.getpid() % 50
    host_ip, ns_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    made = _run("ip", "netns", "add", ns, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {made.stderr.strip()}")
    try:
        steps = [("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if),
                 ("ip", "link", "set", ns_if, "netns", ns),
                 ("ip", "addr", "add", f"{host_ip}/30", "dev", host_if), ("ip", "link", "set", host_if, "up"),
                 ("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if),
                 ("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"),
                 ("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")]
        for step in steps:
            out = _run(*step, check=False)
            if out.returncode != 0:
                pytest.skip(f"{' '.join(step)}: {out.stderr.strip()}")
        for prefix, dev in (((), host_if), (("ip", "netns", "exec", ns), ns_if)):  # both directions
            out = _run(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{RATE_MBIT}mbit",
                       "burst", "32kbit", "latency", "400ms", check=False)
            if out.returncode != 0:
                pytest.skip(f"tc tbf is not available: {out.stderr.strip()}")
        yield ns, ns_ip
    finally:
        _run("ip", "netns", "del", ns, check=False)  # takes its end of the veth pair, and so the pair
        _run("ip", "link", "del", host_if, check=False)


def _serve_in(ns, ip):
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "edge_deblur.cli", "serve", "--host", ip,
                             "--port", "8000", "--grpc-port", "-1", "--threads", "1", "--rate", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        pytest.fail(f"the server did not start in {ns}: {line!r}")
    return proc


def test_shaped_link_and_server_killed_mid_stream(namespace, photo):
    ns, ip = namespace
    teacher = Deblurrer.load("teacher", threads=1)
    frames = [np.ascontiguousarray(photo[y:y + 160, x:x + 200]) for y, x in [(0, 0), (100, 150), (300, 200)]] * 3
    proc = _serve_in(ns, ip)
    try:
        client = V2Client(f"http://{ip}:8000")
        deadline = time.monotonic() + 20
        while not client.ready("deblur") and time.monotonic() < deadline:
            time.sleep(0.2)
        client.close()
        # the link alone: 500 kB the server reads in full and refuses (400, not JSON) in microseconds
        conn = http.client.HTTPConnection(ip, 8000, timeout=30)
        junk = b"x" * 500_000
        start = time.perf_counter()
        conn.request("POST", "/v2/models/deblur/infer", body=junk)
        response = conn.getresponse()
        response.read()
        upload_s = time.perf_counter() - start
        conn.close()
        wire_s = len(junk) * 8 / (RATE_MBIT * 1e6)
        print(f"500 kB up over {RATE_MBIT} Mbit/s: {upload_s:.3f} s ({wire_s:.3f} s at the nominal rate)")
        assert response.status == 400 and 0.9 * wire_s <= upload_s <= 3 * wire_s + 0.5

        offload = Offload(OffloadConfig(f"http://{ip}:8000", deadline_s=30, probe_after_s=60), local=teacher)
        outputs = []
        for i, frame in enumerate(frames):
            if i == 4:
                proc.send_signal(signal.SIGKILL)  # no goodbye: the socket just dies
                proc.wait(10)
            outputs.append(offload(frame))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(outputs) == len(frames)
    for frame, out in zip(frames, outputs):
        assert np.abs(out.astype(int) - teacher(frame).astype(int)).max() <= 1
    assert offload.summary.offloaded == 4 and offload.summary.local == len(frames) - 4, str(offload.summary)
