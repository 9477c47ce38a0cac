"""How much the SDK says: quiet, normal or verbose, and the native runtimes' own log lines.

LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ straight to file
descriptor 2 the first time an interpreter allocates its tensors, and TensorFlow (host toolchain
only) prints oneDNN and CPU-feature lines when it is imported, some before its logging is set up,
so that neither ``TF_CPP_MIN_LOG_LEVEL`` nor Python's ``sys.stderr`` reaches them. Below verbose,
``native_logs_silenced`` points descriptor 2 at ``/dev/null`` around exactly those calls and puts
it back after; errors still reach the caller as Python exceptions. Standard library only.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL


def set_verbosity(level: int) -> None:
    """QUIET (errors and warnings only), NORMAL (what was done) or VERBOSE (per-image timing and
    the native runtimes' log lines). Below VERBOSE, TensorFlow's C++ INFO and WARNING lines are
    turned off through ``TF_CPP_MIN_LOG_LEVEL`` (unless the environment already sets it), which
    must happen before TensorFlow is imported."""
    global _level
    _level = min(max(int(level), QUIET), VERBOSE)
    if _level < VERBOSE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def verbosity() -> int:
    return _level


def info(message: str) -> None:
    """A line of what was done, on stdout, unless quiet."""
    if _level >= NORMAL:
        print(message, flush=True)


def detail(message: str) -> None:
    """A line for verbose mode only (per-image timing), on stdout."""
    if _level >= VERBOSE:
        print(message, flush=True)


class _ErrorsOnly(logging.Filter):
    """Lets through records of ERROR and above. A filter, not a level: libraries (absl when its
    flags are read) set their loggers' levels again, but leave filters alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def python_notices_silenced(*loggers: str) -> None:
    """Keep only errors from these Python loggers (TensorFlow's and absl's INFO and WARNING notices)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ErrorsOnly) for f in logger.filters):
            logger.addFilter(_ErrorsOnly())


@contextmanager
def native_logs_silenced() -> Iterator[None]:
    """Send what C/C++ code writes to file descriptor 2 to ``/dev/null`` for the duration of the
    block, unless verbose. Python's own messages still get out: when ``sys.stderr`` writes to
    descriptor 2 it is swapped, for the block, for a stream on a duplicate of the real descriptor
    (a ``sys.stderr`` that is not descriptor 2, such as a test's capture, is left alone). Where
    descriptors cannot be duplicated (an embedded interpreter without fd 2) it does nothing."""
    if _level >= VERBOSE:
        yield
        return
    try:
        sys.stderr.flush()
        on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):
        on_fd2 = False
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    python_stderr = sys.stderr
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        if on_fd2:
            sys.stderr = open(saved, "w", buffering=1, closefd=False, encoding=getattr(python_stderr, "encoding", None),
                              errors="backslashreplace")
        yield
    finally:
        if sys.stderr is not python_stderr:
            sys.stderr.flush()
            sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)
