"""Split mode: the bundled INT8 Pi 5 student cut at a level of its U, the head and tail parts on the
board, the middle on ``edge-deblur serve``'s ``split`` model, INT8 features zlib-packed on the wire.

The reference is the whole student run locally (``Deblurrer.load("student-rpi5")``). The parts are
operators of the same INT8 graph, fed the same INT8 codes (the features cross the link as the codes
the quantizer gave them, losslessly packed), so the split result must equal the local one exactly:
any difference would be a wrong cut, a wrong scale or lost bytes, not rounding. Frames are real
photos (Kodak 500x500, BSDS 481x321), one of them larger than the student's 640 tile."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed (pip install -e '.[test]')")

from edge_deblur.model import Deblurrer  # noqa: E402
from edge_deblur.partition import OffloadConfig, RemoteError, V2Client  # noqa: E402
from edge_deblur.partition.split import (SplitOffload, cut_student, pack, request_parameters,  # noqa: E402
                                         unpack)
from edge_deblur.serve.registry import ModelRegistry, SplitModel  # noqa: E402
from edge_deblur.serve.server import RunningServer, ServeConfig  # noqa: E402


@pytest.fixture(scope="module")
def student():
    return Deblurrer.load("student-rpi5", threads=1)


@pytest.fixture(scope="module")
def photos(photo_paths):
    return [np.ascontiguousarray(cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1]) for p in photo_paths[:3]]


@pytest.fixture(scope="module")
def server():
    registry = ModelRegistry()
    registry.add(SplitModel(threads=1))
    with RunningServer(ServeConfig(port=0, grpc_port=None, threads=1), registry=registry) as s:
        yield s


def test_the_parts_chained_on_the_board_are_the_whole_student(photos, student):
    """Every cut level, the middle run here (no server): the three parts are the student."""
    dead = OffloadConfig("http://127.0.0.1:1", model="split", deadline_s=2, probe_after_s=60)
    big = np.ascontiguousarray(np.concatenate([photos[0], photos[1][:, :500]], axis=1))  # 500x1000: two tiles
    for level in (1, 2, 3):
        cut = cut_student("student-rpi5", level)
        assert cut.up_channels == (16, 24, 64)[level - 1] and cut.down_channels == cut.up_channels
        assert len(cut.head) + len(cut.middle) + len(cut.tail) < 1.1 * 306_760  # the student's bytes, once
        split = SplitOffload(dead, level=level, threads=1)
        for frame in (photos[1], big):
            np.testing.assert_array_equal(split(frame), student(frame))
        assert split.summary.split == 0 and split.summary.local == 3  # 1 + 2 windows, all middles here
    with pytest.raises(Exception, match="levels 1 to 3"):
        cut_student("student-rpi5", 4)
    with pytest.raises(Exception, match="INT8"):
        SplitOffload(dead, student="teacher")


def test_split_through_the_server_is_the_local_student(server, photos, student):
    split = SplitOffload(OffloadConfig(f"http://{server.http_url}", model="split", deadline_s=20), threads=1)
    for frame in photos:
        np.testing.assert_array_equal(split(frame), student(frame))
    s = split.summary
    assert s.split == len(photos) and s.local == 0, str(s)
    frame_bytes = sum(f.nbytes for f in photos)
    # level 2: 24 channels at a quarter of the side is 0.5x a frame's bytes as codes, less once packed
    assert s.raw_up == sum(24 * (-(-f.shape[0] // 16) * 4) * (-(-f.shape[1] // 16) * 4) for f in photos)
    assert s.bytes_up < 0.5 * frame_bytes and s.bytes_down < 0.5 * frame_bytes, str(s)
    assert s.bytes_up < s.raw_up and s.bytes_down < s.raw_down  # zlib saved something each way
    print(f"split, 3 photos: {s}")
    split.close()


def test_server_refuses_features_it_cannot_vouch_for_and_the_board_finishes(server, photos, student):
    cut = cut_student("student-rpi5", 2)
    codes = np.zeros((1, 8, 8, 24), np.int8)
    good = request_parameters(cut, codes.shape)
    client = V2Client(f"http://{server.http_url}")
    body = np.frombuffer(pack(codes), np.uint8)
    answer = client.infer("split", "features", body, timeout=20, parameters=good)
    assert unpack(answer.output.tobytes(), (1, 8, 8, 24)).shape == (1, 8, 8, 24)
    bad = [({"student": "0" * 16}, "no student with fingerprint"), ({"scale": good["scale"] * 1.01}, "quantized with scale"),
           ({"zero_point": 3}, "quantized with scale"), ({"shape": "1x8x8x16"}, r"expected \[1, H, W, 24\]"),
           ({"shape": "1x8x8"}, "expected"), ({"shape": "one"}, "must be '1xHxWxC'"), ({"cut": 9}, "levels 1 to 3"),
           ({"cut": "2"}, "integer level"), ({"codec": "gzip"}, "codec must be"),
           ({"shape": "1x4000x4000x24"}, "at most 12000000 pixels")]
    for change, message in bad:
        with pytest.raises(RemoteError, match=message) as e:
            client.infer("split", "features", body, timeout=20, parameters={**good, **change})
        assert e.value.status == 400
    for data, message in ((body[:-3], "bytes, expected"), (np.frombuffer(b"not zlib", np.uint8), "not zlib"),
                          (np.frombuffer(zlib.compress(bytes(2 * codes.nbytes)), np.uint8), r"\+ bytes, expected")):
        with pytest.raises(RemoteError, match=message) as e:  # truncated, garbage, and more than the shape holds
            client.infer("split", "features", data, timeout=20, parameters=good)
        assert e.value.status == 400
    client.close()
    # a board whose student is not the server's: refused, and the board runs the middle itself
    other = SplitOffload(OffloadConfig(f"http://{server.http_url}", model="split", deadline_s=20), threads=1)
    other.cut = other.runner.cut = type(cut)(**{**cut.__dict__, "student": "f" * 16})
    np.testing.assert_array_equal(other(photos[0]), student(photos[0]))
    assert other.summary.local == 1 and other.summary.fallbacks["HTTP 400"] == 1, str(other.summary)


def test_server_gone_mid_stream_loses_no_frame(photos, student):
    registry = ModelRegistry()
    registry.add(SplitModel(threads=1))
    server = RunningServer(ServeConfig(port=0, grpc_port=None, threads=1), registry=registry).start()
    split = SplitOffload(OffloadConfig(f"http://{server.http_url}", model="split", deadline_s=20, probe_after_s=60),
                         threads=1)
    stream = [np.ascontiguousarray(p[:320, :320]) for p in photos] * 2
    outputs = []
    try:
        for i, frame in enumerate(stream):
            if i == 2:
                server.stop()
            outputs.append(split(frame))
    finally:
        if server._thread.is_alive():
            server.stop()
    assert len(outputs) == len(stream)
    for frame, out in zip(stream, outputs):
        np.testing.assert_array_equal(out, student(frame))
    assert split.summary.split == 2 and split.summary.local == len(stream) - 2, str(split.summary)
    assert set(split.summary.fallbacks) <= {"server unreachable", "backing off"}


def test_stock_triton_clients_run_the_middle_over_http_and_grpc():
    import tritonclient.http as httpclient

    cut = cut_student("student-rpi5", 2)
    codes = np.random.default_rng(0).integers(-128, 128, (1, 16, 20, 24), dtype=np.int8)
    body = np.frombuffer(pack(codes), np.uint8)
    tensor = httpclient.InferInput("features", [body.size], "UINT8")
    tensor.set_data_from_numpy(body, binary_data=True)
    import tritonclient.grpc as grpcclient

    registry = ModelRegistry()
    registry.add(SplitModel(threads=1))
    params = request_parameters(cut, codes.shape)  # a string, integers and a float: each V2 parameter type
    with RunningServer(ServeConfig(port=0, grpc_port=0, threads=1), registry=registry) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        result = client.infer("split", [tensor], parameters=params)
        ours = V2Client(f"http://{server.http_url}").infer("split", "features", body, timeout=20, parameters=params)
        assert client.get_model_metadata("split")["inputs"][0]["datatype"] == "UINT8"
        gtensor = grpcclient.InferInput("features", [body.size], "UINT8")
        gtensor.set_data_from_numpy(body)
        via_grpc = grpcclient.InferenceServerClient(server.grpc_url).infer("split", [gtensor], parameters=params)
    np.testing.assert_array_equal(result.as_numpy("features"), ours.output)
    np.testing.assert_array_equal(via_grpc.as_numpy("features"), ours.output)
    assert unpack(ours.output.tobytes(), (1, 16, 20, 24)).dtype == np.int8


def test_probe_runs_the_middle_on_the_server_only(server, photos):
    """The planner's background measurement: True when the server ran the middle, else the reason,
    and the board runs no middle for a probe."""
    live = SplitOffload(OffloadConfig(f"http://{server.http_url}", model="split", deadline_s=20), threads=1)
    assert live.probe(photos[1]) is True and live.summary.split == 1
    dead = SplitOffload(OffloadConfig("http://127.0.0.1:1", model="split", deadline_s=2), threads=1)
    assert dead.probe(photos[1]) == "server unreachable"
    assert dead.summary.local == 0 and dead.runner._middle is None  # nothing ran here
    live.close()
