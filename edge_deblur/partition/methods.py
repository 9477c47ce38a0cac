"""One call from the command line's options to a partitioned method: ``--server URL --token-file F
--mode auto|local|offload|kernel`` become a ``frame -> frame`` method wrapping the board's own one."""

from __future__ import annotations

from pathlib import Path

from .kernel_mode import KernelModeConfig, KernelOffload
from .offload import Method, Offload, OffloadConfig, read_token
from .planner import Planner, PlannerConfig

MODES = ("auto", "local", "offload", "kernel")


class PartitionedMethod:
    """A method that also reports, at the end, what it did with the frames (``summary()``)."""

    def __init__(self, run: Method, offload: Offload | KernelOffload | None, planner: Planner | None):
        self._run, self.offload, self.planner = run, offload, planner

    def __call__(self, frame):
        return self._run(frame)

    def summary(self) -> str:
        parts = []
        if self.planner is not None:
            parts.append(f"planner: {self.planner.summary}")
        if self.offload is not None:
            parts.append(f"{'kernel' if isinstance(self.offload, KernelOffload) else 'offload'}: {self.offload.summary}")
        return "; ".join(parts) or "all frames local"

    def close(self) -> None:
        if self.offload is not None:
            self.offload.close()


def partitioned_method(local: Method, server: str | None, token_file: str | Path | None = None, mode: str = "auto",
                       deadline_s: float = 1.0, frame_deadline_s: float | None = None) -> PartitionedMethod:
    """``local`` alone (mode ``local`` or no server), every frame offered to the server with local
    fallback (``offload``), keyframe crops up and kernels down with the restoration on the board
    (``kernel``: needs the server's ``kernel`` model and ``edge_deblur.blind``), or the planner's
    choice per frame between local and offload (``auto``). ``deadline_s`` bounds a
    server's answer; ``frame_deadline_s`` is the planner's frame budget."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "local" or server is None:
        if mode in ("offload", "kernel"):
            raise ValueError(f"mode {mode} needs a server URL")
        return PartitionedMethod(local, None, None)
    token = read_token(token_file) if token_file else None
    if mode == "kernel":
        kernel = KernelOffload(KernelModeConfig(OffloadConfig(server, token, model="kernel", deadline_s=deadline_s)),
                               local=local)
        return PartitionedMethod(kernel, kernel, None)
    offload = Offload(OffloadConfig(server, token, deadline_s=deadline_s), local=local)
    if mode == "offload":
        return PartitionedMethod(offload, offload, None)
    planner = Planner({"local": local, "offload": offload}, PlannerConfig(deadline_s=frame_deadline_s))
    return PartitionedMethod(planner, offload, planner)
