"""Target profiles: what differs per device, as data (one JSON file per target in this folder).

A profile says how the student runs there (runtime, execution providers, precision, threads, tile)
and what it must reach: ``latency_budget_ms`` for one ``frame`` and the ``mac_budget`` that
structured pruning shrinks the student to. The MAC budget is derived from the latency budget and
MobileNetV2's latency on that board (``reference``):

    mac_budget = mac_efficiency * latency_budget_ms * MOBILENET_V2_MACS / reference.mobilenet_ms

i.e. the MACs MobileNetV2's achieved MAC rate would fit in the budget, discounted by
``mac_efficiency``, the share of that rate the target's student reaches. It is data, with its basis,
because it depends on where the student's MACs are: a U-Net's full-resolution element-wise work
reaches little of MobileNetV2's rate (DESIGN.md measured 1.4x from INT8 for a small U-Net against 2x
for MobileNetV2, so about 0.7 of its rate, less with tile overlap: 0.5 is the default), while 1x1
convolutions on 64 channels at 1/8 and 1/16 resolution reach most of it. The budget is what pruning
aims at; whether the student fits is checked by its measured expected latency (the model card).
``tests/test_targets.py`` checks every JSON file's number against this formula.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MOBILENET_V2_MACS = 300_000_000  # MobileNetV2 1.0-224: 300M multiply-adds (Sandler et al., CVPR 2018, Table 4)


@dataclass(frozen=True)
class Reference:
    """MobileNetV2 1.0-224's latency on the board, as published, and the figure used for scaling.

    ``latency_ms``/``precision``/``threads``/``runtime``/``source`` describe a published measurement
    (all ``None`` where none was found, said in ``note``). ``mobilenet_ms`` is what the expected
    latency and the MAC budget scale by, in the target's precision; ``mobilenet_basis`` says how it
    follows from a published figure or how it was estimated or measured (``mobilenet_kind``)."""

    model: str
    precision: str | None
    latency_ms: float | None
    threads: int | None
    runtime: str | None
    source: str | None
    note: str
    mobilenet_ms: float
    mobilenet_kind: str  # "published" (in the target's precision), "estimate" or "measured" (here)
    mobilenet_basis: str


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    cpu: str
    runtime: str  # "litert" | "onnxruntime"
    providers: tuple[str, ...]  # onnxruntime execution providers in order of preference; () for litert
    precision: str  # "int8" | "fp16" | "fp32"
    threads: int
    tile: int  # side of the largest window run in one invoke (edge_deblur.model.TileConfig)
    frame: tuple[int, int]  # (width, height) of the frame the budgets are for
    latency_budget_ms: float
    latency_budget_basis: str
    mac_efficiency: float  # share of MobileNetV2's achieved MACs/s the target's student is budgeted to reach
    mac_efficiency_basis: str
    mac_budget: int
    reference: Reference

    @property
    def fps(self) -> float:
        """Frames per second the latency budget allows."""
        return 1000.0 / self.latency_budget_ms


RUNTIMES = ("litert", "onnxruntime")
PRECISIONS = ("int8", "fp16", "fp32")
MOBILENET_KINDS = ("published", "estimate", "measured")


def available_targets() -> list[str]:
    """Names of the targets with a profile in this folder."""
    return sorted(p.stem for p in HERE.glob("*.json"))


def mac_budget(latency_budget_ms: float, mobilenet_ms: float, mac_efficiency: float) -> int:
    """The MAC budget for a latency budget on a board where MobileNetV2 takes ``mobilenet_ms`` and
    the student reaches ``mac_efficiency`` of its MAC rate (module docstring), rounded to a million."""
    return int(round(mac_efficiency * latency_budget_ms * MOBILENET_V2_MACS / mobilenet_ms, -6))


def load_target(name: str) -> TargetProfile:
    """The profile named ``name`` (``rpi5``, ...); ``ValueError`` listing the known ones otherwise."""
    path = HERE / f"{name}.json"
    if "/" in name or "\\" in name or not path.is_file():
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(available_targets())}")
    data = json.loads(path.read_text())
    if data.get("name") != name:
        raise ValueError(f"{path}: profile names itself {data.get('name')!r}, expected {name!r}")
    if (data["runtime"] not in RUNTIMES or data["precision"] not in PRECISIONS
            or data["reference"]["mobilenet_kind"] not in MOBILENET_KINDS):
        raise ValueError(f"{path}: runtime must be one of {RUNTIMES}, precision one of {PRECISIONS} and "
                         f"reference.mobilenet_kind one of {MOBILENET_KINDS}")
    return TargetProfile(
        **{**data, "providers": tuple(data["providers"]), "frame": tuple(data["frame"]),
           "reference": Reference(**data["reference"])})
