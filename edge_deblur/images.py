"""Still images in and out: safe reading (size limit, truncation, EXIF orientation), atomic writing.

Arrays follow the SDK convention: RGB channel order; HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA);
uint8 or uint16 (and float in [0, 1] on writing). JPEG, PNG, WEBP, BMP and TIFF are supported.
"""

from __future__ import annotations

import os
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import cv2
import numpy as np

from .errors import EdgeDeblurError, ImageError

DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "EDGE_DEBLUR_MAX_PIXELS"

_FORMAT_BY_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
                     ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_SUFFIXES = frozenset(_FORMAT_BY_SUFFIX)
_EIGHT_BIT_FORMATS = {"JPEG", "WEBP", "BMP"}
_OPAQUE_FORMATS = {"JPEG", "BMP"}

_LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PANEL_GAP = 4  # pixels of white between panels


class AtomicFile:
    """A temporary path beside ``path`` that replaces ``path`` in one step on ``commit()``.

    Readers never see a half-written file under the final name. The temporary name is hidden (leading
    dot) and keeps every suffix, because some writers pick the format by it (OpenCV's VideoWriter the
    container, Keras the ``.weights.h5`` in a name). As a context manager it yields the temporary path,
    commits when the block succeeds and deletes the temporary file when it raises. The parent folder
    is created.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        base, dot, suffixes = self.path.name.partition(".")
        self.temp = self.path.with_name(f".{base}.{secrets.token_hex(4)}.part{dot}{suffixes}")

    def commit(self) -> Path:
        try:
            os.replace(self.temp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.temp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@dataclass(frozen=True)
class _Header:
    """What the file's header says, read without decoding the pixels."""

    width: int
    height: int
    orientation: int = 1  # EXIF orientation, 1 = upright
    complete: bool = True  # False when the format's end marker is missing (a truncated file)
    upright_patch: tuple[int, bytes] | None = None  # (offset, bytes) that mark the file upright


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as RGB(A) or gray, uint8 or uint16 (16-bit files keep their precision), upright.

    The EXIF orientation (JPEG, PNG ``eXIf``, WEBP ``EXIF``, TIFF) is applied to every kind of image,
    16-bit and RGBA included. Before any pixel is decoded, the header's width x height is checked
    against ``max_pixels`` (default: ``EDGE_DEBLUR_MAX_PIXELS`` from the environment, else
    ``DEFAULT_MAX_PIXELS``), which stops decompression bombs. Raises ``ImageError`` for a missing,
    empty, truncated, undecodable or too large file.
    """
    path = Path(path)
    data = _read_bytes(path)
    fmt = _sniff_format(data)
    if fmt is None:
        raise ImageError(f"{path}: not a supported image (JPEG, PNG, WEBP, BMP or TIFF)")
    try:
        header = _HEADER_READERS[fmt](data)
    except (IndexError, struct.error):
        raise ImageError(f"{path}: corrupt or truncated {fmt} header (it ends too early)") from None
    except ValueError as err:
        raise ImageError(f"{path}: corrupt {fmt} header ({err})") from err
    limit = _max_pixels(max_pixels)
    if header.width * header.height > limit:
        raise ImageError(f"{path}: {header.width}x{header.height} = {header.width * header.height} pixels "
                         f"exceeds the limit of {limit} (raise it with --max-pixels, max_pixels= in Python, or {MAX_PIXELS_ENV})")
    if not header.complete:
        raise ImageError(f"{path}: truncated {fmt} file (the end of the image data is missing)")
    if header.upright_patch is not None:
        at, upright = header.upright_patch
        data = data[:at] + upright + data[at + len(upright):]
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageError(f"{path}: cannot decode this {fmt} file ({err})") from err
    if decoded is None:
        raise ImageError(f"{path}: cannot decode this {fmt} file (corrupt or truncated)")
    if decoded.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: {decoded.dtype} samples are not supported (only 8 and 16 bits)")
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[..., 0]
    return _upright(_swap_red_blue(decoded), header.orientation)


def write_image(path: str | Path, image: np.ndarray, *, quality: int = 95, metadata: Metadata | None = None) -> Path:
    """Write ``image`` atomically in the format its suffix names; returns the path.

    Bit depth and alpha are kept where the format can hold them: 16-bit in PNG and TIFF, alpha in PNG,
    WEBP and TIFF. Otherwise they are converted explicitly: 16-bit becomes 8-bit (rounded) for JPEG,
    WEBP and BMP, alpha is dropped for JPEG and BMP. Float input in [0, 1] is written as 8-bit
    (values outside are clipped). ``quality`` (1-100) applies to JPEG and WEBP. Gray images stay gray
    except in WEBP, which stores RGB. The file appears under its name only once fully written; the
    parent folder is created. ``metadata`` (``read_metadata`` of the source) is embedded where the
    format holds it, JPEG and PNG (``embed_metadata``); other formats are written without it.
    """
    path = Path(path)
    fmt = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unknown image suffix {path.suffix!r} "
                         f"(use one of {', '.join(sorted(IMAGE_SUFFIXES))})")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must lie in 1..100, got {quality}")
    pixels = _check_image(image, str(path))
    if pixels.dtype.kind == "f" or fmt in _EIGHT_BIT_FORMATS:
        pixels = to_uint8(pixels)
    if fmt in _OPAQUE_FORMATS and pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    params = {"JPEG": [cv2.IMWRITE_JPEG_QUALITY, quality], "WEBP": [cv2.IMWRITE_WEBP_QUALITY, quality]}
    try:
        ok, encoded = cv2.imencode(path.suffix.lower(), _swap_red_blue(pixels), params.get(fmt, []))
    except cv2.error as err:
        raise ImageError(f"{path}: cannot encode a {pixels.shape} {pixels.dtype} image as {fmt} ({err})") from err
    if not ok:
        raise ImageError(f"{path}: cannot encode a {pixels.shape} {pixels.dtype} image as {fmt}")
    data = encoded.tobytes()
    if metadata is not None:
        data = embed_metadata(data, fmt, metadata)
    try:
        with AtomicFile(path) as temp, open(temp, "xb") as file:
            file.write(data)
            file.flush()
            # Without fsync a power cut (a Pi pulled from its socket) can leave an empty file after the rename.
            os.fsync(file.fileno())
    except OSError as err:
        raise ImageError(f"{path}: cannot write ({err.strerror or err})") from err
    return path


@dataclass(frozen=True)
class Metadata:
    """What a photo says about itself beyond its pixels: the EXIF block (a TIFF structure, without
    JPEG's ``Exif\\0\\0`` prefix) and the ICC colour profile (the profile's own bytes). None when absent."""

    exif: bytes | None = None
    icc: bytes | None = None


_JPEG_APP2, _ICC_SIGNATURE, _EXIF_SIGNATURE = 0xE2, b"ICC_PROFILE\x00", b"Exif\x00\x00"
_JPEG_SEGMENT_MAX = 65535 - 2  # a segment's payload after its 2-byte length (which counts itself)
_ICC_CHUNK = _JPEG_SEGMENT_MAX - len(_ICC_SIGNATURE) - 2  # ICC.1 Annex B: sequence number and count bytes


def read_metadata(path: str | Path) -> Metadata:
    """The EXIF block and ICC profile of a JPEG (APP1 ``Exif``, APP2 ``ICC_PROFILE`` chunks in
    sequence order) or PNG (``eXIf``, zlib-compressed ``iCCP``) file; empty for other formats and
    for metadata that cannot be parsed (it is carried along, never a reason to fail)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return Metadata()
    try:
        fmt = _sniff_format(data)
        if fmt == "JPEG":
            return _jpeg_metadata(data)
        if fmt == "PNG":
            return _png_metadata(data)
    except (IndexError, struct.error, ValueError, zlib.error):
        pass
    return Metadata()


def _jpeg_metadata(data: bytes) -> Metadata:
    exif, icc_chunks, pos = None, {}, 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == _JPEG_SOS or 0xD0 <= marker <= 0xD9:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        payload = data[pos + 4:pos + 2 + length]
        if marker == _JPEG_APP1 and payload.startswith(_EXIF_SIGNATURE) and exif is None:
            exif = payload[len(_EXIF_SIGNATURE):]
        elif marker == _JPEG_APP2 and payload.startswith(_ICC_SIGNATURE):
            sequence = payload[len(_ICC_SIGNATURE)]
            icc_chunks[sequence] = payload[len(_ICC_SIGNATURE) + 2:]
        pos += 2 + length
    icc = b"".join(icc_chunks[k] for k in sorted(icc_chunks)) or None
    return Metadata(exif or None, icc)


def _png_metadata(data: bytes) -> Metadata:
    exif = icc = None
    pos = 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8:pos + 8 + length]
        if kind == b"eXIf":
            exif = body[len(_EXIF_SIGNATURE):] if body.startswith(_EXIF_SIGNATURE) else body
        elif kind == b"iCCP":
            name_end = body.index(b"\x00")  # profile name, a null, the compression method (0: zlib)
            icc = zlib.decompress(body[name_end + 2:])
        elif kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return Metadata(exif or None, icc or None)


def embed_metadata(data: bytes, fmt: str, metadata: Metadata) -> bytes:
    """``data`` (a freshly encoded file) with ``metadata`` embedded: JPEG gets an APP1 EXIF segment
    and APP2 ICC chunks after its JFIF header, PNG gets ``iCCP`` and ``eXIf`` chunks after IHDR.
    The EXIF orientation is set to 1 (upright): ``read_image`` has already turned the pixels, and a
    viewer would otherwise turn them again. An EXIF block too big for one JPEG segment is left out
    (a JPEG cannot hold it); other formats are returned as they are."""
    exif = _exif_upright(metadata.exif) if metadata.exif else None
    if fmt == "JPEG":
        segments = b""
        if exif and len(_EXIF_SIGNATURE) + len(exif) <= _JPEG_SEGMENT_MAX:
            segments += _jpeg_segment(_JPEG_APP1, _EXIF_SIGNATURE + exif)
        if metadata.icc:
            chunks = [metadata.icc[i:i + _ICC_CHUNK] for i in range(0, len(metadata.icc), _ICC_CHUNK)]
            if len(chunks) <= 255:
                segments += b"".join(_jpeg_segment(_JPEG_APP2, _ICC_SIGNATURE + bytes([n, len(chunks)]) + chunk)
                                     for n, chunk in enumerate(chunks, 1))
        at = 2  # after SOI, and after the JFIF APP0 segment when there is one (it must come first)
        if data[2:4] == b"\xff\xe0":
            at = 4 + struct.unpack_from(">H", data, 4)[0]
        return data[:at] + segments + data[at:]
    if fmt == "PNG":
        chunks = b""
        if metadata.icc:
            chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(metadata.icc))
        if exif:
            chunks += _png_chunk(b"eXIf", exif)
        at = 8 + 12 + struct.unpack_from(">I", data, 8)[0]  # the signature, then IHDR
        return data[:at] + chunks + data[at:]
    return data


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _exif_upright(exif: bytes) -> bytes:
    """``exif`` with its orientation tag (if any) set to 1; unreadable blocks are kept as they are."""
    try:
        orientation = _tiff_tags(exif).get(_TIFF_ORIENTATION)
    except (ValueError, struct.error):
        return exif
    if orientation is None or orientation.value == 1:
        return exif
    return exif[:orientation.offset] + struct.pack(orientation.packing, 1) + exif[orientation.offset + struct.calcsize(orientation.packing):]


def list_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files among ``inputs``: folders expand to their images (sorted by name, suffix
    case-insensitive, not recursive, hidden files skipped); files are kept as given."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())
        elif item.exists():
            found.append(item)
        else:
            raise ImageError(f"{item}: no such file or folder")
    return found


def output_path(input_path: str | Path, out_dir: str | Path, suffix: str | None = None) -> Path:
    """Where the result for ``input_path`` goes in ``out_dir``: same stem, and same suffix unless given."""
    source = Path(input_path)
    if suffix is None:
        suffix = source.suffix
    elif not suffix.startswith("."):
        suffix = "." + suffix
    return Path(out_dir) / (source.stem + suffix)


def side_by_side(panels: Sequence[tuple[str, np.ndarray]], *, height: int | None = None) -> np.ndarray:
    """A labelled comparison picture (RGB uint8): the panels scaled to one height, left to right.

    ``height`` defaults to the tallest panel. Panels are shown as RGB 8-bit (gray expanded, alpha
    dropped, 16-bit and float scaled). Enlarging uses nearest-neighbour so that no smoothing is added
    to what is being compared. Labels are ASCII (OpenCV's Hershey font), white with a dark outline.
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    shown = [to_rgb_uint8(image) for _, image in panels]
    height = height or max(panel.shape[0] for panel in shown)
    if height < 1:
        raise ValueError(f"height must be positive, got {height}")
    gap = np.full((height, _PANEL_GAP, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for (label, _), panel in zip(panels, shown):
        scaled = _scale_to_height(panel, height)
        _draw_label(scaled, label)
        row += [gap, scaled] if row else [scaled]
    return np.hstack(row)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` as uint8: 16-bit divided by 257 and rounded, float in [0, 1] scaled by 255, clipped."""
    image = _check_image(image, "image")
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=1 / 257)  # rounds and saturates without a float copy
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` for display or video: RGB uint8, gray expanded to three channels, alpha dropped."""
    image = to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image[..., :3]


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as an array in one of the SDK's layouts (HxWx1 becomes HxW), else ImageError."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.size == 0 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ImageError(f"{name}: an image must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16) and image.dtype.kind != "f":
        raise ImageError(f"{name}: an image must be uint8, uint16 or float in [0, 1], got {image.dtype}")
    return image


def _swap_red_blue(image: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A); OpenCV's codecs work in BGR order. Gray passes through."""
    if image.ndim == 2:
        return image
    code = cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    return cv2.cvtColor(np.ascontiguousarray(image), code)


# EXIF orientation -> axes to flip after transposing (5-8) or without transposing (1-4), as in the
# EXIF 2.3 table: 6 = rotate 90 degrees clockwise, 8 = counter-clockwise, 2/4 = mirror, 5/7 = transpose/transverse.
_ORIENTATION_FLIPS = {1: (), 2: (1,), 3: (0, 1), 4: (0,), 5: (), 6: (1,), 7: (0, 1), 8: (0,)}


def _upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """The stored image turned the way its EXIF orientation says it should be shown."""
    if orientation >= 5:
        image = image.swapaxes(0, 1)
    return np.ascontiguousarray(np.flip(image, _ORIENTATION_FLIPS[orientation]))


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot read ({err.strerror or err})") from err
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return data


def _max_pixels(max_pixels: int | None) -> int:
    """The pixel limit: the argument, else the environment variable, else the default."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV)
        if raw is None:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw)
        except ValueError:
            raise EdgeDeblurError(f"{MAX_PIXELS_ENV}={raw!r}: not a whole number of pixels") from None
    if max_pixels < 1:
        raise EdgeDeblurError(f"the pixel limit must be positive, got {max_pixels}")
    return max_pixels


def _sniff_format(data: bytes) -> str | None:
    """The format named by the file's magic bytes (the suffix may lie)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    return None


_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
_JPEG_SOS, _JPEG_APP1 = 0xDA, 0xE1


def _jpeg_header(data: bytes) -> _Header:
    size, orientation, pos = None, 1, 2
    while True:  # header segments up to the first scan
        if data[pos] != 0xFF:
            raise ValueError(f"no segment marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        payload = data[pos + 4:pos + 2 + length]
        if marker in _JPEG_SOF and size is None:
            height, width = struct.unpack_from(">HH", payload, 1)
            size = (width, height)
        elif marker == _JPEG_APP1 and payload.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(payload[6:])
        pos += 2 + length
        if marker == _JPEG_SOS:
            break
    if size is None:
        raise ValueError("no frame header before the image data")
    # libjpeg pads a cut-off file with grey, so look for the end-of-image marker. After the first scan
    # header it cannot occur by chance: scans escape every 0xFF byte (0xFF00).
    return _Header(*size, orientation=orientation, complete=data.rfind(b"\xff\xd9") >= pos)


def _png_header(data: bytes) -> _Header:
    if data[12:16] != b"IHDR":
        raise ValueError("the first chunk is not IHDR")
    width, height = struct.unpack_from(">II", data, 16)
    orientation, pos = 1, 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"eXIf":
            orientation = _exif_orientation(data[pos + 8:pos + 8 + length])
        elif kind == b"IEND":
            return _Header(width, height, orientation)
        pos += 12 + length
    return _Header(width, height, orientation, complete=False)


def _webp_header(data: bytes) -> _Header:
    if len(data) < 30:
        raise ValueError("file too short for a WEBP header")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    complete = len(data) >= 8 + riff_size
    kind = data[12:16]
    if kind == b"VP8 ":  # lossy: 14-bit sizes after the key frame start code
        width, height = (value & 0x3FFF for value in struct.unpack_from("<HH", data, 26))
        return _Header(width, height, complete=complete)
    if kind == b"VP8L":  # lossless: 14-bit (size - 1) fields after the signature byte
        (bits,) = struct.unpack_from("<I", data, 21)
        return _Header((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, complete=complete)
    if kind == b"VP8X":  # extended: 24-bit (canvas size - 1), then chunks that may hold EXIF
        width, height = (int.from_bytes(data[at:at + 3], "little") + 1 for at in (24, 27))
        orientation, pos = 1, 12
        while pos + 8 <= len(data):
            chunk, length = struct.unpack_from("<4sI", data, pos)
            if chunk == b"EXIF":
                orientation = _exif_orientation(data[pos + 8:pos + 8 + length])
            pos += 8 + length + (length & 1)
        return _Header(width, height, orientation, complete)
    raise ValueError(f"unknown WEBP chunk {kind!r}")


def _bmp_header(data: bytes) -> _Header:
    # The BMP and TIFF decoders fail by themselves on a truncated file, so no end check here.
    (info_size,) = struct.unpack_from("<I", data, 14)
    if info_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return _Header(abs(width), abs(height))  # a negative height means rows stored top-down


_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_ORIENTATION = 0x0100, 0x0101, 0x0112


class _TiffTag(NamedTuple):
    value: int
    offset: int  # where the value is stored in the file
    packing: str  # its struct format, byte order included


def _tiff_header(data: bytes) -> _Header:
    tags = _tiff_tags(data)
    if _TIFF_WIDTH not in tags or _TIFF_HEIGHT not in tags:
        raise ValueError("no image width and height in the first directory")
    orientation = tags.get(_TIFF_ORIENTATION)
    if orientation is None:
        return _Header(tags[_TIFF_WIDTH].value, tags[_TIFF_HEIGHT].value)
    # OpenCV's TIFF decoder applies some orientations itself, differently across versions (OpenCV 5
    # mirrors 2-4 and fails on 5-8); the decoder gets the file marked upright and we turn all eight alike.
    patch = (orientation.offset, struct.pack(orientation.packing, 1))
    return _Header(tags[_TIFF_WIDTH].value, tags[_TIFF_HEIGHT].value, _valid_orientation(orientation.value),
                   upright_patch=patch)


def _tiff_tags(tiff: bytes) -> dict[int, _TiffTag]:
    """The single integer values of the first IFD of a TIFF structure (a TIFF file or an EXIF block).

    Classic TIFF and BigTIFF, either byte order; tags holding lists or non-integers are left out.
    """
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        raise ValueError("no TIFF byte-order mark")
    (version,) = struct.unpack_from(order + "H", tiff, 2)
    if version == 42:
        count_format, field_format, (ifd,) = "H", "I", struct.unpack_from(order + "I", tiff, 4)
    elif version == 43:
        count_format, field_format, (ifd,) = "Q", "Q", struct.unpack_from(order + "Q", tiff, 8)
    else:
        raise ValueError(f"unknown TIFF version {version}")
    field_size = struct.calcsize(field_format)
    entry_size = 4 + 2 * field_size  # tag, type, value count, value (or offset)
    (count,) = struct.unpack_from(order + count_format, tiff, ifd)
    first = ifd + struct.calcsize(count_format)
    integer_types = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8: left-justified in the value field
    tags = {}
    for entry in range(first, first + count * entry_size, entry_size):
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        (values,) = struct.unpack_from(order + field_format, tiff, entry + 4)
        if kind in integer_types and values == 1:
            offset, packing = entry + 4 + field_size, order + integer_types[kind]
            (value,) = struct.unpack_from(packing, tiff, offset)
            tags[tag] = _TiffTag(value, offset, packing)
    return tags


def _exif_orientation(exif: bytes) -> int:
    """The orientation tag of an EXIF block; 1 (upright) when absent or unreadable, as viewers do."""
    if exif.startswith(b"Exif\x00\x00"):  # some PNG and WEBP writers keep the JPEG prefix
        exif = exif[6:]
    try:
        orientation = _tiff_tags(exif).get(_TIFF_ORIENTATION)
    except (ValueError, struct.error):
        return 1
    return 1 if orientation is None else _valid_orientation(orientation.value)


def _valid_orientation(value: int) -> int:
    return value if value in _ORIENTATION_FLIPS else 1


_HEADER_READERS: dict[str, Callable[[bytes], _Header]] = {
    "JPEG": _jpeg_header, "PNG": _png_header, "WEBP": _webp_header, "BMP": _bmp_header, "TIFF": _tiff_header,
}


def _scale_to_height(image: np.ndarray, height: int) -> np.ndarray:
    """A resized copy ``height`` rows tall, aspect ratio kept."""
    rows, cols = image.shape[:2]
    width = max(1, round(cols * height / rows))
    interpolation = cv2.INTER_AREA if height < rows else cv2.INTER_NEAREST
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _draw_label(panel: np.ndarray, label: str) -> None:
    """Write ``label`` in the top-left corner, white on a dark box fitted to the text (its measured
    extent plus a margin of ``pad`` pixels), so it reads on any background. A box rather than a
    thicker dark stroke: at small scales the stroke filled the letters' insides and ran past the text."""
    scale = max(0.4, panel.shape[0] / 600)
    thickness = max(1, round(scale * 1.5))
    (text_width, text_height), baseline = cv2.getTextSize(label, _LABEL_FONT, scale, thickness)
    pad = max(2, round(4 * scale))
    origin = (round(8 * scale) + pad, round(8 * scale) + pad + text_height)
    top_left = (origin[0] - pad, origin[1] - text_height - pad)
    bottom_right = (min(panel.shape[1] - 1, origin[0] + text_width + pad), min(panel.shape[0] - 1, origin[1] + baseline + pad))
    cv2.rectangle(panel, top_left, bottom_right, (0, 0, 0), cv2.FILLED)
    cv2.putText(panel, label, origin, _LABEL_FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
