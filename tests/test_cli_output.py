"""What the command line says and keeps (issue 15): EXIF and ICC carried to the results, -q/-v and
the native runtimes' log lines, per-image timing and the speed summary, the default output folder,
the conversion report's figures and its smoke-run notice, the package's licence metadata.

Exit codes and log lines are checked on real processes (the LiteRT line is written by C++ to file
descriptor 2, which pytest's capsys never sees); metadata with Pillow, an independent reader and writer.
"""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from edge_deblur import images, logs, read_image
from edge_deblur.cli import main, next_run_folder

REPO = Path(__file__).resolve().parents[1]
PIL = pytest.importorskip("PIL")
from PIL import Image, ImageCms  # noqa: E402

MAKE, DATETIME, ORIENTATION = 0x010F, 0x0132, 0x0112


@pytest.fixture(autouse=True)
def _normal_verbosity():
    yield
    logs.set_verbosity(logs.NORMAL)  # main() sets it per call; leave the next test as it expects


def _cli(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "edge_deblur.cli", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd or REPO)


def _photo_with_metadata(path: Path, source: Path, icc: bytes, orientation: int = 6) -> Path:
    """A real (non-square) photo saved by Pillow with EXIF Make, DateTime and an orientation, and an ICC profile."""
    exif = Image.Exif()
    exif[MAKE], exif[DATETIME], exif[ORIENTATION] = "EdgeCam", "2026:12:01 10:00:00", orientation
    Image.open(source).convert("RGB").save(path, exif=exif.tobytes(), icc_profile=icc, quality=92)
    return path


@pytest.fixture(scope="module")
def srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def network_model():
    """The bundled student: the real network path, fast enough for a test."""
    return "student-rpi5"


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_and_icc_are_carried_to_jpeg_and_png_results_upright(suffix, photo_paths, srgb, network_model, tmp_path):
    wide = next(p for p in photo_paths if Image.open(p).width != Image.open(p).height)  # BSDS, 481x321
    src = _photo_with_metadata(tmp_path / "cam.jpg", wide, srgb)
    out = tmp_path / "out"
    assert main(["deblur", str(src), "-o", str(out), "--method", "network", "--model", network_model,
                 "--threads", "1", "--suffix", suffix]) == 0
    result = out / f"cam{suffix}"
    with Image.open(result) as im:
        exif = im.getexif()
        assert (exif.get(MAKE), exif.get(DATETIME)) == ("EdgeCam", "2026:12:01 10:00:00")
        assert exif.get(ORIENTATION) == 1, "the pixels are already upright: a viewer must not turn them again"
        assert im.info.get("icc_profile") == srgb
    # Upright once, not twice: orientation 6 shows the 481x321 photo turned by 90 degrees, 321 wide and 481 tall.
    width, height = Image.open(wide).size
    assert read_image(result).shape == read_image(src).shape == (width, height, 3)


def test_formats_without_metadata_are_written_without_it(photo_paths, srgb, network_model, tmp_path):
    src = _photo_with_metadata(tmp_path / "cam.jpg", photo_paths[0], srgb, orientation=1)
    out = tmp_path / "out"
    assert main(["deblur", str(src), "-o", str(out), "--method", "network", "--model", network_model,
                 "--threads", "1", "--suffix", ".bmp"]) == 0
    assert read_image(out / "cam.bmp").shape == read_image(src).shape


def test_a_large_icc_profile_travels_in_several_jpeg_chunks(photo_paths, tmp_path):
    """ICC.1 Annex B: a profile over 64 KB is split over APP2 segments; the bytes come back whole."""
    profile = np.random.default_rng(0).integers(0, 256, 150_000, dtype=np.uint8).tobytes()
    src = tmp_path / "big.jpg"
    Image.open(photo_paths[0]).save(src, icc_profile=profile)
    metadata = images.read_metadata(src)
    assert metadata.icc == profile and metadata.exif is None
    images.write_image(tmp_path / "copy.jpg", read_image(src), metadata=metadata)
    with Image.open(tmp_path / "copy.jpg") as im:
        assert im.info["icc_profile"] == profile
    assert (tmp_path / "copy.jpg").read_bytes().count(b"ICC_PROFILE\x00") == 3
    images.write_image(tmp_path / "copy.png", read_image(src), metadata=metadata)
    assert images.read_metadata(tmp_path / "copy.png").icc == profile


def test_unreadable_metadata_is_left_behind_not_a_failure(photo_paths, tmp_path):
    data = bytearray(Path(photo_paths[0]).read_bytes())
    broken = tmp_path / "broken.png"
    # An iCCP chunk whose zlib stream is garbage, inserted after IHDR (with a correct CRC).
    import struct
    import zlib
    body = b"x\x00\x00not zlib"
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    broken.write_bytes(bytes(data[:33]) + chunk + bytes(data[33:]))
    assert images.read_metadata(broken) == images.Metadata()
    assert read_image(broken).shape == read_image(photo_paths[0]).shape


def test_litert_log_line_is_silenced_unless_verbose(photo_paths, tmp_path):
    argv = ["deblur", photo_paths[0], "--method", "network", "--threads", "1"]
    quiet = _cli(*argv, "-o", tmp_path / "a")
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and quiet.stderr.strip() == "", quiet.stderr
    verbose = _cli("-v", *argv, "-o", tmp_path / "b")
    assert verbose.returncode == 0 and "Created TensorFlow Lite XNNPACK delegate" in verbose.stderr, verbose.stderr


def test_the_denoiser_is_silenced_too(tmp_path):
    script = ("import numpy as np\nfrom edge_deblur.denoise import Denoiser\n"
              "Denoiser.load(threads=1)(np.full((64, 64, 3), 0.5, np.float32), 0.05)\nprint('ran')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ran" and "XNNPACK" not in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-c", "from edge_deblur import logs; logs.set_verbosity(2)\n" + script],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "XNNPACK" in r.stderr, r.stderr


def test_quiet_says_only_what_went_wrong(photo_paths, tmp_path):
    r = _cli("deblur", photo_paths[0], tmp_path / "missing.png", "-o", tmp_path / "o", "--method", "network",
             "--threads", "1", "-q")
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert f"error: {tmp_path / 'missing.png'}: no such file or folder" in r.stderr
    assert (tmp_path / "o" / photo_paths[0].name).is_file()  # the good one was still written


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_times_each_image_and_every_run_ends_with_the_speed(where, photo_paths, network_model, tmp_path, capsys):
    inputs = [str(p) for p in photo_paths[:2]]
    argv = ["deblur", *inputs, "-o", str(tmp_path / "o"), "--method", "network", "--model", network_model, "--threads", "1"]
    assert main(["-v", *argv] if where == "before" else [*argv, "--verbose"]) == 0
    out = capsys.readouterr().out
    for path in photo_paths[:2]:
        w, h = Image.open(path).size
        assert re.search(rf"{re.escape(str(path))} -> .*{re.escape(path.name)}: {w}x{h}, \d+\.\d\d s", out), out
    assert re.search(r"^speed: 2 image\(s\) deblurred, median \d+\.\d\d s, mean \d+\.\d\d s per image, \d+\.\d\d Mpx/s$",
                     out, re.M), out
    assert main(argv) == 0
    normal = capsys.readouterr().out
    assert "speed: 2 image(s)" in normal and " -> " not in normal  # the summary always, each image only when verbose


def test_without_o_each_run_gets_a_new_numbered_folder(photo_paths, network_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["deblur", str(photo_paths[0]), "--method", "network", "--model", network_model, "--threads", "1"]
    assert main(argv) == 0 and main(argv) == 0
    out = capsys.readouterr().out
    assert "to runs/deblur/exp1 " in out and "to runs/deblur/exp2 " in out
    for n in (1, 2):
        assert (tmp_path / "runs" / "deblur" / f"exp{n}" / photo_paths[0].name).is_file()
    (tmp_path / "runs" / "deblur" / "exp7").mkdir()
    assert next_run_folder(tmp_path / "runs" / "deblur").name == "exp8"  # after the highest, gaps left alone


def test_an_unwritable_default_folder_is_refused_before_any_work(photo_paths, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the runs folder would go")
    with pytest.raises(SystemExit) as exit:
        main(["deblur", str(photo_paths[0]), "--method", "network"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "argument -o/--output: default output folder runs/deblur: runs is a file" in err, err


# --- the conversion report: rendered from the shipped rpi5 card, as a smoke run's would be ------------


def _shipped_card(name="student-rpi5"):
    return json.loads((REPO / "edge_deblur" / "models" / f"{name}.card.json").read_text())


def test_report_has_one_total_row_and_one_mac_budget(tmp_path):
    from converters.report import report_markdown

    card = _shipped_card()
    md = report_markdown(card)
    assert len(re.findall(r"^\| total \|", md, re.M)) == 1, "the card's own total, not a second sum over it"
    assert "| total | 1321.7 |" in md
    pruned_to = card["steps"]["prune"]["mac_budget"]  # this card predates card["mac_budget"]
    header = re.search(r"budget [\d.]+ ms \([^)]*\), ([\d.]+)M MACs", md).group(1)
    model = re.search(r"against a budget of ([\d.]+)M", md).group(1)
    assert header == model == f"{pruned_to / 1e6:.1f}"
    assert "+-" not in md


def test_a_smoke_run_says_so_and_which_failures_it_explains(tmp_path):
    from converters.report import report_html, report_markdown

    card = _shipped_card()
    card["smoke_run"] = "smoke run (--quick): the whole chain on a few dozen crops"
    card["mac_budget"] = {"macs": 677_568_358, "basis": "a tenth of the teacher's 6776M MACs"}
    gain = card["checks"][0]
    gain.update(passed=False, expected_in_smoke_run=True)
    ops = next(c for c in card["checks"] if "XNNPACK" in c["name"])
    ops.update(passed=False, expected_in_smoke_run=False)
    md = report_markdown(card)
    assert md.split("\n\n")[1].startswith("SMOKE RUN. This is a smoke run (--quick)")
    assert f"**FAIL** {gain['name']}: {gain['detail']} (expected in a smoke run)" in md
    assert f"**FAIL** {ops['name']}: {ops['detail']}\n" in md + "\n"
    assert "FAILED as a smoke run's may" in md and "FAILED that must pass even in a smoke run: only XNNPACK INT8 ops" in md
    assert "677.6M MACs (a tenth of the teacher's 6776M MACs)" in md
    assert "SMOKE RUN" in report_html(card)
    plain = report_markdown(_shipped_card())
    assert "SMOKE RUN" not in plain and "smoke run" not in plain


def test_the_held_out_set_is_described_as_pairs_not_photos_times_kernels():
    from converters.convert import eval_dataset_text

    assert eval_dataset_text(3, 3, 128).startswith("3 held-out Kodak photos, each blurred by one Levin et al. kernel "
                                                  "(3 of the 8 kernels")
    assert "(all 8 kernels" in eval_dataset_text(24, 8, 256)


def test_the_package_declares_its_licence_as_an_spdx_expression():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "Apache License" in (REPO / "LICENSE").read_text().splitlines()[1]


def test_silencing_keeps_pythons_own_messages_and_restores_descriptor_2(tmp_path):
    script = ("import os, sys\nfrom edge_deblur import logs\n"
              "with logs.native_logs_silenced():\n"
              "    print('ours, during', file=sys.stderr)\n    os.write(2, b'native, during\\n')\n"
              "os.write(2, b'native, after\\n')\nprint('ours, after', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr.splitlines() == ["ours, during", "native, after", "ours, after"], r.stderr


def test_python_notices_keep_only_errors_even_when_the_level_is_set_again():
    import logging

    seen = []
    logger = logging.getLogger("edge_deblur_test_notices")
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    logs.python_notices_silenced("edge_deblur_test_notices")
    logs.python_notices_silenced("edge_deblur_test_notices")  # idempotent: one filter
    logger.setLevel(logging.INFO)  # as absl does when its flags are read
    logger.warning("a deprecated conversion path")
    logger.error("a real error")
    assert [r.getMessage() for r in seen] == ["a real error"] and len(logger.filters) == 1
