"""The partitioned edge-cloud mode, device side: methods with the local methods' interface
(``frame -> frame``) that use a server when it helps and finish every frame on the board when it
does not. Standard library and numpy only: nothing beyond the runtime's install.

- ``client``: a KServe V2 client (HTTP, binary tensors) that works with ``edge-deblur serve`` and Triton;
- ``offload``: mode ``offload`` (frame up, result down) with local fallback and a summary;
- ``split``: mode ``split`` (the INT8 student cut at a level of its U, the middle on the server,
  INT8 features zlib-packed on the wire);
- ``kernel_mode``: mode ``kernel`` (keyframe crop up, kernel down, restoration on the board);
- ``planner``: per frame, the mode expected fastest (moving averages of measured frame times,
  re-probed), within the frame deadline when one is given;
- ``methods``: ``partitioned_method(local, server, token_file, mode)``, what a CLI's
  ``--server URL --token-file F --mode auto|local|offload|split|kernel`` becomes.
"""

from .client import RemoteError, Unreachable, V2Client
from .offload import Offload, OffloadConfig, OffloadSummary, ServerModel, read_token
from .kernel_mode import KernelModeConfig, KernelOffload, KernelSummary
from .split import SplitOffload, SplitSummary, StudentCut, cut_student
from .methods import MODES, PartitionedMethod, partitioned_method
from .planner import Planner, PlannerConfig, PlannerSummary

__all__ = ["V2Client", "RemoteError", "Unreachable", "Offload", "OffloadConfig", "OffloadSummary", "ServerModel",
           "read_token",
           "Planner", "PlannerConfig", "PlannerSummary", "MODES", "PartitionedMethod", "partitioned_method",
           "KernelModeConfig", "KernelOffload", "KernelSummary",
           "SplitOffload", "SplitSummary", "StudentCut", "cut_student"]
