"""One call from the command line's options to a partitioned method: ``--server URL --token-file F
--mode auto|local|offload|split|kernel`` become a ``frame -> frame`` method wrapping the board's own one."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from .kernel_mode import KernelModeConfig, KernelOffload
from .client import V2Client
from .offload import FRAME_DEADLINE_S, STILL_DEADLINE_S, Method, Offload, OffloadConfig, ServerModel, read_token
from .planner import LinkMonitor, Planner, PlannerConfig
from .split import SplitOffload

MODES = ("auto", "local", "offload", "split", "kernel")


class PartitionedMethod:
    """A method that also reports, at the end, what it did with the frames (``summary()``)."""

    def __init__(self, run: Method, offload: Offload | KernelOffload | None, planner: Planner | None,
                 split: SplitOffload | None = None):
        self._run, self.offload, self.planner, self.split = run, offload, planner, split

    def __call__(self, frame):
        return self._run(frame)

    def summary(self) -> str:
        parts = []
        if self.planner is not None:
            self.planner.finish()
            parts.append(f"planner: {self.planner.summary}")
        if self.offload is not None:
            parts.append(f"{'kernel' if isinstance(self.offload, KernelOffload) else 'offload'}: {self.offload.summary}")
        if self.planner is not None:
            for name, mode in self.planner.modes.items():
                if name.startswith("offload ") and mode.summary.frames:
                    parts.append(f"{name}: {mode.summary}")
        if self.split is not None:
            parts.append(f"split: {self.split.summary}")
        return "; ".join(parts) or "all frames local"

    def close(self) -> None:
        if self.planner is not None:
            self.planner.close()  # its probe in flight first: it uses the clients closed below
            for name, mode in self.planner.modes.items():
                if name.startswith("offload "):
                    mode.close()
        for remote in (self.offload, self.split):
            if remote is not None:
                remote.close()


def partitioned_method(local: Method, server: str | None, token_file: str | Path | None = None, mode: str = "auto",
                       deadline_s: float | None = None, frame_deadline_s: float | None = None,
                       student: str | Path = "default", split_level: int = 2, encoding: str = "raw",
                       max_quality_loss_db: float = 0.0, server_model: str = "teacher",
                       still: bool = False) -> PartitionedMethod:
    """``local`` alone (mode ``local`` or no server), every frame offered to the server with local
    fallback (``offload``), the INT8 ``student`` cut at ``split_level`` with its middle on the
    server's ``split`` model (``split``: the student's result, its middle run here when the server
    does not answer), keyframe crops up and kernels down with the restoration on the board
    (``kernel``: needs the server's ``kernel`` model and ``edge_deblur.blind``), or the planner's
    choice per frame between local, offload and (when the server serves ``split``) split
    (``auto``: remote modes measured in the background on frame copies, the link's round trip
    pinged; ``planner``). ``deadline_s`` bounds a server's answer (``--server-timeout``). By default,
    for stills (``still=True``: ``edge-deblur deblur``) it is ``STILL_DEADLINE_S`` (300 s) for every
    mode and whatever runs the model, unasked: a still has no frame deadline, a large photo may take a
    network seconds, and the server's own ``--timeout`` bounds what it runs. For frames it follows
    what runs the model offload calls (``ServerModel.deadline_s``: its ``edge_deblur_engine`` marker,
    else its platform): ``FRAME_DEADLINE_S`` (1 s) for a network (``teacher``, or a ``deblur`` marked
    ``network``), ``STILL_DEADLINE_S`` for the auto engine (``deblur`` marked ``auto``, an unmarked
    Python backend) or a server that does not say; kernel and split modes keep 1 s, or
    ``STILL_DEADLINE_S`` for ``server_model="deblur"``. ``frame_deadline_s`` is the planner's
    frame budget; ``encoding`` is how offloaded frames and results travel (``partition.encoding``).
    ``max_quality_loss_db`` (auto): the planner may also offload in a lossy encoding whose measured
    loss (``encoding.QUALITY_LOSS_DB``) is within it, besides raw and PNG; 0 (the default): lossless
    only. A lossy ``encoding`` stated for auto must be within it too (ValueError otherwise).
    ``server_model`` is the server's model that offload calls: ``teacher`` (the feed-forward
    network, the default: real time) or ``deblur`` (the server's best, its auto engine: seconds per
    frame, for stills); the link monitor's sized pings always go to ``teacher``. A server from before
    ``teacher`` (404 for it) is called on its ``deblur``, then the network, for the whole session
    (``offload.ServerModel``: one for all the calls here, logged once)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "local" or server is None:
        if mode in ("offload", "split", "kernel"):
            raise ValueError(f"mode {mode} needs a server URL")
        return PartitionedMethod(local, None, None)
    token = read_token(token_file) if token_file else None
    if deadline_s is None and still:  # stills (`edge-deblur deblur`): no frame deadline, whatever runs the model
        deadline_s = STILL_DEADLINE_S
    # the kernel and split models' answers: a frame's, or a still's for the server's deblur
    remote_deadline_s = deadline_s if deadline_s is not None else (
        STILL_DEADLINE_S if server_model == "deblur" else FRAME_DEADLINE_S)
    if mode == "kernel":
        kernel = KernelOffload(KernelModeConfig(OffloadConfig(server, token, model="kernel",
                                                              deadline_s=remote_deadline_s)), local=local)
        return PartitionedMethod(kernel, kernel, None)
    split_config = OffloadConfig(server, token, model="split", deadline_s=remote_deadline_s)
    if mode == "split":
        split = SplitOffload(split_config, student, split_level, local=local)
        return PartitionedMethod(split, None, None, split)
    # one name for the model on this server for every call of the session: an old server's `deblur`
    # once its 404 for `teacher` has been seen (offload.ServerModel)
    named = ServerModel(server_model, server)
    client = V2Client(server, token)
    if deadline_s is None:  # frames: what runs the model decides (a network: a frame's; the auto engine: a still's)
        deadline_s = named.deadline_s(client)
    offload = Offload(OffloadConfig(server, token, model=server_model, deadline_s=deadline_s, encoding=encoding),
                      local=local, server_model=named, client=client)
    if mode == "offload":
        return PartitionedMethod(offload, offload, None)
    from .encoding import encodings_within, parse_encoding, quality_loss_db

    stated = parse_encoding(encoding)
    loss = quality_loss_db(stated)
    if loss is None or loss > max_quality_loss_db:
        offload.close()
        raise ValueError(f"mode auto with encoding {stated}: "
                         f"{'its quality loss was not measured' if loss is None else f'it loses {loss:.2f} dB'}, more than "
                         f"the {max_quality_loss_db:g} dB allowed (max quality loss); allow it or use raw/png")
    modes = {"local": local}
    split = None
    if offload.client.ready("split"):
        try:  # auto offers split only for a student it can cut (an INT8 U-shaped .tflite)
            split = SplitOffload(split_config, student, split_level, local=local)
        except ModelError:
            split = None
    if split is not None:  # first: the planner probes remote modes in order, and split's features are the smaller
        modes["split"] = split
    modes["offload"] = offload
    for other in encodings_within(max_quality_loss_db):  # the planner's own choice of encoding, one mode each
        if other != str(stated):
            # a connection of its own: a probe of one encoding must not hold up a frame in another
            modes[f"offload {other}"] = Offload(OffloadConfig(server, token, model=server_model, deadline_s=deadline_s,
                                                              encoding=other),
                                                local=local, server_model=named)
    # the sized pings go to the network (`teacher`), whatever the frames go to
    pinged = named if server_model == "teacher" else ServerModel("teacher", server)
    planner = Planner(modes, PlannerConfig(deadline_s=frame_deadline_s, background=True,
                                           max_quality_loss_db=max_quality_loss_db),
                      link=LinkMonitor(server, token, model=pinged))
    return PartitionedMethod(planner, offload, planner, split)
