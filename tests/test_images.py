"""Still-image I/O on real photos: round trips, EXIF orientation, broken files, size limits, atomic writes."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_deblur import images
from edge_deblur.errors import EdgeDeblurError, ImageError
from edge_deblur.images import list_images, output_path, read_image, side_by_side, write_image

# The eight EXIF orientations as the EXIF 2.3 table words them, written with numpy's own rotations
# (independent of the transpose-and-flip table in images.py).
SHOWN_AS = {
    1: lambda a: a,
    2: lambda a: np.fliplr(a),  # mirrored horizontally
    3: lambda a: np.rot90(a, 2),  # rotated 180
    4: lambda a: np.flipud(a),  # mirrored vertically
    5: lambda a: np.rot90(np.fliplr(a), 1),  # mirrored horizontally, then rotated 270 clockwise
    6: lambda a: np.rot90(a, -1),  # rotated 90 clockwise
    7: lambda a: np.rot90(np.fliplr(a), -1),  # mirrored horizontally, then rotated 90 clockwise
    8: lambda a: np.rot90(a, 1),  # rotated 270 clockwise
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def exif_block(orientation: int, order: str = "<") -> bytes:
    """A minimal EXIF (TIFF) block whose IFD0 holds only the orientation tag (SHORT)."""
    mark = b"II*\x00" if order == "<" else b"MM\x00*"
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return mark + struct.pack(order + "I", 8) + struct.pack(order + "H", 1) + entry + struct.pack(order + "I", 0)


def with_jpeg_app1(jpeg: bytes, exif: bytes) -> bytes:
    payload = b"Exif\x00\x00" + exif
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def with_png_chunk_after_ihdr(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]  # 8-byte signature + 25-byte IHDR chunk


def encode(suffix: str, rgb: np.ndarray, *params: int) -> bytes:
    bgr = rgb if rgb.ndim == 2 else rgb[..., [2, 1, 0, 3][: rgb.shape[2]]]
    ok, buf = cv2.imencode(suffix, bgr, list(params))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def portrait(photo_paths) -> np.ndarray:
    """A real non-square photo (BSDS, 321 wide, 481 tall) so that transposes show in the shape."""
    bgr = cv2.imread(str(photo_paths[2]), cv2.IMREAD_COLOR)
    assert bgr.shape[0] != bgr.shape[1]
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.fixture(scope="module")
def photo16(photo) -> np.ndarray:
    """A 16-bit version of the photo whose low bytes carry detail 8 bits cannot hold."""
    rng = np.random.default_rng(0)
    image = photo.astype(np.uint16) * 257 + rng.integers(0, 257, photo.shape, dtype=np.uint16)
    assert np.any(image % 257 != 0)
    return image


def test_reads_rgb_in_rgb_order(photo_paths, photo):
    # conftest decodes the same file with cv2 and flips BGR to RGB; a channel swap would differ here.
    np.testing.assert_array_equal(read_image(photo_paths[0]), photo)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_round_trip_is_exact(tmp_path, photo, suffix):
    path = write_image(tmp_path / f"out{suffix}", photo)
    np.testing.assert_array_equal(read_image(path), photo)
    # An independent reader sees the same pixels: the file itself is in the right channel order.
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], photo)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp"])
def test_lossy_round_trip_within_psnr(tmp_path, photo, suffix):
    path = write_image(tmp_path / f"out{suffix}", photo, quality=95)
    back = read_image(path)
    assert back.shape == photo.shape and back.dtype == np.uint8
    # Quality 95 gives about 40 dB on Kodak photos; 35 dB allows for codec versions, while a swap of
    # red and blue (about 18 dB on this photo) or a wrong quality setting would fall far below.
    assert psnr(back, photo) > 35
    assert psnr(cv2.imread(str(path))[..., ::-1], photo) > 35
    assert psnr(back[..., ::-1], photo) < 30


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".jpg"])
def test_gray_stays_gray(tmp_path, photo, suffix):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    back = read_image(write_image(tmp_path / f"gray{suffix}", gray))
    assert back.shape == gray.shape and back.dtype == np.uint8
    if suffix == ".jpg":
        assert psnr(back, gray) > 35  # same bound as the colour JPEG round trip
    else:
        np.testing.assert_array_equal(back, gray)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_rgba_keeps_alpha_exactly(tmp_path, photo, suffix):
    alpha = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)  # a real, textured alpha channel
    rgba = np.dstack([photo, alpha])
    back = read_image(write_image(tmp_path / f"rgba{suffix}", rgba))
    assert back.shape == rgba.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back[..., 3], alpha)  # WEBP too: libwebp codes alpha losslessly
    if suffix == ".webp":
        assert psnr(back[..., :3], photo) > 35
    else:
        np.testing.assert_array_equal(back, rgba)


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_alpha_dropped_where_the_format_has_none(tmp_path, photo, suffix):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)])
    back = read_image(write_image(tmp_path / f"rgba{suffix}", rgba))
    assert back.shape == photo.shape
    assert psnr(back, photo) > 35


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("layout", ["rgb", "gray", "rgba"])
def test_16bit_kept_exactly(tmp_path, photo16, suffix, layout):
    image = {"rgb": photo16, "gray": photo16[..., 1], "rgba": np.dstack([photo16, photo16[..., 0]])}[layout]
    back = read_image(write_image(tmp_path / f"deep{suffix}", image))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("suffix", [".bmp", ".jpg", ".webp"])
def test_16bit_rounded_to_8bit_where_the_format_needs_it(tmp_path, photo16, suffix):
    back = read_image(write_image(tmp_path / f"deep{suffix}", photo16))
    assert back.dtype == np.uint8
    expected = np.rint(photo16 / 257.0).astype(np.uint8)
    if suffix == ".bmp":
        np.testing.assert_array_equal(back, expected)  # lossless: exactly the rounded values
    else:
        assert psnr(back, expected) > 35


def test_float_written_as_8bit(tmp_path, photo):
    floats = photo.astype(np.float32) / 255
    back = read_image(write_image(tmp_path / "float.png", floats))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, photo)  # x / 255 * 255 rounds back to x


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation(tmp_path, portrait, orientation, order):
    plain = encode(".jpg", portrait, cv2.IMWRITE_JPEG_QUALITY, 95)
    (tmp_path / "plain.jpg").write_bytes(plain)
    path = tmp_path / "tagged.jpg"
    path.write_bytes(with_jpeg_app1(plain, exif_block(orientation, order)))
    stored = read_image(tmp_path / "plain.jpg")  # same compressed data, so the same decoded pixels
    upright = read_image(path)
    np.testing.assert_array_equal(upright, SHOWN_AS[orientation](stored))
    # OpenCV's IMREAD_COLOR applies JPEG orientation itself: a second, independent implementation.
    np.testing.assert_array_equal(upright, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_png_exif_orientation_on_16bit_rgba(tmp_path, photo16, orientation):
    rgba = np.dstack([photo16, photo16[..., 2]])[:, :300]  # not square
    png = encode(".png", rgba)
    path = tmp_path / "tagged.png"
    path.write_bytes(with_png_chunk_after_ihdr(png, png_chunk(b"eXIf", exif_block(orientation, ">"))))
    upright = read_image(path)
    assert upright.dtype == np.uint16
    np.testing.assert_array_equal(upright, SHOWN_AS[orientation](rgba))


@pytest.mark.parametrize("suffix, orientation", [(".tif", 6), (".tif", 3), (".webp", 8), (".webp", 5)])
def test_tiff_and_webp_orientation_from_another_writer(tmp_path, portrait, suffix, orientation):
    Image = pytest.importorskip("PIL.Image")
    path = tmp_path / f"tagged{suffix}"
    if suffix == ".tif":
        # 16-bit gray, orientation in the TIFF's own first directory
        image = portrait[..., 0].astype(np.uint16) * 257 + 3
        Image.fromarray(image).save(path, tiffinfo={0x0112: orientation})
    else:
        image = portrait
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(image).save(path, exif=exif.tobytes(), lossless=True)
    np.testing.assert_array_equal(read_image(path), SHOWN_AS[orientation](image))


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nothere\.png: no such file"):
        read_image(tmp_path / "nothere.png")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file"):
        read_image(path)


def test_garbage_with_png_suffix(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match=r"noise\.png: not a supported image"):
        read_image(path)


def test_png_with_a_corrupt_header(tmp_path, photo):
    path = tmp_path / "bad.png"
    path.write_bytes(encode(".png", photo)[:20])  # signature and half of IHDR
    with pytest.raises(ImageError, match=r"bad\.png: corrupt or truncated PNG header"):
        read_image(path)


@pytest.mark.parametrize("suffix, keep", [(".jpg", 0.6), (".jpg", -2), (".png", 0.6), (".png", -12), (".webp", 0.6)])
def test_truncated_file(tmp_path, photo, suffix, keep):
    data = encode(suffix, photo)
    cut = round(len(data) * keep) if isinstance(keep, float) else len(data) + keep  # -2: no EOI; -12: no IEND
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[:cut])
    with pytest.raises(ImageError, match=rf"cut\{suffix}: truncated"):
        read_image(path)


@pytest.mark.parametrize("suffix, params", [(".jpg", []), (".png", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),
                                            (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".bmp", []), (".tif", [])])
def test_pixel_limit_read_from_each_header(tmp_path, portrait, suffix, params):
    # WEBP quality 90 writes a lossy VP8 header, above 100 a lossless VP8L one.
    path = tmp_path / f"photo{suffix}"
    path.write_bytes(encode(suffix, portrait, *params))
    height, width = portrait.shape[:2]
    with pytest.raises(ImageError, match=rf"photo\{suffix}: {width}x{height} = {width * height} pixels exceeds"):
        read_image(path, max_pixels=width * height - 1)
    assert read_image(path, max_pixels=width * height).shape == portrait.shape


def _png_claiming(png: bytes, width: int, height: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:8] + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    sof = jpeg.index(b"\xff\xc0")  # cv2 writes baseline JPEG
    return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


@pytest.mark.parametrize("suffix, forge", [(".png", _png_claiming), (".jpg", _jpeg_claiming)])
def test_decompression_bomb_refused_before_decoding(tmp_path, photo, monkeypatch, suffix, forge):
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(forge(encode(suffix, photo), 60000, 60000))  # 3.6 gigapixels claimed

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded an over-limit image")

    monkeypatch.setattr(cv2, "imdecode", must_not_decode)
    with pytest.raises(ImageError, match=r"60000x60000 = 3600000000 pixels exceeds the limit of 100000000"):
        read_image(path)


def test_pixel_limit_from_environment(photo_paths, monkeypatch):
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageError, match="exceeds the limit of 1000 "):
        read_image(photo_paths[0])
    assert read_image(photo_paths[0], max_pixels=500 * 500).shape == (500, 500, 3)  # the argument wins
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "lots")
    with pytest.raises(EdgeDeblurError, match="EDGE_DEBLUR_MAX_PIXELS='lots'"):
        read_image(photo_paths[0])


def test_failed_encoding_leaves_no_file(tmp_path, photo, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(cv2, "imencode", lambda *args, **kwargs: (False, None))
    with pytest.raises(ImageError, match=r"a\.png: cannot encode"):
        write_image(out / "a.png", photo)

    def raising(*args, **kwargs):
        raise cv2.error("simulated encoder crash")

    monkeypatch.setattr(cv2, "imencode", raising)
    with pytest.raises(ImageError, match=r"b\.jpg: cannot encode"):
        write_image(out / "b.jpg", photo)
    assert list(out.iterdir()) == []  # no final file, no hidden temporary file


def test_failed_replace_keeps_the_old_file_and_no_temp(tmp_path, photo, monkeypatch):
    target = write_image(tmp_path / "a.png", photo)
    before = target.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ImageError, match=r"a\.png: cannot write \(No space left on device\)"):
        write_image(target, 255 - photo)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_write_rejects_what_it_cannot_store(tmp_path, photo):
    with pytest.raises(ImageError, match=r"a\.gif: unknown image suffix"):
        write_image(tmp_path / "a.gif", photo)
    with pytest.raises(ImageError, match=r"a\.png: .* got int32"):
        write_image(tmp_path / "a.png", photo.astype(np.int32))
    with pytest.raises(ImageError, match=r"a\.png: .* got shape \(500, 500, 2\)"):
        write_image(tmp_path / "a.png", photo[..., :2])
    assert list(tmp_path.iterdir()) == []


def test_write_creates_the_parent_folder(tmp_path, photo):
    path = write_image(tmp_path / "a" / "b" / "c.png", photo)
    assert path == tmp_path / "a" / "b" / "c.png"
    np.testing.assert_array_equal(read_image(path), photo)


def test_list_images_on_a_mixed_folder(tmp_path, photo):
    folder = tmp_path / "in"
    for name in ["b.png", "a.JPG", "c.TIFF", "d.webp", "e.bmp", ".hidden.png"]:
        write_image(folder / name, photo[:8, :8])
    (folder / "notes.txt").write_text("not an image")
    write_image(folder / "sub.png" / "nested.png", photo[:8, :8])  # a folder with an image suffix
    extra = tmp_path / "single.jpeg"
    write_image(extra, photo[:8, :8])
    found = list_images([folder, str(extra)])
    assert [p.name for p in found] == ["a.JPG", "b.png", "c.TIFF", "d.webp", "e.bmp", "single.jpeg"]
    assert list_images(str(folder)) == found[:5]  # a single path is not iterated character by character
    with pytest.raises(ImageError, match=r"missing: no such file or folder"):
        list_images([folder, tmp_path / "missing"])


def test_output_path():
    assert output_path("in/photo.jpg", "out") == Path("out/photo.jpg")
    assert output_path(Path("in/photo.x.jpg"), Path("out"), ".png") == Path("out/photo.x.png")
    assert output_path("photo.tif", "out", "png") == Path("out/photo.png")


def test_side_by_side(photo, photo16, portrait):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([photo, gray])
    inputs = [photo.copy(), gray.copy(), rgba.copy(), photo16.copy(), portrait.copy()]
    panels = list(zip(["rgb", "gray", "rgba", "16-bit", "portrait"], inputs))
    picture = side_by_side(panels, height=250)
    portrait_width = round(portrait.shape[1] * 250 / portrait.shape[0])
    assert picture.dtype == np.uint8
    assert picture.shape == (250, 4 * 250 + portrait_width + 4 * images._PANEL_GAP, 3)
    for given, original in zip(inputs, [photo, gray, rgba, photo16, portrait]):
        np.testing.assert_array_equal(given, original)  # labels are drawn on copies
    # Away from the label, the first panel is the photo shrunk to half size.
    half = cv2.resize(photo, (250, 250), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(picture[60:, :250], half[60:])


def test_side_by_side_label_reads_on_any_background():
    # White text with a dark outline: on mid-gray both must appear near the label, nothing elsewhere.
    panels = [(label, np.full((300, 300, 3), 128, np.uint8)) for label in ("blurred", "deblurred")]
    picture = side_by_side(panels)
    assert picture.shape == (300, 2 * 300 + images._PANEL_GAP, 3)
    label_box = picture[:40, :150]
    assert (label_box == 255).all(axis=2).any() and (label_box == 0).all(axis=2).any()
    assert (picture[60:, :300] == 128).all()


@pytest.mark.parametrize("height", [300, 1200])
def test_side_by_side_label_box_fits_the_text(height):
    # A dark box around white text: inside it, the text's ink reaches within the box's margin
    # (~4 px per 600 px of height) plus a quarter of its height (the font's ascent over lowercase)
    # of every side, so no dark block runs past the text; outside it, the panel is untouched.
    picture = side_by_side([("deblurred", np.full((height, height, 3), 128, np.uint8))])
    rows, cols = np.nonzero((picture == 0).all(axis=2))
    box = picture[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (box == 0).all(axis=2).mean() > 0.5 and (box == 255).all(axis=2).any()
    ink_rows, ink_cols = np.nonzero((box > 0).any(axis=2))
    allowed = max(2, round(4 * max(0.4, height / 600))) + box.shape[0] // 4
    for gap in (ink_rows.min(), box.shape[0] - 1 - ink_rows.max(), ink_cols.min(), box.shape[1] - 1 - ink_cols.max()):
        assert gap <= allowed, (gap, allowed)
    outside = np.ones(picture.shape[:2], bool)
    outside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = False
    assert (picture[outside] == 128).all()
