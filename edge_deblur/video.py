"""Video files and cameras: read, deblur frame by frame, write atomically, pick the sharpest frames.

Every frame handed to user code is RGB uint8 (OpenCV's BGR is converted at the edge). The camera
loop runs capture on its own thread behind a bounded ``FrameQueue`` so that a slow deblurrer never
lets latency grow without bound.
"""

from __future__ import annotations

import collections
import numbers
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol

import cv2
import numpy as np

from .errors import VideoError
from .images import AtomicFile, to_rgb_uint8, write_image
from .metrics import laplacian_variance
from .progress import Progress

Deblur = Callable[[np.ndarray], np.ndarray]
QueuePolicy = Literal["drop-oldest", "drop-newest", "block"]

# MPEG-4 Part 2 and Motion-JPEG: encoders that every OpenCV build with FFmpeg has (pip wheels ship no H.264).
_FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "XVID", ".avi": "MJPG"}
VIDEO_SUFFIXES = frozenset(_FOURCC_BY_SUFFIX)


class FrameSource(Protocol):
    """Anything that yields frames: ``read()`` gives the next RGB uint8 frame, or None at the end."""

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class CaptureSource:
    """Frames of an OpenCV ``VideoCapture`` (camera, GStreamer pipeline, file or URL) as RGB uint8."""

    def __init__(self, capture: cv2.VideoCapture, name: str, hint: str = ""):
        if not capture.isOpened():
            capture.release()
            raise VideoError(f"{name}: OpenCV cannot open it{hint}")
        self.capture = capture
        self.name = name

    def read(self) -> np.ndarray | None:
        ok, frame = self.capture.read()
        if not ok:
            return None
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB if frame.ndim == 2 else cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.capture.release()


class Picamera2Source:
    """Frames from a Raspberry Pi camera through picamera2 (imported only when this source is opened)."""

    name = "picamera2"

    def __init__(self):
        try:
            from picamera2 import Picamera2
        except ImportError as err:
            raise VideoError("picamera2: not installed "
                             "(on Raspberry Pi OS: sudo apt install python3-picamera2)") from err
        try:
            self.camera = Picamera2()
            # libcamera names formats by register order: "BGR888" arrives in numpy as R, G, B.
            self.camera.configure(self.camera.create_video_configuration(main={"format": "BGR888"}))
            self.camera.start()
        except Exception as err:  # picamera2 raises assorted types when no camera answers
            raise VideoError(f"picamera2: cannot start the camera ({err})") from err

    def read(self) -> np.ndarray:
        return self.camera.capture_array("main")

    def close(self) -> None:
        self.camera.stop()
        self.camera.close()


def open_camera(source: int | str | os.PathLike) -> FrameSource:
    """Open a frame source: a camera index (int or digit string), a GStreamer pipeline (a string with
    ``!``), ``"picamera2"``, or any file or URL OpenCV can open. Raises ``VideoError`` if it cannot."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, int) or source.isdigit():
        return CaptureSource(cv2.VideoCapture(int(source)), f"camera {source}")
    if source == "picamera2":
        return Picamera2Source()
    if "!" in source:
        return CaptureSource(cv2.VideoCapture(source, cv2.CAP_GSTREAMER), f"GStreamer pipeline {source!r}",
                             " (is this OpenCV built with GStreamer? see cv2.getBuildInformation())")
    return CaptureSource(cv2.VideoCapture(source), source)


class VideoReader:
    """The frames of a video file, RGB uint8, in order: a context manager and a one-pass iterator.

    ``fps`` and ``frame_count`` are what the container reports (``frame_count`` may be an estimate, 0
    when unknown); ``size`` is (width, height). Raises ``VideoError`` if the file cannot be opened or
    holds no frame.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such file")
        self._source = CaptureSource(cv2.VideoCapture(str(self.path)), str(self.path))
        # Decode one frame ahead so that a file with no frame fails here, not halfway through a pipeline.
        self._next = self._source.read()
        if self._next is None:
            self.close()
            raise VideoError(f"{self.path}: no frames (empty or not a video)")
        self.fps = float(self._source.capture.get(cv2.CAP_PROP_FPS))
        self.size = (self._next.shape[1], self._next.shape[0])
        self.frame_count = max(int(self._source.capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)

    def __iter__(self) -> VideoReader:
        return self

    def __next__(self) -> np.ndarray:
        if self._next is None:
            raise StopIteration
        frame, self._next = self._next, self._source.read()
        return frame

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unwritable(probe: Path) -> str | None:
    """Why a file cannot be created at ``probe`` (the OS's words), or None when it can."""
    try:
        with open(probe, "xb"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    probe.unlink(missing_ok=True)
    return None


class VideoWriter:
    """Writes RGB frames to a video file atomically; the codec follows the suffix (see ``VIDEO_SUFFIXES``).

    Frames go to a hidden temporary file beside ``path`` that replaces ``path`` on ``close()``; when the
    ``with`` block raises, the temporary file is deleted and ``path`` is left as it was. Frames must be
    ``size`` = (width, height); gray, RGBA, 16-bit and float frames are converted to RGB 8-bit.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        fourcc = _FOURCC_BY_SUFFIX.get(self.path.suffix.lower())
        if fourcc is None:
            raise VideoError(f"{self.path}: unknown video suffix {self.path.suffix!r} "
                             f"(use one of {', '.join(sorted(VIDEO_SUFFIXES))})")
        if not fps > 0:
            raise VideoError(f"{self.path}: the frame rate must be positive, got {fps}")
        width, height = size
        if width < 1 or height < 1:
            raise VideoError(f"{self.path}: the frame size must be positive, got {width}x{height}")
        self.fps, self.size, self.frames = float(fps), (int(width), int(height)), 0
        try:
            self._target = AtomicFile(self.path)
        except OSError as e:  # the folder cannot be made: a file in the way, no permission, read-only
            raise VideoError(f"{self.path}: cannot create the folder {self.path.parent} ({e.strerror or e})") from None
        self._writer: cv2.VideoWriter | None = cv2.VideoWriter(
            str(self._target.temp), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
        if not self._writer.isOpened():
            self._writer.release()
            try:
                self._target.discard()
            except OSError:
                pass  # nothing was written; the clean-up must not hide the real error
            # OpenCV says only "not opened": find out whether the folder takes files at all.
            cause = _unwritable(self._target.temp)
            if cause:
                raise VideoError(f"{self.path}: cannot write in {self.path.parent} ({cause})")
            raise VideoError(f"{self.path}: OpenCV cannot open a {fourcc} writer at {width}x{height}, {fps} fps")

    def write(self, frame: np.ndarray) -> None:
        """Append one frame (RGB, size (width, height))."""
        if self._writer is None:
            raise VideoError(f"{self.path}: the writer is closed")
        frame = np.asarray(frame)
        width, height = self.size
        if frame.shape[:2] != (height, width):
            raise VideoError(f"{self.path}: frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the video is {width}x{height}")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(to_rgb_uint8(frame)), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and move it to ``path``. Raises ``VideoError`` if no frame was written."""
        if self._writer is None:
            return self.path
        self._writer.release()
        self._writer = None
        if self.frames == 0:
            self._target.discard()
            raise VideoError(f"{self.path}: no frames were written")
        return self._target.commit()

    def abort(self) -> None:
        """Stop writing and delete the temporary file; ``path`` is left untouched."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._target.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class BlurGate:
    """Lets already-sharp frames skip deblurring.

    ``threshold`` is the ``laplacian_variance`` (0-255 scale) at or above which a frame counts as sharp.
    It depends on the scene and resolution: measure a few sharp and blurred frames of your camera.
    """

    threshold: float

    def __post_init__(self):
        if not self.threshold >= 0:
            raise ValueError(f"the sharpness threshold must be >= 0, got {self.threshold}")

    def is_sharp(self, frame: np.ndarray) -> bool:
        return laplacian_variance(frame) >= self.threshold


@dataclass(frozen=True)
class VideoStats:
    """What ``process_video`` did: frames written, of which deblurred and passed through as sharp."""

    frames: int
    deblurred: int
    passed_through: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def process_video(deblur: Deblur, src: str | Path, dst: str | Path, *, gate: BlurGate | None = None,
                  progress: bool | None = None) -> VideoStats:
    """Deblur every frame of the video ``src`` into ``dst``, keeping frame rate, size and frame count.

    With a ``gate``, frames it finds sharp are written unchanged. No frame is ever dropped. ``progress``
    shows a progress bar (default: when stderr is a terminal).
    """
    start = time.perf_counter()
    deblurred = passed = 0
    with VideoReader(src) as reader, VideoWriter(dst, reader.fps, reader.size) as writer, \
            Progress(reader.frame_count or None, desc=reader.path.name, enabled=progress) as bar:
        for frame in reader:
            result, sharp = _deblur_unless_sharp(deblur, gate, frame)
            writer.write(result)
            passed += sharp
            deblurred += not sharp
            bar.update()
    return VideoStats(deblurred + passed, deblurred, passed, time.perf_counter() - start)


def select_sharpest(src: str | Path, dst: str | Path, *, keep: int | float) -> list[int]:
    """Keep the sharpest frames of the video ``src`` (by ``laplacian_variance``); returns their indices.

    ``keep`` is a count (int, capped at the number of frames) or a fraction in (0, 1) (at least one
    frame). Ties go to the earlier frame. The kept frames are written in their original order to
    ``dst``: a video with the source's frame rate if ``dst`` has a video suffix, otherwise a folder of
    PNGs named by frame index (``000042.png``). The video is decoded twice rather than held in memory.
    A folder that already holds such frames (an earlier selection) is refused before any decoding:
    the new frames would be mixed in with the old, and deleting them is the user's call.
    """
    dst = Path(dst)
    if dst.suffix.lower() not in VIDEO_SUFFIXES and dst.is_dir():
        earlier = sorted(p.name for p in dst.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"))
        if earlier:
            raise VideoError(f"{dst} already holds {len(earlier)} selected frame(s) ({earlier[0]}...) from an earlier "
                             f"run; choose an empty folder or remove them")
    with VideoReader(src) as reader:
        scores = np.array([laplacian_variance(frame) for frame in reader])
        fps, size = reader.fps, reader.size
    count = _keep_count(keep, len(scores))
    kept = sorted(np.argsort(-scores, kind="stable")[:count].tolist())
    wanted = set(kept)
    with VideoReader(src) as reader:
        frames = (frame for index, frame in zip(range(kept[-1] + 1), reader) if index in wanted)
        if dst.suffix.lower() in VIDEO_SUFFIXES:
            with VideoWriter(dst, fps, size) as writer:
                for frame in frames:
                    writer.write(frame)
        else:
            for index, frame in zip(kept, frames):
                write_image(dst / f"{index:06d}.png", frame)
    return kept


def _keep_count(keep: int | float, total: int) -> int:
    """How many frames ``keep`` asks for out of ``total``."""
    if isinstance(keep, numbers.Integral) and not isinstance(keep, bool):
        if keep < 1:
            raise ValueError(f"keep={keep}: a frame count must be at least 1")
        return min(int(keep), total)
    if isinstance(keep, numbers.Real) and 0 < keep < 1:
        return max(1, round(keep * total))
    raise ValueError(f"keep={keep!r}: give a frame count (int >= 1) or a fraction in (0, 1)")


def _deblur_unless_sharp(deblur: Deblur, gate: BlurGate | None, frame: np.ndarray) -> tuple[np.ndarray, bool]:
    """The deblurred frame, or the frame itself if the gate finds it sharp; and whether it was passed through."""
    if gate is not None and gate.is_sharp(frame):
        return frame, True
    return deblur(frame), False


class FrameQueue:
    """A bounded, thread-safe queue between a capture thread and a consumer.

    When the queue is full, ``put`` follows ``policy``:

    - ``"drop-oldest"``: the oldest queued frame is discarded to make room. The consumer always works on
      the newest frames and latency stays bounded by ``maxsize`` frames, which is what a live camera
      view wants; ``run_camera`` uses it by default.
    - ``"drop-newest"``: the incoming frame is discarded; the queue keeps the frames it already holds.
    - ``"block"``: ``put`` waits for room. Nothing is lost, but a slow consumer stalls the producer
      (right for files, wrong for a live camera whose driver buffer then fills with stale frames).

    ``close()`` wakes every waiting call: ``get`` still returns what is queued, then None; ``put`` after
    ``close`` discards its item. ``dropped`` counts the items ``get`` will never return for either reason.
    """

    POLICIES = ("drop-oldest", "drop-newest", "block")

    def __init__(self, maxsize: int, policy: QueuePolicy = "drop-oldest"):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        if policy not in self.POLICIES:
            raise ValueError(f"unknown queue policy {policy!r} (choose from {', '.join(self.POLICIES)})")
        self.maxsize, self.policy = maxsize, policy
        self.dropped = 0
        self.closed = False
        self._items: collections.deque = collections.deque()
        self._changed = threading.Condition()

    def put(self, item) -> bool:
        """Queue ``item``; False if it was discarded instead (full under drop-newest, or closed)."""
        with self._changed:
            while self.policy == "block" and len(self._items) >= self.maxsize and not self.closed:
                self._changed.wait()
            if self.closed or (self.policy == "drop-newest" and len(self._items) >= self.maxsize):
                self.dropped += 1
                return False
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._changed.notify_all()
            return True

    def get(self):
        """The oldest item, waiting for one; None once the queue is closed and empty."""
        with self._changed:
            while not self._items and not self.closed:
                self._changed.wait()
            if not self._items:
                return None
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return len(self._items)


class FpsMeter:
    """Frames per second over the last ``window`` frames (a sliding window of timestamps)."""

    def __init__(self, window: int = 30):
        if window < 2:
            raise ValueError(f"the window needs at least 2 frames, got {window}")
        self._stamps: collections.deque[float] = collections.deque(maxlen=window)

    def tick(self, now: float | None = None) -> float:
        """Record a frame at ``now`` (default: ``time.perf_counter()``); returns the current rate."""
        self._stamps.append(time.perf_counter() if now is None else now)
        return self.fps

    @property
    def fps(self) -> float:
        if len(self._stamps) < 2:
            return 0.0
        span = self._stamps[-1] - self._stamps[0]
        return (len(self._stamps) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class CameraStats:
    """What ``run_camera`` did. ``captured == processed + dropped`` always holds: ``dropped`` counts
    every captured frame that was not processed, whether the queue policy discarded it or it was still
    queued (or being deblurred) when the run stopped early. ``fps`` is processed frames per second."""

    captured: int
    processed: int
    dropped: int
    passed_through: int
    fps: float


class _CaptureThread(threading.Thread):
    """Reads ``source`` into ``queue`` until the stream ends or the queue is closed, then closes it."""

    def __init__(self, source: FrameSource, queue: FrameQueue):
        # A daemon, so that a camera hanging in read() cannot keep the process alive after Ctrl-C.
        super().__init__(name="edge-deblur-capture", daemon=True)
        self.source, self.queue = source, queue
        self.captured = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            while not self.queue.closed:
                frame = self.source.read()
                if frame is None:
                    break
                self.captured += 1
                self.queue.put(frame)
        except Exception as err:  # handed to the caller's thread, which re-raises it
            self.error = err
        finally:
            self.queue.close()


def run_camera(deblur: Deblur, source: int | str | FrameSource, *, sink: Callable[[np.ndarray], None] | None = None,
               max_frames: int | None = None, queue_size: int = 2, policy: QueuePolicy = "drop-oldest",
               gate: BlurGate | None = None, progress: bool | None = None) -> CameraStats:
    """Deblur a live stream: a capture thread fills a ``FrameQueue``, this thread deblurs each frame
    and hands the result to ``sink``.

    ``source`` is anything ``open_camera`` takes, or an open ``FrameSource``. The run stops after
    ``max_frames`` processed frames, at the end of the stream, or on Ctrl-C (KeyboardInterrupt), and
    always closes the source and joins the capture thread. With a ``gate``, sharp frames skip
    deblurring. The progress line shows the live fps (default: when stderr is a terminal).
    """
    frames = source if hasattr(source, "read") else open_camera(source)
    queue = FrameQueue(queue_size, policy)
    capture = _CaptureThread(frames, queue)
    meter = FpsMeter()
    taken = processed = passed = 0
    start = time.perf_counter()
    capture.start()
    try:
        with Progress(max_frames, desc=getattr(frames, "name", "camera"), enabled=progress) as bar:
            while max_frames is None or processed < max_frames:
                frame = queue.get()
                if frame is None:
                    break
                taken += 1
                result, sharp = _deblur_unless_sharp(deblur, gate, frame)
                if sink is not None:
                    sink(result)
                processed += 1
                passed += sharp
                bar.update(1, fps=f"{meter.tick():.1f}", dropped=queue.dropped)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live session ends: clean up and report like any other stop
    finally:
        queue.close()
        capture.join()
        frames.close()
    if capture.error is not None:
        raise VideoError(f"{getattr(frames, 'name', 'camera')}: capture failed ({capture.error})") from capture.error
    seconds = time.perf_counter() - start
    return CameraStats(captured=capture.captured, processed=processed,
                       dropped=queue.dropped + len(queue) + taken - processed, passed_through=passed,
                       fps=processed / seconds if seconds > 0 else 0.0)
