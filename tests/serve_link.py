"""A link in a test: a TCP proxy on loopback that delays each direction by a fixed one-way latency
and can cap its rate, without slowing a stream to one chunk per latency (chunks are stamped when they
arrive and sent when due, as a real path's propagation delay does). Loopback only."""

from __future__ import annotations

import heapq
import socket
import struct
import threading
import time


class LinkProxy:
    def __init__(self, target: tuple[str, int], one_way_s: float = 0.0, rate_bytes_s: float | None = None,
                 reset_after_bytes: int | None = None):
        """``reset_after_bytes``: once that many bytes came back from the server on a connection, the
        proxy resets both sides (RST), as a dropped mobile link or a crashing middlebox does."""
        self.target, self.one_way_s, self.rate = target, one_way_s, rate_bytes_s
        self.reset_after = reset_after_bytes
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # the connect's timeout must not end an idle kept-alive connection
            self._sockets += [client, upstream]
            self._pump(client, upstream)
            self._pump(upstream, client, reset=(client, upstream) if self.reset_after is not None else None)

    def _pump(self, src: socket.socket, dst: socket.socket, reset=None):
        due: list[tuple[float, int, bytes]] = []
        passed = [0]
        ready = threading.Condition()
        seq = iter(range(1 << 62))

        def read():
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                with ready:
                    heapq.heappush(due, (time.monotonic() + self.one_way_s, next(seq), data))
                    ready.notify()
                if not data:
                    return

        def write():
            sent_at = time.monotonic()
            while True:
                with ready:
                    while not due or due[0][0] > time.monotonic():
                        ready.wait(None if not due else max(0.0, due[0][0] - time.monotonic()))
                    _, _, data = heapq.heappop(due)
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                if self.rate:  # serialisation at the link's rate
                    sent_at = max(sent_at, time.monotonic()) + len(data) / self.rate
                    time.sleep(max(0.0, sent_at - time.monotonic()))
                if reset is not None and passed[0] + len(data) > self.reset_after:
                    for s in reset:  # SO_LINGER 0: the close sends RST instead of FIN
                        try:
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            s.shutdown(socket.SHUT_RD)  # wakes the other direction's recv, sends nothing
                        except OSError:
                            pass
                        s.close()
                    return
                passed[0] += len(data)
                try:
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def close(self):
        self._stop.set()
        self._listener.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass


class NamespaceUnavailable(Exception):
    """Why a veth/namespace link cannot be made here (not root, no ip/tc, no tbf)."""


def _run(*cmd, check=True):
    import subprocess

    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check)


class VethLink:
    """A network namespace of its own joined to this one by a veth pair, each end's egress shaped
    by tc's token bucket filter (``shape``): the rate of a real link, in the kernel. This kernel has
    no ``sch_netem``, so delay comes from :class:`LinkProxy` on this side. Traffic goes only to the
    namespace made here. ``with VethLink(tag) as link: ... link.ns, link.ns_ip``; raises
    :class:`NamespaceUnavailable` saying why when it cannot be made."""

    def __init__(self, tag: str, subnet: int):
        import os
        import shutil

        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
            raise NamespaceUnavailable("needs root with ip and tc to make a network namespace and shape its link")
        self.ns, self.host_if, self.ns_if = f"edserve{tag}", f"edh{tag}", f"eds{tag}"
        self.host_ip, self.ns_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self.mbit: float | None = None

    def __enter__(self):
        made = _run("ip", "netns", "add", self.ns, check=False)
        if made.returncode != 0:
            raise NamespaceUnavailable(f"cannot make a network namespace here: {made.stderr.strip()}")
        try:
            steps = [("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if),
                     ("ip", "link", "set", self.ns_if, "netns", self.ns),
                     ("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if),
                     ("ip", "link", "set", self.host_if, "up"),
                     ("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if),
                     ("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up"),
                     ("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")]
            for step in steps:
                out = _run(*step, check=False)
                if out.returncode != 0:
                    raise NamespaceUnavailable(f"{' '.join(step)}: {out.stderr.strip()}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def shape(self, mbit: float, latency_ms: int = 400) -> None:
        """Both directions at ``mbit`` Mbit/s. The bucket holds 1/100 s of the rate (at least 4 kB):
        a smaller one cannot reach the rate with the kernel's timer granularity at 100 Mbit/s."""
        burst = max(4096, int(mbit * 1e6 / 8 / 100))
        for prefix, dev in (((), self.host_if), (("ip", "netns", "exec", self.ns), self.ns_if)):
            out = _run(*prefix, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit",
                       "burst", str(burst), "latency", f"{latency_ms}ms", check=False)
            if out.returncode != 0:
                raise NamespaceUnavailable(f"tc tbf is not available: {out.stderr.strip()}")
        self.mbit = mbit

    def __exit__(self, *exc):
        _run("ip", "netns", "del", self.ns, check=False)  # takes its end of the veth pair, and so the pair
        _run("ip", "link", "del", self.host_if, check=False)


def main(argv=None) -> None:
    """``python tests/serve_link.py HOST:PORT --one-way-ms MS [--mbit R] [--reset-after-bytes N]``:
    a proxy in a process of its own (so its copying costs the caller's process nothing); prints
    ``listening PORT`` and runs until killed."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("target")
    ap.add_argument("--one-way-ms", type=float, default=0.0)
    ap.add_argument("--mbit", type=float, default=None)
    ap.add_argument("--reset-after-bytes", type=int, default=None)
    args = ap.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    proxy = LinkProxy((host, int(port)), args.one_way_ms / 1000, None if args.mbit is None else args.mbit * 1e6 / 8,
                      args.reset_after_bytes)
    print(f"listening {proxy.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
