"""Frame encodings for offload: what goes on the wire instead of raw 8-bit RGB, and what it costs.

``raw`` (the default) sends the frame's bytes; ``png`` is lossless and smaller; ``jpeg:Q`` and
``webp:Q`` (quality Q in 1..100) are lossy: the server deblurs the decoded frame, so the result
carries the encoding's loss, and it comes back encoded the same way (the result is as large as the
frame: an encoding that saves bytes up and not down saves half). The quality cost is measured, not
assumed: PSNR of lossy offload against lossless offload on real photos, ``benchmarks/offload_encoding.py``
and docs/BENCHMARKS.md.

A server decodes only what fits its pixel limit: ``encoded_size`` reads the width and height from
the PNG, JPEG or WebP header without decoding (a few kilobytes of JPEG can claim gigapixels).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

CODECS = ("raw", "png", "jpeg", "webp")
LOSSY = ("jpeg", "webp")

# What each encoding costs the result, in dB of PSNR against the sharp photo, below lossless offload
# (22.45 dB): benchmarks/offload_encoding.py --frames 8 --size 480x320 (the teacher; blurred Kodak24
# held-out crops; docs/BENCHMARKS.md). The planner (PlannerConfig.max_quality_loss_db) offers a lossy
# encoding only when its figure here is within the loss the user allowed: one not measured is never
# chosen by itself.
QUALITY_LOSS_DB = {"raw": 0.0, "png": 0.0, "jpeg:95": 0.04, "jpeg:90": 0.06, "jpeg:75": 0.11, "jpeg:50": 0.20,
                   "webp:95": 0.05, "webp:90": 0.07, "webp:75": 0.16}


@dataclass(frozen=True)
class Encoding:
    codec: str = "raw"
    quality: int | None = None  # lossy codecs: 1..100

    @property
    def lossless(self) -> bool:
        return self.codec not in LOSSY

    def __str__(self) -> str:
        return self.codec if self.quality is None else f"{self.codec}:{self.quality}"


def parse_encoding(text: str) -> Encoding:
    """``raw``, ``png``, ``jpeg:Q`` or ``webp:Q`` (Q an integer 1..100; ``jpeg`` alone is ``jpeg:90``)."""
    codec, _, quality = str(text).strip().lower().partition(":")
    if codec not in CODECS:
        raise ValueError(f"encoding {text!r}: expected one of raw, png, jpeg:Q, webp:Q")
    if codec not in LOSSY:
        if quality:
            raise ValueError(f"encoding {text!r}: {codec} is lossless and takes no quality")
        return Encoding(codec)
    try:
        q = int(quality) if quality else 90
    except ValueError:
        raise ValueError(f"encoding {text!r}: quality must be an integer 1..100") from None
    if not 1 <= q <= 100:
        raise ValueError(f"encoding {text!r}: quality must be 1..100, got {q}")
    return Encoding(codec, q)


def quality_loss_db(encoding: "Encoding | str") -> float | None:
    """The measured loss of ``encoding`` (0 for lossless ones), None when it was not measured."""
    encoding = parse_encoding(encoding) if isinstance(encoding, str) else encoding
    return 0.0 if encoding.lossless else QUALITY_LOSS_DB.get(str(encoding))


def encodings_within(max_loss_db: float) -> list[str]:
    """The offload encodings worth offering a planner allowed ``max_loss_db``: lossless ``png``
    (fewer bytes than raw, more coding time), and per lossy codec the measured quality losing the
    most within the limit (the fewest bytes; a higher quality of the same codec only costs bytes).
    ``raw`` is the planner's plain ``offload`` and is not listed."""
    if not max_loss_db >= 0:  # also refuses NaN
        raise ValueError(f"max quality loss {max_loss_db!r} dB: expected a number >= 0")
    chosen = ["png"]
    for codec in LOSSY:
        within = [(loss, e) for e, loss in QUALITY_LOSS_DB.items() if e.startswith(codec + ":") and loss <= max_loss_db]
        if within:
            chosen.append(max(within)[1])
    return chosen


def encode(rgb: np.ndarray, encoding: Encoding) -> np.ndarray:
    """An HxWx3 uint8 RGB frame as the encoded bytes (uint8, 1-D)."""
    params = []
    if encoding.codec == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, encoding.quality]
    elif encoding.codec == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, encoding.quality]
    elif encoding.codec == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fast: most of level 9's saving on photos
    ok, data = cv2.imencode(f".{encoding.codec}", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ValueError(f"cannot encode a {rgb.shape} frame as {encoding}")
    return data.reshape(-1)


def encoded_size(data: bytes, codec: str) -> tuple[int, int]:
    """(width, height) from a PNG, JPEG or WebP header, without decoding; ValueError when the
    header is not that codec's."""
    if codec == "png":
        if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
            raise ValueError("not a PNG")
        return struct.unpack(">II", data[16:24])
    if codec == "jpeg":
        if data[:2] != b"\xff\xd8":
            raise ValueError("not a JPEG")
        p = 2
        while p + 9 <= len(data):
            if data[p] != 0xFF:
                raise ValueError("JPEG: bad marker")
            marker = data[p + 1]
            if marker == 0xFF:  # fill byte
                p += 1
                continue
            length = struct.unpack(">H", data[p + 2:p + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
                h, w = struct.unpack(">HH", data[p + 5:p + 9])
                return w, h
            p += 2 + length
        raise ValueError("JPEG: no frame header")
    if codec == "webp":
        if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
            raise ValueError("not a WebP")
        chunk = data[12:16]
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        raise ValueError("WebP: unknown chunk")
    raise ValueError(f"unknown codec {codec!r}")


def decode(data: np.ndarray, codec: str, max_pixels: int | None = None) -> np.ndarray:
    """Encoded bytes to an HxWx3 uint8 RGB frame; refuses (ValueError) what is not that codec, or
    claims more than ``max_pixels`` before any decoding."""
    raw = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
    w, h = encoded_size(raw, codec)
    if max_pixels is not None and w * h > max_pixels:
        raise ValueError(f"{codec} image of {w}x{h}: more than {max_pixels} pixels")
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (h, w):
        raise ValueError(f"undecodable {codec} data")
    return np.ascontiguousarray(bgr[..., ::-1])
