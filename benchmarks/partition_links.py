"""Every partitioned mode and the planner over emulated links, side by side in one run.

The "server" is ``edge-deblur serve`` (``teacher``: the feed-forward network, what offload calls; ``split``: the student's middle) in
a network namespace of its own, reached over a veth pair whose two ends are shaped by tc's token
bucket filter (the link's rate, in the kernel; tests/serve_link.py's ``VethLink``); this kernel has no
``sch_netem``, so the round trip comes from tests/serve_link.py's ``LinkProxy`` (in a process of its own, on the server's core),
which adds half of it to each direction. Without root (no namespaces) the proxy also caps the
rate, in user space, and the output says so. The "board" is this host running the bundled Pi 5
student (INT8, LiteRT, 1 thread), emulated ``--board-slowdown`` times slower (each board-side
call lasts F x its quiet time on this host, ``Slower``; 1: this host's own speed); the split
mode's head and tail parts are stretched the same way. Frames are ``--size`` centre crops of
held-out Kodak24 photos blurred by Levin et al.'s measured camera-shake kernels (the project's
evaluation forward model).

Per link: median wall time per frame of each mode (local, offload raw, PNG, jpeg:90, webp:90,
split; ``--frames`` frames after one warm-up; medians, since this host's other jobs put spikes into
any mean) and PSNR against the sharp photo; the planner as ``partitioned_method``'s auto makes it,
twice (lossless: local, split, offload raw and PNG; and allowed ``ALLOWED_LOSS_DB``, adding the
lossy encodings within it) over ``--stream`` frames cycling through the same frames: its median
and mean, the modes it chose, and whether its median is within 10% of the best mode it may use.
Then bytes per frame per mode, the kernel mode on one link (``--kernel-link``), and frames lost
(and kept in order) under faults per mode on one link: wrong token, a connection reset
mid-answer, the server killed mid-stream, 503 bursts (a server with no queue, saturated by two
other clients), a slow server (stopped for 3 s, a 1 s deadline).

    python benchmarks/partition_links.py --frames 5 --stream 40 --board-slowdown 16
    python benchmarks/partition_links.py --links none --faults "503 bursts" "slow server"
    python benchmarks/partition_links.py --frames 4 --board-slowdown 4 --links none --kernel-link 10,50 --no-faults
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from converters.blur import center_kernel
from converters.data import blur_photo, heldout_photos, levin_kernels
from edge_deblur.metrics import psnr
from edge_deblur.model import Deblurrer
from edge_deblur.partition import Offload, OffloadConfig, Planner, PlannerConfig, RemoteError, Unreachable, V2Client
from edge_deblur.partition.encoding import encodings_within
from edge_deblur.partition.planner import LinkMonitor
from edge_deblur.partition.split import SplitOffload

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serve_link import NamespaceUnavailable, VethLink  # noqa: E402

LINKS = [(mbit, rtt) for mbit in (1, 10, 100) for rtt in (5, 50, 150)]
MODES = ("local", "offload", "offload png", "offload jpeg:90", "offload webp:90", "split")
LOSSLESS = ("local", "offload", "offload png", "split")
QUIET: dict[str, dict] = {}  # the board's parts' quiet times (Slower), learned once per run
ALLOWED_LOSS_DB = 0.1  # the lossy planner's max_quality_loss_db: jpeg:90 (0.06 dB) and webp:90 (0.07) within it


def frames_of(n: int, size: tuple[int, int], one_kernel: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out photos blurred by the evaluation forward model (converters.data.blur_photo: a centred
    Levin kernel in linear light, noise 0.01), full frame, then centre-cropped to ``size``. Each
    photo gets the next of Levin's 8 kernels, or (``one_kernel``) all of them the first: one
    camera's shake over consecutive frames, what the kernel mode assumes."""
    w, h = size
    kernels = levin_kernels()
    rng = np.random.default_rng(0)
    pairs = []
    for i, (_, sharp) in enumerate(heldout_photos()[:n]):
        if sharp.shape[0] < h or sharp.shape[1] < w:
            raise SystemExit(f"--size {w}x{h}: larger than the held-out photos ({sharp.shape[1]}x{sharp.shape[0]})")
        blurred = blur_photo(sharp, center_kernel(kernels[0 if one_kernel else i % len(kernels)]), 0.01, rng)
        y, x = (sharp.shape[0] - h) // 2, (sharp.shape[1] - w) // 2
        pairs.append((np.ascontiguousarray(blurred[y:y + h, x:x + w]), np.ascontiguousarray(sharp[y:y + h, x:x + w])))
    return pairs


class Slower:
    """``fn`` as on a board ``factor`` times slower than this host when it is quiet: each call lasts
    ``factor`` x the fastest of its first three calls for those input shapes (a sleep makes up the
    rest). The other jobs on this shared host then move the board's times only when they make a
    call slower than that, not by ``factor`` times their own delay."""

    def __init__(self, fn, factor: float, quiet: dict | None = None):
        self.fn, self.factor = fn, factor
        # input shapes -> (fastest seconds, calls seen); shared between the wrappers of one board part
        # (``QUIET``): its speed is the board's, not learned again by each new wrapper, maybe beside a
        # probe that shares the core
        self.quiet: dict[tuple, tuple[float, int]] = {} if quiet is None else quiet

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.fn(*args)
        took = time.perf_counter() - start
        key = tuple(np.shape(a) for a in args)
        fastest, calls = self.quiet.get(key, (took, 0))
        if calls < 3:
            fastest = min(fastest, took)
            self.quiet[key] = (fastest, calls + 1)
        if self.factor > 1:
            time.sleep(max(0.0, self.factor * fastest - (time.perf_counter() - start)))
        return out


def timed(method, pairs):
    """(mean ms, median ms, mean dB, frames out) over ``pairs``."""
    times, scores, outs = [], [], 0
    for blurred, sharp in pairs:
        start = time.perf_counter()
        out = method(blurred)
        times.append(1000 * (time.perf_counter() - start))
        outs += out is not None and out.shape == blurred.shape
        scores.append(psnr(out, sharp))
    if os.environ.get("EDGE_DEBLUR_BENCH_DEBUG"):
        print("  frame ms:", " ".join(f"{t:.0f}" for t in times), file=sys.stderr)
    return statistics.mean(times), statistics.median(times), float(np.mean(scores)), outs


class Server:
    """``edge-deblur serve`` in the namespace (or on loopback), with a token file."""

    started: list["Server"] = []
    cpu: int | None = None  # pinned to this CPU (the board to the others)

    def __init__(self, ns: str | None, ip: str, tokens: Path, threads: int, extra: tuple[str, ...] = (), port: int = 8000):
        self.tokens = tokens
        prefix = (["ip", "netns", "exec", ns] if ns else []) + (["taskset", "-c", str(Server.cpu)] if Server.cpu is not None else [])
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "edge_deblur.cli", "serve", "--host", ip, "--port",
                                      "0" if not ns else str(port), "--grpc-port", "-1", "--rate", "0", "--threads",
                                      str(threads), "--tokens", str(tokens), "--timeout", "120", *extra],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if "serving" not in line:
            self.proc.kill()
            raise SystemExit(f"the server did not start: {line!r}")
        self.host, self.port = line.split("://")[1].split()[0].rsplit(":", 1)
        Server.started.append(self)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class Proxy:
    """tests/serve_link.py's delay proxy in a process of its own, on the server's CPU: copying the
    link's bytes is the network's work, not the board's."""

    def __init__(self, target: tuple[str, int], one_way_s: float, rate_bytes_s: float | None = None,
                 reset_after_bytes: int | None = None):
        cmd = [sys.executable, str(ROOT / "tests" / "serve_link.py"), f"{target[0]}:{target[1]}",
               "--one-way-ms", str(1000 * one_way_s)]
        if rate_bytes_s:
            cmd += ["--mbit", str(rate_bytes_s * 8 / 1e6)]
        if reset_after_bytes is not None:
            cmd += ["--reset-after-bytes", str(reset_after_bytes)]
        if Server.cpu is not None:
            cmd = ["taskset", "-c", str(Server.cpu), *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening"):
            self.proc.kill()
            raise SystemExit(f"the link proxy did not start: {line!r}")
        self.port = int(line.split()[1])

    def close(self):
        self.proc.kill()
        self.proc.wait(10)


def board_modes(url: str, token: str, board, slowdown: float, threads: int, deadline_s: float = 120) -> dict:
    """Every mode, each on a connection of its own (as ``partitioned_method`` makes them)."""
    split = SplitOffload(OffloadConfig(url, token, model="split", deadline_s=deadline_s), threads=threads)
    split.runner.head = Slower(split.runner.head, slowdown, QUIET.setdefault("split head", {}))
    split.runner.tail = Slower(split.runner.tail, slowdown, QUIET.setdefault("split tail", {}))
    modes = {"local": board}
    for name in MODES[1:-1]:
        encoding = name.split(" ")[1] if " " in name else "raw"
        modes[name] = Offload(OffloadConfig(url, token, deadline_s=deadline_s, encoding=encoding), local=board)
    modes["split"] = split
    return modes


def planner_of(modes: dict, url: str, token: str, max_loss_db: float, ping_every_s: float = 1.0) -> Planner:
    """auto as ``partitioned_method`` makes it: local, split, offload, offload png, and the lossy
    encodings within ``max_loss_db`` (``encodings_within``)."""
    names = ["local", "split", "offload"] + [f"offload {e}" for e in encodings_within(max_loss_db)]
    return Planner({n: modes[n] for n in names}, PlannerConfig(background=True, ping_every_s=ping_every_s,
                                                               max_quality_loss_db=max_loss_db),
                   link=LinkMonitor(url, token))


def close_all(modes: dict) -> None:
    for m in modes.values():
        if hasattr(m, "close"):
            m.close()


def wire(method) -> tuple[float, float, int]:
    s = method.summary
    done = getattr(s, "offloaded", None)
    done = s.split if done is None else done
    return s.bytes_up, s.bytes_down, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3, help="timed frames per mode and link (after one warm-up)")
    ap.add_argument("--stream", type=int, default=16, help="frames the planner gets per link")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--board-slowdown", type=float, default=1.0)
    ap.add_argument("--board-threads", type=int, default=1)
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--links", nargs="*", help="MBIT,RTT_MS pairs (default: 1/10/100 x 5/50/150; none: no link table)")
    ap.add_argument("--no-faults", action="store_true", help="leave out the faults table")
    ap.add_argument("--faults", nargs="*", choices=FAULTS, help="only these faults (default: all)")
    ap.add_argument("--kernel-link", metavar="MBIT,RTT_MS",
                    help="also time the kernel mode (keyframe crop up, kernel down, HQS restoration on the board) "
                         "on this one link: it restores for seconds a frame, so one link, --frames frames")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the board to CPU 0 and the server to CPU 1")
    args = ap.parse_args()
    if os.environ.get("EDGE_DEBLUR_BENCH_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("edge_deblur.partition.planner").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # kill PID: the namespace and servers still go
    if not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # board and server on cores of their own: one's work does not slow the other's
        Server.cpu = 1
    w, h = (int(v) for v in args.size.split("x"))
    pairs = frames_of(max(args.frames + 1, 4), (w, h))
    links = [] if args.links == ["none"] else [tuple(float(v) for v in link.split(",")) for link in args.links] \
        if args.links else LINKS
    board = Slower(Deblurrer.load("student-rpi5", threads=args.board_threads), args.board_slowdown)
    from edge_deblur.serve.tokens import add_token

    tmp = Path(tempfile.mkdtemp(prefix="edge-deblur-links-"))
    token = add_token(tmp / "tokens.json", "board")
    try:
        veth = VethLink(f"b{os.getpid() % 10000}", 150 + os.getpid() % 40)
        veth.__enter__()
    except NamespaceUnavailable as e:
        veth = None
        print(f"no namespaces ({e}): the loopback proxy caps the rate in user space")
    try:
        server = Server(veth.ns if veth else None, veth.ns_ip if veth else "127.0.0.1", tmp / "tokens.json",
                        args.server_threads)
        _run(args, pairs, links, board, veth, server, token, w, h)
    finally:
        for started in Server.started:
            started.kill()
        if veth is not None:
            veth.__exit__(None, None, None)


def _run(args, pairs, links, board, veth, server, token, w, h) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}; "
          f"{len(pairs)} frames of {w}x{h} ({w * h * 3 / 1e3:.0f} kB raw); board: student-rpi5 x{args.board_slowdown:g}; "
          f"links: {'tc tbf on a veth pair between namespaces + delay proxy' if veth else 'loopback proxy (rate and delay)'}; "
          f"{'board on CPU 0, server on CPU 1' if Server.cpu is not None else 'board and server unpinned'}")
    timed(board, pairs[:1])
    blurred_db = float(np.mean([psnr(b, s) for b, s in pairs]))
    print(f"blurred input {blurred_db:.2f} dB\n")
    if links:
        print("| link | " + " | ".join(f"{m} ms (dB)" for m in MODES) + " | planner lossless: median ms (mean), dB, chose "
              f"| / best lossless | planner <= {ALLOWED_LOSS_DB:g} dB: median ms (mean), dB, chose | / best within {ALLOWED_LOSS_DB:g} dB |")
        print("| --- " * (len(MODES) + 5) + "|")
    bytes_rows, verdicts = {}, {"lossless": [], "lossy": []}
    try:
        for mbit, rtt in links:
            if veth:
                veth.shape(mbit)
            proxy = Proxy((server.host, int(server.port)), one_way_s=rtt / 2000,
                          rate_bytes_s=None if veth else mbit * 1e6 / 8)
            url = f"http://127.0.0.1:{proxy.port}"
            modes = board_modes(url, token, board, args.board_slowdown, args.board_threads)
            cells, medians = [], {}
            for name, method in modes.items():
                timed(method, pairs[:1])  # connection, the server's allocation for this size
                _, median, db, _ = timed(method, pairs[1:args.frames + 1])
                medians[name] = median
                cells.append(f"{median:.0f} ({db:.2f})")
                if name != "local" and (mbit, rtt) == links[-1]:
                    up, down, done = wire(method)
                    bytes_rows[name] = (up / done, down / done)
            close_all(modes)
            measured = pairs[1:args.frames + 1]  # the frames each mode was timed on
            stream = (measured * (args.stream // len(measured) + 1))[:args.stream]
            best = {"lossless": min(LOSSLESS, key=medians.get), "lossy": min(MODES, key=medians.get)}
            planner_cells = []
            for kind, loss in (("lossless", 0.0), ("lossy", ALLOWED_LOSS_DB)):
                made = board_modes(url, token, board, args.board_slowdown, args.board_threads)
                planner = planner_of(made, url, token, loss)
                p_mean, p_median, p_db, _ = timed(planner, stream)
                planner.close()
                close_all(made)
                ratio = p_median / medians[best[kind]]
                verdicts[kind].append(ratio <= 1.1)
                chose = ", ".join(f"{n} {m}" for m, n in sorted(planner.summary.frames.items()))
                planner_cells += [f"{p_median:.0f} ({p_mean:.0f}), {p_db:.2f}, {chose}", f"{ratio:.2f}x ({best[kind]})"]
                print(f"  planner {kind}: {planner.summary}", file=sys.stderr, flush=True)
            proxy.close()
            print(f"| {mbit:g} Mbit/s, {rtt:g} ms | " + " | ".join(cells + planner_cells) + " |", flush=True)
        if links:
            for kind in verdicts:
                print(f"\nplanner ({kind}) median within 10% of the best {'lossless mode' if kind == 'lossless' else f'mode within {ALLOWED_LOSS_DB:g} dB'}"
                      f"'s on {sum(verdicts[kind])}/{len(verdicts[kind])} links")
            print("\n| mode | up kB/frame | down kB/frame |")
            print("| --- | --- | --- |")
            for name, (up, down) in bytes_rows.items():
                print(f"| {name} | {up / 1e3:.1f} | {down / 1e3:.1f} |")
        if args.kernel_link:
            _kernel(args, pairs, board, veth, server, token)
        if not args.no_faults:
            server = _faults(args, pairs, board, veth, server, token)
    finally:
        server.kill()


def _kernel(args, pairs, board, veth, server, token) -> None:
    """The kernel mode on one link: the first frame is the keyframe (its crop's kernel estimated by
    the server), the others are restored on the board with that kernel."""
    from edge_deblur.blind import restore
    from edge_deblur.partition import KernelModeConfig, KernelOffload

    mbit, rtt = (float(v) for v in args.kernel_link.split(","))
    if veth:
        veth.shape(mbit)
    proxy = Proxy((server.host, int(server.port)), one_way_s=rtt / 2000, rate_bytes_s=None if veth else mbit * 1e6 / 8)
    mode = KernelOffload(KernelModeConfig(OffloadConfig(f"http://127.0.0.1:{proxy.port}", token, model="kernel",
                                                        deadline_s=120)), local=board,
                         restore=Slower(restore, args.board_slowdown))
    w, h = pairs[0][0].shape[1], pairs[0][0].shape[0]
    pairs = frames_of(args.frames + 1, (w, h), one_kernel=True)  # one camera's shake: what the mode assumes
    times, scores = [], []
    for blurred, sharp in pairs[1:args.frames + 1]:
        start = time.perf_counter()
        out = mode(blurred)
        times.append(1000 * (time.perf_counter() - start))
        scores.append(psnr(out, sharp))
    mode.close()
    proxy.close()
    local_db = float(np.mean([psnr(board(b), s) for b, s in pairs[1:args.frames + 1]]))
    blurred_db = float(np.mean([psnr(b, s) for b, s in pairs[1:args.frames + 1]]))
    print(f"\nkernel mode on {mbit:g} Mbit/s, {rtt:g} ms, frames all blurred by Levin's first kernel "
          f"(blurred {blurred_db:.2f} dB): keyframe {times[0]:.0f} ms, then "
          f"{statistics.median(times[1:]) if len(times) > 1 else float('nan'):.0f} ms a frame (median), "
          f"{np.mean(scores):.2f} dB (local {local_db:.2f} dB); {mode.summary}")


class Burst:
    """Other clients saturating a server (each sends frames back to back, directly, not over the
    board's link) from ``start`` until ``stop``: a server with no queue answers the board 503."""

    def __init__(self, url: str, token: str, frame: np.ndarray, clients: int = 2):
        self.url, self.token, self.frame, self.clients = url, token, frame, clients
        self._stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sent = 0

    def _client(self):
        client = V2Client(self.url, self.token)
        while not self._stop.is_set():
            try:
                client.infer("teacher", "image", self.frame[None], timeout=30)
                self.sent += 1
            except (RemoteError, Unreachable):
                time.sleep(0.005)
        client.close()

    def start(self):
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for t in self.threads:
            t.start()

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(60)


FAULTS = ("wrong token", "reset mid-answer", "server killed mid-stream", "503 bursts", "slow server")


def _faults(args, pairs, board, veth, server, token) -> Server:
    """Frames in and out per mode under each fault, on a 10 Mbit/s, 50 ms link; a frame is lost when
    the method raises or returns nothing of the frame's shape. Returns the server running at the end.

    503 bursts: a server of its own with no queue (``--max-queue 0``), two other clients saturating
    it during frames 2-7. Slow server: the server stopped (SIGSTOP) for 3 s from frame 2, the board's
    deadline for an answer 1 s (``OffloadConfig.deadline_s``)."""
    if veth:
        veth.shape(10)
    print("\nfaults on 10 Mbit/s, 50 ms:\n")
    print("| fault | mode | frames in | frames out | lost | in order | fallbacks |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    stream = pairs * 2
    expected = [board(b) for b, _ in stream]  # the board's own result; a remote one is the teacher's
    ns, ip = (veth.ns, veth.ns_ip) if veth else (None, "127.0.0.1")
    faults = [f for f in FAULTS if not args.faults or f in args.faults]
    for fault in faults:
        target = server
        if fault == "503 bursts":
            target = Server(ns, ip, server.tokens, args.server_threads, extra=("--max-queue", "0", "--workers", "1"),
                            port=8001)
        for name in ("offload", "offload jpeg:90", "split", "auto"):
            tok = "edb_wrong" if fault == "wrong token" else token
            proxy = Proxy((target.host, int(target.port)), one_way_s=0.025, rate_bytes_s=None if veth else 10e6 / 8,
                          reset_after_bytes=20_000 if fault == "reset mid-answer" else None)
            url = f"http://127.0.0.1:{proxy.port}"
            modes = board_modes(url, tok, board, args.board_slowdown, args.board_threads,
                                deadline_s=1.0 if fault == "slow server" else 120)
            method = planner_of(modes, url, tok, 0.0, ping_every_s=0.5) if name == "auto" else modes[name]
            burst = Burst(f"http://{target.host}:{target.port}", token, stream[0][0]) if fault == "503 bursts" else None
            out_count, in_order, timer = 0, 0, None
            for i, (blurred, _) in enumerate(stream):
                if i == 2 and fault == "server killed mid-stream":
                    target.kill()
                if i == 2 and burst is not None:
                    burst.start()
                if i == 8 and burst is not None:
                    burst.stop()
                if i == 2 and fault == "slow server":
                    target.proc.send_signal(signal.SIGSTOP)
                    timer = threading.Timer(3.0, lambda: target.proc.send_signal(signal.SIGCONT))
                    timer.start()
                try:
                    out = method(blurred)
                    ok = out is not None and out.shape == blurred.shape
                    out_count += ok
                    # its own frame's result (the board's, or within what the teacher changes): order kept
                    in_order += ok and psnr(out, expected[i]) > psnr(out, expected[(i + 1) % len(stream)]) + 1
                except Exception as e:  # noqa: BLE001 - a lost frame, counted
                    print(f"  {name}: frame {i} lost: {type(e).__name__}: {e}", file=sys.stderr)
            if burst is not None:
                burst.stop()
            if timer is not None:
                timer.join()
            if isinstance(method, Planner):
                method.close()
                why = "; ".join(f"{m}: {dict(modes[m].summary.fallbacks)}" for m in ("offload", "split"))
                why += f"; probes {dict(method.summary.probes)}; chose {dict(method.summary.frames)}"
            else:
                why = str(dict(method.summary.fallbacks))
            if burst is not None:
                why += f" ({burst.sent} burst requests answered)"
            close_all(modes)
            proxy.close()
            print(f"| {fault} | {name} | {len(stream)} | {out_count} | {len(stream) - out_count} | "
                  f"{in_order}/{len(stream)} | {why} |", flush=True)
            if fault == "server killed mid-stream":
                server = target = Server(ns, ip, server.tokens, args.server_threads)
        if target is not server:
            target.kill()
    return server


if __name__ == "__main__":
    main()
