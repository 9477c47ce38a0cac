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
