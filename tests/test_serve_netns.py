"""The server in a network namespace of its own, reached over a veth pair shaped by tc's token bucket
filter (this kernel has tbf but no netem): the link's rate shows in the frame time, and a server
killed mid-stream costs the board no frame. Traffic goes only to the namespace this test makes.

Needs root (``ip netns``, ``tc``); skipped, saying why, where those are not allowed."""

from __future__ import annotations

import http.client
import os
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


@pytest.fixture
def namespace():
    sys.path.insert(0, str(Path(__file__).parent))
    from serve_link import NamespaceUnavailable, VethLink

    try:
        with VethLink(f"{os.getpid() % 100000}", 200 + os.getpid() % 50) as link:
            link.shape(RATE_MBIT)
            yield link.ns, link.ns_ip
    except NamespaceUnavailable as e:
        pytest.skip(str(e))


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
