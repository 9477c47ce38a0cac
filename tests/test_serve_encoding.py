"""Offload with a stated frame encoding: lossless PNG gives the raw offload's result exactly, lossy
JPEG/WebP cost a measured, bounded loss for a fraction of the bytes, and the server decodes nothing
it has not checked (codec, header size against its pixel limit) and never dies on it.

Frames are crops of a real photo (Kodak) blurred by a measured camera-shake kernel; the server runs
the bundled teacher. The lossy bound, 36 dB against the lossless result, is below what these crops
measure (printed) with a margin, and far above what a wrong decode, a channel swap or a shifted
frame gives (under 25 dB)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed (pip install -e '.[test]')")

from edge_deblur.metrics import psnr  # noqa: E402
from edge_deblur.partition import Offload, OffloadConfig, RemoteError, V2Client  # noqa: E402
from edge_deblur.partition.encoding import decode, encode, encoded_size, parse_encoding  # noqa: E402
from edge_deblur.serve.limits import Limits  # noqa: E402
from edge_deblur.serve.server import RunningServer, ServeConfig  # noqa: E402


@pytest.fixture(scope="module")
def frames(photo, levin_kernels):
    """Crops of the photo blurred by a measured camera-shake kernel: what a board offloads."""
    k = levin_kernels[2].astype(np.float32)
    blurred = cv2.filter2D(photo.astype(np.float32), -1, k[::-1, ::-1], borderType=cv2.BORDER_REFLECT)
    blurred = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(blurred[y:y + 144, x:x + 176]) for y, x in [(0, 0), (120, 200), (300, 100)]]


def test_parse_encoding_names_the_problem():
    assert str(parse_encoding("JPEG")) == "jpeg:90" and str(parse_encoding("webp:75")) == "webp:75"
    assert parse_encoding("png").lossless and not parse_encoding("jpeg:95").lossless
    for bad, message in (("gif", "expected one of"), ("jpeg:0", "1..100"), ("jpeg:high", "integer"),
                         ("png:5", "lossless")):
        with pytest.raises(ValueError, match=message):
            parse_encoding(bad)
    with pytest.raises(ValueError, match="expected one of"):
        Offload(OffloadConfig("http://127.0.0.1:1", encoding="bmp"), local=lambda f: f)


def test_headers_give_the_size_without_decoding(photo):
    crop = np.ascontiguousarray(photo[:123, :77])
    for encoding in ("png", "jpeg:80", "webp:80", "webp:100"):
        data = encode(crop, parse_encoding(encoding))
        codec = encoding.split(":")[0]
        assert encoded_size(data.tobytes(), codec) == (77, 123), encoding
        back = decode(data, codec)
        assert back.shape == crop.shape and psnr(crop, back) > 30  # RGB order kept
    big = encode(np.zeros((3000, 2000, 3), np.uint8), parse_encoding("jpeg:50"))  # a few kB claiming 6 Mpx
    assert big.size < 100_000
    with pytest.raises(ValueError, match="more than 1000000 pixels"):
        decode(big, "jpeg", max_pixels=1_000_000)
    with pytest.raises(ValueError, match="not a PNG"):
        decode(big, "png")


def test_offload_encodings_through_the_server(frames):
    with RunningServer(ServeConfig(port=0, grpc_port=None, threads=1)) as s:
        url = f"http://{s.http_url}"
        results = {}
        for encoding in ("raw", "png", "jpeg:90", "webp:90"):
            offload = Offload(OffloadConfig(url, deadline_s=20, encoding=encoding), local=lambda f: f)
            results[encoding] = ([offload(f) for f in frames], offload.summary)
            offload.close()
    raw_outs, raw_summary = results["raw"]
    assert raw_summary.offloaded == len(frames) and not any(np.array_equal(o, f) for o, f in zip(raw_outs, frames))
    for encoding, (outs, summary) in results.items():
        assert summary.offloaded == len(frames) and summary.local == 0, f"{encoding}: {summary}"
        cost = psnr(np.stack(raw_outs), np.stack(outs))
        if encoding == "png":
            assert cost == float("inf") and summary.bytes_up < raw_summary.bytes_up
        elif encoding != "raw":
            assert 36 < cost < float("inf"), f"{encoding}: {cost:.2f} dB against lossless"
            assert summary.bytes_up < 0.2 * raw_summary.bytes_up and summary.bytes_down < 0.2 * raw_summary.bytes_down
            assert f"offloaded ({encoding})" in str(summary)
        print(f"{encoding}: {cost:.2f} dB vs lossless, {summary.bytes_up / len(frames) / 1e3:.1f} kB up per frame")


def test_server_refuses_encodings_it_cannot_check(frames):
    limits = Limits(max_pixels=100_000)
    with RunningServer(ServeConfig(port=0, grpc_port=None, threads=1, limits=limits)) as s:
        client = V2Client(f"http://{s.http_url}")
        jpeg = encode(frames[0], parse_encoding("jpeg:90"))
        big = encode(np.zeros((400, 400, 3), np.uint8), parse_encoding("jpeg:90"))
        cases = [(jpeg, None, "goes with the parameter encoding"), (frames[0][None], {"encoding": "jpeg"}, "goes with"),
                 (jpeg, {"encoding": "png"}, "not a PNG"), (jpeg, {"encoding": "gif"}, "expected one of"),
                 (jpeg, {"encoding": "jpeg", "quality": 0}, "1..100"), (jpeg[:200], {"encoding": "jpeg"}, "undecodable"),
                 (big, {"encoding": "jpeg"}, "more than 100000 pixels"), (jpeg, {"encoding": "raw"}, "raw is not")]
        for data, params, message in cases:
            with pytest.raises(RemoteError, match=message) as e:
                client.infer("deblur", "image", data, timeout=20, parameters=params)
            assert e.value.status == 400
        answer = client.infer("deblur", "image", jpeg, timeout=20, parameters={"encoding": "jpeg", "quality": 90})
        assert decode(answer.output, "jpeg").shape == frames[0].shape  # alive, and answers in kind
        client.close()
