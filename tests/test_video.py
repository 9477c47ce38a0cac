"""Video files and cameras on short real clips: a crop window moving over a real photo."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur.errors import VideoError
from edge_deblur.images import read_image
from edge_deblur.metrics import laplacian_variance
from edge_deblur.video import (BlurGate, FpsMeter, FrameQueue, VideoReader, VideoWriter, open_camera,
                               process_video, run_camera, select_sharpest)

FPS = 12.5
WIDTH, HEIGHT = 160, 120
FRAMES = 24
BLURRED = [i for i in range(FRAMES) if i % 3 == 1]  # a third of the frames shaken
SHARP = [i for i in range(FRAMES) if i not in BLURRED]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def invert(frame: np.ndarray) -> np.ndarray:
    """A stand-in for a deblurrer whose effect is unmistakable in the output."""
    return 255 - frame


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """Encode RGB frames with OpenCV directly (not with the code under test)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decode(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (got := capture.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.fixture(scope="module")
def crops(photo) -> list[np.ndarray]:
    """A 160x120 window panning diagonally across a real Kodak photo, one step per frame."""
    return [np.ascontiguousarray(photo[8 * i:8 * i + HEIGHT, 10 * i:10 * i + WIDTH]) for i in range(FRAMES)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, crops) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "pan.avi", crops)


@pytest.fixture(scope="module")
def shaky_clip(tmp_path_factory, crops) -> Path:
    frames = [cv2.GaussianBlur(f, (0, 0), 2.5) if i in BLURRED else f for i, f in enumerate(crops)]
    return write_clip(tmp_path_factory.mktemp("video") / "shaky.avi", frames)


@pytest.fixture(scope="module")
def shaky_threshold(shaky_clip) -> float:
    """A sharpness threshold between the blurred and the sharp frames of ``shaky_clip``."""
    scores = np.array([laplacian_variance(f) for f in decode(shaky_clip)])
    blurred_max, sharp_min = scores[BLURRED].max(), scores[SHARP].min()
    assert blurred_max < sharp_min / 2, "the test clip must separate blurred and sharp frames clearly"
    return float(np.sqrt(blurred_max * sharp_min))


def test_reader_reports_the_clip_and_yields_rgb(clip, crops):
    with VideoReader(clip) as reader:
        assert reader.fps == pytest.approx(FPS)
        assert reader.size == (WIDTH, HEIGHT)
        assert reader.frame_count == FRAMES
        frames = list(reader)
    assert len(frames) == FRAMES
    assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in frames)
    # Motion-JPEG keeps about 35 dB here; with red and blue swapped the match falls to about 17 dB.
    assert min(psnr(f, c) for f, c in zip(frames, crops)) > 30
    assert psnr(frames[0][..., ::-1], crops[0]) < 25


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match=r"gone\.mp4: no such file"):
        VideoReader(tmp_path / "gone.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.avi"
    empty.touch()
    for path in (garbage, empty):
        with pytest.raises(VideoError, match=rf"{path.name}: "):
            VideoReader(path)


def test_process_video_keeps_every_frame_fps_and_size(tmp_path, clip):
    seen = []

    def deblur(frame):
        seen.append((frame.shape, frame.dtype))
        return invert(frame)

    stats = process_video(deblur, clip, tmp_path / "out.mp4", progress=False)
    assert (stats.frames, stats.deblurred, stats.passed_through) == (FRAMES, FRAMES, 0)
    assert seen == [((HEIGHT, WIDTH, 3), np.uint8)] * FRAMES
    with VideoReader(tmp_path / "out.mp4") as reader:
        assert reader.fps == pytest.approx(FPS)
        assert reader.size == (WIDTH, HEIGHT)
        written = list(reader)
    assert len(written) == FRAMES
    # Each output frame is the inverted input after one more lossy MPEG-4 pass (about 35 dB); a frame
    # out of order would be a neighbouring crop, about 15 dB.
    for out, frame in zip(written, decode(clip)):
        assert psnr(out, invert(frame)) > 25
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_gate_passes_sharp_frames_through(tmp_path, shaky_clip, shaky_threshold):
    stats = process_video(invert, shaky_clip, tmp_path / "out.avi", gate=BlurGate(shaky_threshold), progress=False)
    assert (stats.frames, stats.deblurred, stats.passed_through) == (FRAMES, len(BLURRED), len(SHARP))
    written = decode(tmp_path / "out.avi")
    # Compared with the decoded input (both passes are lossy): a passed-through frame stays close to it
    # (about 46 dB) and far from its inverse (about 10 dB); a deblurred (inverted) one the other way round.
    for index, (out, frame) in enumerate(zip(written, decode(shaky_clip))):
        kept, inverted = psnr(out, frame), psnr(out, invert(frame))
        assert (kept > 30 and inverted < 20) if index in SHARP else (inverted > 30 and kept < 20)


def test_select_sharpest_into_a_video(tmp_path, shaky_clip):
    kept = select_sharpest(shaky_clip, tmp_path / "best.avi", keep=len(SHARP))
    assert kept == SHARP
    written = decode(tmp_path / "best.avi")
    source = decode(shaky_clip)
    assert len(written) == len(SHARP)
    for out, index in zip(written, SHARP):  # original order, one more Motion-JPEG pass
        assert psnr(out, source[index]) > 30


def test_select_sharpest_into_a_folder_by_fraction(tmp_path, shaky_clip):
    kept = select_sharpest(shaky_clip, tmp_path / "best", keep=0.25)
    assert len(kept) == round(0.25 * FRAMES) and kept == sorted(kept)
    assert set(kept) <= set(SHARP)
    source = decode(shaky_clip)
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [f"{i:06d}.png" for i in kept]
    for index in kept:  # PNG is lossless: exactly the decoded frame
        np.testing.assert_array_equal(read_image(tmp_path / "best" / f"{index:06d}.png"), source[index])


@pytest.mark.parametrize("keep", [0, -3, 0.0, 1.0, 1.5, True, "3"])
def test_select_sharpest_rejects_bad_keep(tmp_path, clip, keep):
    with pytest.raises(ValueError, match="keep="):
        select_sharpest(clip, tmp_path / "best.avi", keep=keep)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_a_wrong_size_and_leaves_nothing(tmp_path, crops):
    with pytest.raises(VideoError, match=r"out\.mp4: frame 1 is 120x160, the video is 160x120"):
        with VideoWriter(tmp_path / "out.mp4", FPS, (WIDTH, HEIGHT)) as writer:
            writer.write(crops[0])
            writer.write(crops[1].transpose(1, 0, 2))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary twin


def test_writer_keeps_the_old_file_when_the_block_raises(tmp_path, crops):
    target = tmp_path / "out.avi"
    with VideoWriter(target, FPS, (WIDTH, HEIGHT)) as writer:
        writer.write(crops[0])
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="deblurrer crashed"):
        with VideoWriter(target, FPS, (WIDTH, HEIGHT)) as writer:
            writer.write(crops[1])
            raise RuntimeError("deblurrer crashed")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.avi"]


def test_failing_writer_leaves_no_file(tmp_path, monkeypatch):
    class Unopenable:
        def __init__(self, path, *args):
            Path(path).write_bytes(b"")  # as FFmpeg may create the file before giving up

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", Unopenable)
    with pytest.raises(VideoError, match=r"out\.mp4: OpenCV cannot open a mp4v writer"):
        VideoWriter(tmp_path / "out.mp4", FPS, (WIDTH, HEIGHT))
    with pytest.raises(VideoError, match=r"out\.flv: unknown video suffix"):
        VideoWriter(tmp_path / "out.flv", FPS, (WIDTH, HEIGHT))
    assert list(tmp_path.iterdir()) == []


def test_writer_with_no_frames_leaves_no_file(tmp_path):
    with pytest.raises(VideoError, match=r"out\.avi: no frames were written"):
        with VideoWriter(tmp_path / "out.avi", FPS, (WIDTH, HEIGHT)):
            pass
    assert list(tmp_path.iterdir()) == []


def test_blur_gate_tells_sharp_from_blurred(crops):
    gate = BlurGate(threshold=laplacian_variance(crops[0]) / 2)
    assert gate.is_sharp(crops[0])
    assert not gate.is_sharp(cv2.GaussianBlur(crops[0], (0, 0), 2.5))
    with pytest.raises(ValueError):
        BlurGate(-1.0)


def test_queue_drop_oldest_keeps_the_newest():
    queue = FrameQueue(2, "drop-oldest")
    assert all(queue.put(i) for i in range(5))
    assert queue.dropped == 3
    queue.close()
    assert [queue.get(), queue.get(), queue.get()] == [3, 4, None]


def test_queue_drop_newest_keeps_the_first():
    queue = FrameQueue(2, "drop-newest")
    assert [queue.put(i) for i in range(5)] == [True, True, False, False, False]
    assert queue.dropped == 3
    queue.close()
    assert [queue.get(), queue.get(), queue.get()] == [0, 1, None]


def test_queue_block_loses_nothing():
    queue = FrameQueue(1, "block")

    def produce():
        for i in range(50):
            queue.put(i)
        queue.close()

    producer = threading.Thread(target=produce)
    producer.start()
    received = list(iter(queue.get, None))  # each get() unblocks the waiting put()
    producer.join()
    assert received == list(range(50)) and queue.dropped == 0


def test_queue_close_releases_a_blocked_put_and_counts_it():
    queue = FrameQueue(1, "block")
    queue.put("a")
    results = []
    producer = threading.Thread(target=lambda: results.append(queue.put("b")))
    producer.start()
    queue.close()
    producer.join(timeout=10)  # a guard against a hang, not a timing assertion
    assert not producer.is_alive() and results == [False]
    assert queue.dropped == 1 and queue.put("c") is False and queue.dropped == 2
    assert [queue.get(), queue.get()] == ["a", None]


@pytest.mark.parametrize("maxsize, policy", [(0, "block"), (2, "drop-random")])
def test_queue_rejects_bad_settings(maxsize, policy):
    with pytest.raises(ValueError):
        FrameQueue(maxsize, policy)


def test_fps_meter_over_a_sliding_window():
    meter = FpsMeter(window=5)
    assert meter.tick(0.0) == 0.0  # one timestamp gives no rate yet
    for i in range(1, 10):
        meter.tick(i * 0.1)  # 10 frames per second
    assert meter.fps == pytest.approx(10.0)
    for i in range(1, 4):
        meter.tick(0.9 + i * 0.5)  # slows to 2 fps
    assert 2.0 < meter.fps < 10.0  # the window still spans both rates
    meter.tick(0.9 + 4 * 0.5)  # window - 1 slow intervals later only the new rate is left
    assert meter.fps == pytest.approx(2.0)


class WatchedSource:
    """A video file opened with ``open_camera``, recording reads, the end of the stream and close()."""

    name = "watched"

    def __init__(self, path: Path):
        self.inner = open_camera(str(path))
        self.reads = 0
        self.ended = threading.Event()
        self.closed = False

    def read(self):
        frame = self.inner.read()
        if frame is None:
            self.ended.set()
        else:
            self.reads += 1
        return frame

    def close(self):
        self.closed = True
        self.inner.close()


def test_run_camera_blocking_processes_every_frame(clip):
    results = []
    stats = run_camera(invert, str(clip), sink=results.append, policy="block", progress=False)
    assert (stats.captured, stats.processed, stats.dropped) == (FRAMES, FRAMES, 0)
    for result, frame in zip(results, decode(clip), strict=True):  # same decoder: exact, and in order
        np.testing.assert_array_equal(result, invert(frame))
    assert not any(t.name == "edge-deblur-capture" for t in threading.enumerate())


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_run_camera_with_a_slow_deblurrer_drops_frames(clip, policy):
    source = WatchedSource(clip)

    def slow(frame):
        # Slow in the most deterministic way: the first frame is not done until the whole stream has
        # been captured, so the queue must have overflowed.
        assert source.ended.wait(timeout=60), "capture never reached the end of the clip"
        return invert(frame)

    results = []
    stats = run_camera(slow, source, sink=results.append, queue_size=2, policy=policy, progress=False)
    # One frame in the deblurrer plus a full queue of two survive; every other frame was dropped.
    assert stats.captured == source.reads == FRAMES
    assert stats.processed == len(results) == 3
    assert stats.captured == stats.processed + stats.dropped
    assert source.closed
    frames = [invert(f) for f in decode(clip)]
    if policy == "drop-oldest":  # the newest frames win
        np.testing.assert_array_equal(results[-2], frames[-2])
        np.testing.assert_array_equal(results[-1], frames[-1])
    else:  # the first frames win
        np.testing.assert_array_equal(results[0], frames[0])
        np.testing.assert_array_equal(results[1], frames[1])


def test_run_camera_stops_at_max_frames(clip):
    source = WatchedSource(clip)
    stats = run_camera(invert, source, max_frames=5, policy="block", progress=False)
    assert stats.processed == 5
    # Capture may run a frame or two ahead; whatever it caught beyond five is accounted as dropped.
    assert stats.captured == source.reads and stats.captured == stats.processed + stats.dropped
    assert source.closed and not source.ended.is_set()


def test_run_camera_ends_cleanly_on_ctrl_c(clip):
    source = WatchedSource(clip)
    calls = []

    def interrupted(frame):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return invert(frame)

    stats = run_camera(interrupted, source, policy="block", progress=False)
    assert stats.processed == 2
    assert stats.captured == source.reads and stats.captured == stats.processed + stats.dropped
    assert source.closed
    assert not any(t.name == "edge-deblur-capture" for t in threading.enumerate())


def test_run_camera_counts_frames_passed_through(shaky_clip, shaky_threshold):
    stats = run_camera(invert, str(shaky_clip), policy="block", gate=BlurGate(shaky_threshold), progress=False)
    assert (stats.processed, stats.passed_through) == (FRAMES, len(SHARP))


def test_open_camera_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    with pytest.raises(VideoError, match="picamera2: not installed"):
        open_camera("picamera2")
    with pytest.raises(VideoError, match="GStreamer"):
        open_camera("nosuchelement ! appsink")
    with pytest.raises(VideoError, match=r"nothere\.mp4: OpenCV cannot open it"):
        open_camera(str(tmp_path / "nothere.mp4"))


def test_writer_names_a_permission_problem_and_its_clean_up_never_raises(tmp_path):
    # procfs takes no new files, even from root: OpenCV's "not opened" is explained by the OS's cause.
    with pytest.raises(VideoError, match=r"/proc/edge-deblur\.mp4: cannot write in /proc \("):
        VideoWriter("/proc/edge-deblur.mp4", 10, (160, 120))
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(VideoError, match=rf"cannot create the folder {blocker}"):
        VideoWriter(blocker / "out.mp4", 10, (160, 120))


def test_select_into_a_folder_holding_an_earlier_selection_is_refused(tmp_path, shaky_clip):
    select_sharpest(shaky_clip, tmp_path / "best", keep=3)
    before = sorted((tmp_path / "best").iterdir())
    with pytest.raises(VideoError, match=r"best already holds 3 selected frame\(s\) .* from an earlier run"):
        select_sharpest(shaky_clip, tmp_path / "best", keep=2)
    assert sorted((tmp_path / "best").iterdir()) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("unrelated files do not block")
    assert len(select_sharpest(shaky_clip, tmp_path / "other", keep=2)) == 2
