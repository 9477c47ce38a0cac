"""A live camera loop with your own per-frame code: deblur only the blurred frames, keep the newest.

    python examples/camera_loop.py 0            # OpenCV camera index
    python examples/camera_loop.py picamera2    # Raspberry Pi camera, when picamera2 is installed
"""

import sys

from edge_deblur import Deblurrer
from edge_deblur.video import BlurGate, run_camera

deblur = Deblurrer.load(threads=4)
frames = []


def keep_latest(frame):
    frames[:] = [frame]  # hand the frame to a display, an encoder or a detector here


stats = run_camera(deblur, sys.argv[1] if len(sys.argv) > 1 else "0", sink=keep_latest,
                   max_frames=300, gate=BlurGate(threshold=150.0))
print(f"{stats.processed} frames, {stats.dropped} dropped, {stats.passed_through} already sharp, {stats.fps:.1f} fps")
