"""``edge-deblur``: a thin command line over the Python API."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import __version__, images, logs, pipeline, video
from .errors import EdgeDeblurError
from .metrics import measure_latency
from .model import DEFAULT_MODEL, Deblurrer, bundled_models, resolve_model, read_sidecar


def _add_method_args(p: argparse.ArgumentParser, default_method: str = "network") -> None:
    p.add_argument("--model", default="default", help=f"a .tflite/.onnx file or a bundled model ({', '.join(bundled_models()) or 'none'}; default: {DEFAULT_MODEL})")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for the model (default: all cores)")
    p.add_argument("--method", choices=pipeline.METHODS, default=default_method,
                   help=f"auto: estimate the blur kernel and restore, falling back to a network when the estimate fails; "
                        f"blind: estimate and restore, unchecked; network: the feed-forward model; wiener/rl: classical, "
                        f"given --psf (default: {default_method})")
    p.add_argument("--psf", help="wiener/rl, or blind to skip estimation: motion:LENGTH,ANGLE | defocus:RADIUS | "
                   "gaussian:SIGMA | a PSF image or .npy (e.g. a --save-kernel result)")
    p.add_argument("--kernel-size", type=_kernel_side, default=None, metavar="N",
                   help="blind/auto: the blur kernel's side in pixels, odd (default: chosen from the image)")
    p.add_argument("--server", metavar="URL", help="partitioned mode: an edge-deblur serve or Triton server "
                   "(http://HOST:PORT); every frame still finishes here when the server is slow, refuses or is gone")
    p.add_argument("--token-file", metavar="F", help="partitioned mode: a file holding the server's bearer token")
    p.add_argument("--mode", choices=["auto", "local", "offload", "split", "kernel"], default="auto",
                   help="partitioned mode: auto (the planner picks per frame from measured times), local, offload "
                        "(frame up, result down), split (the INT8 student's middle stages on the server, its "
                        "features up and down), kernel (keyframe crop up, kernel down, restored here) (default: auto)")
    p.add_argument("--encoding", type=_offload_encoding, default="raw", metavar="raw|png|jpeg:Q|webp:Q",
                   help="partitioned mode, offload and auto: how frames and results travel (jpeg:90 sends about 7%% "
                        "of raw's bytes and measured 0.06 dB below lossless offload, docs/BENCHMARKS.md) (default: raw)")
    p.add_argument("--max-quality-loss", type=_non_negative_float, default=0.0, metavar="DB",
                   help="partitioned mode, auto: the planner may also offload in a lossy encoding (jpeg/webp) whose "
                        "measured quality loss against lossless offload is at most DB dB, when that is faster "
                        "(jpeg:90 0.06 dB, jpeg:50 0.20, docs/BENCHMARKS.md) (default: 0, lossless only)")
    p.add_argument("--frame-deadline", type=_positive_float, default=None, metavar="MS",
                   help="partitioned mode, auto: the frame budget in milliseconds; the planner skips modes expected "
                        "to miss it while one meets it (default: none, just the fastest)")
    p.add_argument("--server-timeout", type=_positive_float, default=None, metavar="SECONDS",
                   help="partitioned mode: how long to wait for the server's answer before the board does the "
                        "image or frame itself (default: 300 for deblur's stills, 1 for run's frames)")
    p.add_argument("--fallback-model", default="teacher",
                   help="auto: the network an image goes to when its blur estimate fails (default: teacher)")
    p.add_argument("--iterations", type=_positive_int, default=30, help="Richardson-Lucy iterations (default: 30)")
    p.add_argument("--balance", type=_positive_float, default=0.01, help="Wiener noise-to-signal ratio (default: 0.01)")
    p.add_argument("--tile", type=_positive_int, default=None, help="largest window side per model run (default: the model's)")
    p.add_argument("--overlap", type=_non_negative_int, default=32, help="overlap between windows, pixels, less than --tile (default: 32)")
    p.add_argument("--clahe", action="store_true", help="equalise contrast first (X-ray-like grayscale images)")
    p.add_argument("--gate", type=_non_negative_float, default=None, metavar="SHARPNESS", help="pass through untouched (the source file copied) any frame whose variance of the Laplacian reaches this (default: off)")


def _method(args, server_model: str = "teacher", still: bool = False) -> pipeline.Method:
    """The method the options describe; with ``--server``, partitioned, offloading to the server's
    ``server_model``: ``teacher`` (the feed-forward network) for streams, ``deblur`` (the server's
    best, the auto engine: seconds per frame) for stills (``still``: no frame deadline on the server's
    answer; ``partitioned_method``). ``--server-timeout`` overrides the deadline either way."""
    local = _local_method(args)
    if not args.server:
        return local
    from .partition.methods import partitioned_method

    try:
        return partitioned_method(local, args.server, args.token_file, args.mode, student=args.model,
                                  server_model=server_model, still=still, deadline_s=args.server_timeout,
                                  frame_deadline_s=args.frame_deadline / 1000 if args.frame_deadline else None,
                                  encoding=args.encoding, max_quality_loss_db=args.max_quality_loss)
    except (ValueError, OSError) as e:
        raise EdgeDeblurError(f"--server {args.server}: {e}") from e


def _summarise(method) -> None:
    """Partitioned mode's account of the frames (per path, fallbacks and why), at the end of a run."""
    if hasattr(method, "summary"):
        logs.info(method.summary())
        method.close()


def _local_method(args) -> pipeline.Method:
    return pipeline.make_method(pipeline.MethodConfig(
        method=args.method, model=args.model, threads=args.threads, tile=args.tile, overlap=args.overlap,
        psf=args.psf, iterations=args.iterations, balance=args.balance, clahe=args.clahe,
        kernel_size=args.kernel_size, fallback_model=args.fallback_model))


RUNS_DIR = Path("runs") / "deblur"  # deblur without -o: a new RUNS_DIR/expN each time


def next_run_folder(parent: Path = RUNS_DIR) -> Path:
    """A new, empty ``parent/expN`` (N one more than the highest there, from 1), made now so that two
    runs started together never share it: ``mkdir`` without ``exist_ok`` is the claim."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[3:]) for p in parent.glob("exp*") if p.name[3:].isdigit()]
    number = max(taken, default=0) + 1
    while True:
        folder = parent / f"exp{number}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1


def _speed_summary(report: pipeline.BatchReport) -> str | None:
    """The end-of-run speed line: median and mean seconds per deblurred image and the pixel rate
    (images passed through by --gate are left out: they were copied, not deblurred)."""
    times = [t for t in report.timings if not t.passed_through]
    if not times:
        return None
    seconds = np.array([t.seconds for t in times])
    megapixels = sum(t.width * t.height for t in times) / 1e6
    return (f"speed: {len(times)} image(s) deblurred, median {np.median(seconds):.2f} s, mean {seconds.mean():.2f} s "
            f"per image, {megapixels / max(seconds.sum(), 1e-9):.2f} Mpx/s")


def _image_line(t: pipeline.ImageTiming) -> None:
    logs.detail(f"{t.source} -> {t.target}: {t.width}x{t.height}, "
                + ("already sharp, copied" if t.passed_through else f"{t.seconds:.2f} s"))


def cmd_deblur(args) -> int:
    # Clashing output names stop the run here, before a model is loaded (deblur_files checks again).
    pipeline.plan_batch(args.inputs, args.output or RUNS_DIR / "exp", suffix=args.suffix, compare=args.compare,
                        save_kernels=args.save_kernel)
    method = _method(args, server_model="deblur", still=True)  # stills: the server's best quality, a still's deadline
    output = args.output or next_run_folder()
    report = pipeline.deblur_files(method, args.inputs, output, suffix=args.suffix,
                                   compare=args.compare, sharp_threshold=args.gate, max_pixels=args.max_pixels,
                                   save_kernels=args.save_kernel, on_image=_image_line,
                                   progress=False if logs.verbosity() != logs.NORMAL else None)
    for path, taken, why in report.paths:
        logs.info(f"{path}: {taken} ({why})" if why else f"{path}: {taken}")
    _summarise(method)
    logs.info(f"wrote {len(report.written)} image(s) to {output} in {report.seconds:.1f} s"
              + (f" ({len(report.passed_through)} already sharp, copied)" if report.passed_through else ""))
    speed = _speed_summary(report)
    if speed:
        logs.info(speed)
    for folder in report.empty:
        print(f"warning: no images found in {folder}", file=sys.stderr)
    for path, problem in report.failures:
        print(f"error: {problem}", file=sys.stderr)
    if report.failures:
        print(f"{len(report.failures)} of {len(report.failures) + len(report.written)} image(s) failed", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_run(args) -> int:
    gate = video.BlurGate(args.gate) if args.gate is not None else None
    if args.video and args.select:
        keep = args.select  # parsed and range-checked by _keep
        if keep == 1.0 and isinstance(keep, float):
            keep = sys.maxsize  # the whole video: select_sharpest caps a count at the number of frames
        out = args.output or str(Path(args.video).with_name(Path(args.video).stem + "_sharpest"))
        kept = video.select_sharpest(args.video, out, keep=keep)
        logs.info(f"kept {len(kept)} sharpest frame(s) -> {out}")
        return 0
    deblur = _method(args)
    if args.video:
        out = args.output or str(Path(args.video).with_name(Path(args.video).stem + "_deblurred.mp4"))
        stats = video.process_video(deblur, args.video, out, gate=gate)
        logs.info(f"wrote {stats.frames} frame(s) to {out} ({stats.passed_through} already sharp) in {stats.seconds:.1f} s"
                  + (f", {stats.frames / stats.seconds:.1f} fps" if stats.seconds > 0 else ""))
        _summarise(deblur)
        return 0
    recording = _Recording(args.output, args.fps) if args.output else None
    try:
        stats = video.run_camera(deblur, args.camera, sink=recording, max_frames=args.max_frames,
                                 queue_size=args.queue, policy=args.policy, gate=gate)
    except BaseException:
        if recording:
            recording.abort()
        raise
    if recording:
        recording.close()
    logs.info(f"camera {args.camera}: {stats.processed} processed, {stats.dropped} dropped ({args.policy}), "
          f"{stats.passed_through} already sharp, {stats.fps:.1f} fps")
    _summarise(deblur)
    return 0


class _Recording:
    """A camera recording whose writer opens on the first frame, when the frame size is known."""

    def __init__(self, path: str, fps: float):
        self.path, self.fps, self.writer = path, fps, None

    def __call__(self, frame: np.ndarray) -> None:
        if self.writer is None:
            self.writer = video.VideoWriter(self.path, self.fps, (frame.shape[1], frame.shape[0]))
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer:
            self.writer.close()

    def abort(self) -> None:
        if self.writer:
            self.writer.abort()


# argparse types: each checks one argument before any work, so a bad value exits 2 with
# "edge-deblur VERB: error: argument --NAME: ..." and never reaches a model or a decoder.

def _int_at_least(least: int, what: str = ""):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be {what or f'at least {least}'}, got {value}")
        return value
    parse.__name__ = "int"
    return parse


_positive_int = _int_at_least(1, "a positive whole number")
_non_negative_int = _int_at_least(0, "0 or more")


def _float_above(least: float, inclusive: bool, what: str):
    """A finite number above ``least`` (or from it, ``inclusive``): nan and inf are refused too."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not np.isfinite(value) or value < least or (value == least and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    parse.__name__ = "float"
    return parse


_positive_float = _float_above(0.0, False, "a positive number")
_non_negative_float = _float_above(0.0, True, "0 or more")


def _offload_encoding(text: str) -> str:
    """--encoding: raw, png, jpeg:Q or webp:Q (Q 1..100), checked by the offload's own parser."""
    from .partition.encoding import parse_encoding

    try:
        parse_encoding(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _frame_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, both positive."""
    parts = text.lower().split("x")
    try:
        width, height = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give WIDTHxHEIGHT, e.g. 640x480") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return width, height


def _kernel_side(text: str) -> int:
    """An odd kernel side of at least 3 pixels (the kernel needs a centre pixel)."""
    value = _int_at_least(3)(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be odd (the kernel has a centre pixel), got {value}")
    return value


def _keep(text: str) -> int | float:
    """--select: a frame count (a positive whole number) or a fraction in (0, 1]."""
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a frame count (10) or a fraction (0.2)") from None
    if isinstance(value, int) and value < 1:
        raise argparse.ArgumentTypeError(f"a frame count must be 1 or more, got {value}")
    if isinstance(value, float) and not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a fraction must be in (0, 1], got {value:g}")
    return value


def _image_suffix(text: str) -> str:
    """--suffix: one of the formats write_image writes."""
    suffix = text.lower() if text.startswith(".") else "." + text.lower()
    if suffix not in images.IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a format written here (use one of "
                                         f"{', '.join(sorted(images.IMAGE_SUFFIXES))})")
    return suffix


def _check_writable_folder(folder: Path, what: str) -> None:
    """Raise ArgumentTypeError unless ``folder`` is, or can be created as, a folder we can write in.
    The nearest existing ancestor is probed with a real temporary file (os.access says yes to root
    and knows nothing of read-only mounts)."""
    if folder.exists() and not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{what} {folder} is a file, not a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{what} {folder}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".edge-deblur-probe-"):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{what} {folder}: cannot write in {existing} ({e.strerror})") from None


def _output_folder(text: str) -> Path:
    """-o for deblur: a folder (made if missing) we can write in; without -o, a new runs/deblur/expN."""
    path = Path(text)
    _check_writable_folder(path, "output folder")
    return path


def _output_file(text: str) -> Path:
    """-o for run: a video file, or (run --select) a folder of frames; its folder must be writable."""
    path = Path(text)
    if path.suffix.lower() in video.VIDEO_SUFFIXES:
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a video file name")
        _check_writable_folder(path.parent, "output folder")
    else:
        _check_writable_folder(path, "output folder")
    return path


def _json_output(text: str) -> Path:
    """argparse type for --json: a file path whose folder exists and is writable (checked before any work)."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is not a folder" if folder.exists() else f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"folder {folder} is not writable")
    return path


def cmd_eval(args) -> int:
    pairs = pipeline.read_pairs(args.pairs)  # reads and checks every pair before the slow work
    has_kernels = all(k is not None for *_, k in pairs)
    methods = {"blurred input": lambda blurred, kernel: blurred}
    blind = None
    if (has_kernels and not args.no_baselines) or args.method:
        from .blind import BlindConfig, BlindDeblurrer

        blind = BlindDeblurrer.load(BlindConfig(threads=args.threads))
    if has_kernels and not args.no_baselines:
        for name in ("wiener", "rl"):
            methods[f"{name} (true kernel)"] = (
                lambda blurred, kernel, name=name: pipeline.classical_method(name, kernel)(blurred))
        # The ceiling of the blind method: its own restoration, given the true kernel.
        restore_true = BlindDeblurrer(blind.denoiser, blind.config)

        def with_true_kernel(blurred, kernel):
            restore_true.fixed_kernel = kernel
            return restore_true(blurred)

        methods["restore (true kernel)"] = with_true_kernel
    for name in args.method or []:
        if name == "blind":
            methods["blind"] = lambda blurred, kernel: blind(blurred)
        else:
            from .blind import AutoDeblurrer

            auto = AutoDeblurrer(blind, Deblurrer.load("teacher", threads=args.threads))
            methods["auto"] = lambda blurred, kernel, auto=auto: auto(blurred)
    reference = args.ratio_reference
    if reference is not None and not has_kernels:
        raise EdgeDeblurError(f"--ratio-reference {reference}: the error ratio needs the true kernels "
                              f"({args.pairs}/kernels/NAME.npy for every pair)")
    if reference is None and args.protocol != "plain" and has_kernels and not args.no_baselines:
        reference = "restore (true kernel)"  # Levin et al.'s ratio: the same restoration, true kernel
    for model in args.model or ([] if args.method else ["default"]):
        deblur = Deblurrer.load(model, threads=args.threads)
        methods[str(model)] = lambda blurred, kernel, deblur=deblur: deblur(blurred)
    if reference is not None and reference not in methods:
        raise EdgeDeblurError(f"--ratio-reference {reference}: not an evaluated method ({', '.join(methods)})")
    rows = pipeline.evaluate(pairs, methods, protocol=args.protocol, ratio_reference=reference)
    print(pipeline.format_table(rows))
    if args.json:
        with images.AtomicFile(args.json) as tmp:
            tmp.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def cmd_bench(args) -> int:
    w, h = args.size  # parsed and range-checked by _frame_size
    frame = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    if args.image:
        frame = images.read_image(args.image)
    for model in args.model or ["default"]:
        deblur = Deblurrer.load(model, threads=args.threads, tile=args.tile)
        stats = measure_latency(lambda: deblur(frame), warmup=2, repeats=args.repeats)
        plan = deblur.plan(*frame.shape[:2])
        print(f"{model}: {frame.shape[1]}x{frame.shape[0]}, {plan.count} window(s) of "
              f"{plan.cols.window}x{plan.rows.window}, threads={args.threads or 'all'}: "
              f"median {stats.median_ms:.1f} ms ({stats.fps:.1f} fps), p90 {stats.p90_ms:.1f} ms")
    return 0


def cmd_info(args) -> int:
    path = resolve_model(args.model)
    deblur = Deblurrer.load(path)
    info = asdict(deblur.info)
    info.update(path=str(path), input_dtype=str(deblur.info.input_dtype),
                size_bytes=path.stat().st_size, sidecar=read_sidecar(path))
    if hasattr(deblur.runner, "providers"):  # what onnxruntime really runs it on, here
        info.update(providers=deblur.runner.providers)
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_convert(args) -> int:
    import importlib.util

    try:
        if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
            raise ImportError("TensorFlow and Keras are missing")
        with logs.native_logs_silenced():  # oneDNN/CPU-feature lines, some printed before TF's logging is set up
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        if logs.verbosity() < logs.VERBOSE:  # and TensorFlow's Python-side notices (absl: deprecated paths)
            logs.python_notices_silenced("absl", "tensorflow")
        from converters.convert import config_from_args, convert
    except ImportError as e:
        raise EdgeDeblurError(f"edge-deblur convert needs the host toolchain, which is not installed here ({e}); "
                              "on a workstation with Python 3.12: pip install 'edge-deblur[convert]' from a checkout") from e
    with logs.native_logs_silenced():  # TensorFlow's converter and LiteRT print from C++ all along the chain
        card = convert(config_from_args(args))
    noise = [c["name"] for c in card["checks"] if c.get("within_noise")]
    failed = [c["name"] for c in card["checks"] if not c["passed"] and not c.get("within_noise")]
    q, lat = card["quality"], card["latency"]
    kept = f"{q['gain_kept']:.0%} of the teacher's {q['teacher_gain_db']:+.2f} dB" if q["gain_kept"] is not None else \
        f"the teacher's own gain is {q['teacher_gain_db']:+.2f} dB: nothing to keep"
    print(f"{card['name']}: {card['student']['macs'] / 1e6:.0f}M MACs ({card['student']['mac_reduction']}x fewer than the teacher), "
          f"{q['student_gain_db']:+.2f} dB ({kept}), expected {lat['expected_ms']:.1f} ms "
          f"({lat['expected_ms_range'][0]:.1f}-{lat['expected_ms_range'][1]:.1f} over {lat['repeats']} repeats) on {card['target']['name']}")
    for warning in card["teacher"].get("warnings", []):
        print(f"warning: {warning}")
    smoke = card.get("smoke_run")
    expected = [c["name"] for c in card["checks"] if c.get("expected_in_smoke_run") and c["name"] in failed]
    unexpected = [name for name in failed if name not in expected] if smoke else failed
    print(f"checks: {len(card['checks']) - len(failed) - len(noise)}/{len(card['checks'])} passed"
          + (f"; within noise: {'; '.join(noise)}" if noise else "")
          + (f"; failed as a smoke run may: {'; '.join(expected)}" if smoke and expected else "")
          + (f"; FAILED{' (not from the short training or timing: look at these)' if smoke else ''}: {'; '.join(unexpected)}" if unexpected else ""))
    if smoke:
        print(f"this was a {smoke}")
    out = Path(args.out or f"build/{args.target}")
    files = {key: out / entry["path"] for key, entry in card["files"].items() if entry}
    model = files.get("onnx") or files.get("int8_tflite") or files.get("float_tflite")
    print(f"made: {model} (model card {out / 'model_card.json'}, report {out / 'report.html'})")
    print(f"next: edge-deblur bench --model {model}; edge-deblur deblur photos/ --method network --model {model}")
    return 0  # a failed check is a finding about the student, recorded in the card, not a failed run


def _verbosity_flags(on_verb: bool) -> argparse.ArgumentParser:
    """-q/--quiet and -v/--verbose, before the verb or after it. On a verb their default is SUPPRESS,
    so a flag given before the verb is not reset by the verb's parser."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    default = argparse.SUPPRESS if on_verb else None
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=logs.QUIET, default=default,
                       help="errors and warnings only (default: say what was done)")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=logs.VERBOSE, default=default,
                       help="also each image's timing and the LiteRT/TensorFlow log lines (default: those are silenced)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-deblur", description="Image deblurring for small devices.",
                                     parents=[_verbosity_flags(on_verb=False)])
    parser.add_argument("--version", action="version", version=f"edge-deblur {__version__}")
    # Every verb, the server's included, takes -q/-v too.
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=functools.partial(argparse.ArgumentParser, parents=[_verbosity_flags(on_verb=True)]))

    p = sub.add_parser("deblur", help="deblur images and folders of images", epilog="example: edge-deblur deblur photos/ -o sharp/ --compare")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", type=_output_folder, help="output folder (names keep the input's stem; inputs whose outputs would share a name are refused before any work; default: a new runs/deblur/expN)")
    p.add_argument("--suffix", type=_image_suffix, help="output format, e.g. .png (default: the input's)")
    p.add_argument("--compare", action="store_true", help="also write OUTPUT/compare/NAME.jpg, input and result side by side")
    p.add_argument("--max-pixels", type=_positive_int, default=None, help="refuse images with more pixels than this, decompression bombs (default: 100000000, or $EDGE_DEBLUR_MAX_PIXELS)")
    p.add_argument("--save-kernel", action="store_true",
                   help="blind/auto: write each estimated kernel next to its result, as NAME.kernel.npy and NAME.kernel.png")
    _add_method_args(p, default_method="auto")
    p.set_defaults(func=cmd_deblur)

    p = sub.add_parser("run", help="deblur a camera stream or a video file", epilog="examples: edge-deblur run --video clip.mp4 -o clip_sharp.mp4; edge-deblur run --video clip.mp4 --select 0.2 -o best/")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", help="OpenCV index, GStreamer pipeline, or 'picamera2'")
    src.add_argument("--video", help="a video file")
    p.add_argument("-o", "--output", type=_output_file, help="output video (camera: optional recording)")
    p.add_argument("--select", type=_keep, help="video: keep only the N sharpest frames (or a fraction, e.g. 0.2), untouched")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="camera: stop after this many frames (default: run until stopped)")
    p.add_argument("--queue", type=_positive_int, default=2, help="camera: frames buffered between capture and deblurring (default: 2)")
    p.add_argument("--policy", choices=["drop-oldest", "drop-newest", "block"], default="drop-oldest",
                   help="camera: what a full queue does with a new frame (default: drop the oldest, for low latency)")
    p.add_argument("--fps", type=_positive_float, default=30.0, help="camera: frame rate written to the recording (default: 30)")
    _add_method_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="PSNR/SSIM/latency table on blurred/sharp pairs", epilog="example: edge-deblur eval --pairs pairs/ --method auto --json eval.json")
    p.add_argument("--pairs", required=True, help="folder with blur/ and sharp/ (and optionally kernels/NAME.npy)")
    p.add_argument("--model", action="append", help=f"model(s) to evaluate (repeatable; default: {DEFAULT_MODEL})")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for the models (default: all cores)")
    p.add_argument("--method", action="append", choices=["blind", "auto"],
                   help="also evaluate blind deblurring / auto (repeatable; with it, networks only when --model is given)")
    p.add_argument("--no-baselines", action="store_true", help="skip the restorations given the true kernels "
                   "(Wiener, Richardson-Lucy, and the blind method's own restoration)")
    p.add_argument("--protocol", choices=pipeline.PROTOCOLS, default="both",
                   help="plain: full-frame PSNR/SSIM; levin: the blind-deblurring benchmark's (gray, 15 px border "
                        "cropped, best shift within ±10 px on a 0.25 px grid) with the error ratio; both (default)")
    p.add_argument("--ratio-reference", metavar="NAME", help="method whose error the error ratio divides by "
                   "(default: 'restore (true kernel)', the blind method's restoration given the true kernel, when the pairs have kernels)")
    p.add_argument("--json", type=_json_output, help="also write the rows to this JSON file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="time models on a frame", epilog="example: edge-deblur bench --model student-rpi5 --size 640x480 --threads 4")
    p.add_argument("--model", action="append", help=f"model(s) to time, a file or a bundled name (repeatable; default: {DEFAULT_MODEL})")
    p.add_argument("--size", type=_frame_size, default="640x480", help="WIDTHxHEIGHT of a synthetic frame (default: 640x480)")
    p.add_argument("--image", help="time on this image instead of a synthetic frame")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for the models (default: all cores)")
    p.add_argument("--tile", type=_positive_int, default=None, help="largest window side per model run (default: the model's)")
    p.add_argument("--repeats", type=_positive_int, default=20, help="timed runs after 2 warm-up runs (default: 20)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("convert", help="distill, prune and quantize a teacher into a student for a target (host toolchain)")
    p.add_argument("--teacher", default="teacher", help="the bundled teacher's name, a .keras, .onnx or .tflite file, "
                   "or a TensorFlow SavedModel folder")
    p.add_argument("--input-range", metavar="RANGE", help="the values the teacher expects: 0-1, 0-255, -1-1 (x/127.5-1) "
                   "or MEAN,STD of [0, 1] values (default: its sidecar's, else detected)")
    p.add_argument("--target", required=True, help="target profile in targets/: rpi4, rpi5, jetson-orin, x86")
    p.add_argument("-o", "--out", default="", help="output folder (default build/TARGET); running again resumes")
    p.add_argument("--quick", action="store_true", help="a smoke run: the whole chain on a few dozen crops and training "
                   "steps (minutes, for CI); the card, report and summary say so, and which failed checks that explains")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops, the training and the pruning (default: 0)")
    p.add_argument("--distill-steps", type=_positive_int, help="training steps before pruning (default: 8000; --quick: 30)")
    p.add_argument("--finetune-steps", type=_positive_int, help="training steps after pruning (default: 6000; --quick: 20)")
    p.add_argument("--learning-rate", type=_positive_float, help="peak learning rate of the distillation (default 0.002)")
    p.add_argument("--reuse", metavar="DIR", help="another conversion's output folder: take its data and "
                   "distillation when they were made with the same teacher, student and settings")
    p.add_argument("--crops", type=_positive_int, help="size of the distillation set, crops run through the teacher (default: 6000; --quick: 64)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="what the runtime reads from a model", epilog="example: edge-deblur info student-rpi5")
    p.add_argument("model", help=f"a .tflite/.onnx file or a bundled model: {', '.join(bundled_models()) or 'none'} "
                   f"(the default model is {DEFAULT_MODEL})")
    p.set_defaults(func=cmd_info)

    from .serve import commands as serve_commands  # serve, token, export (stdlib only until run)
    serve_commands.add_parsers(sub)
    return parser


def _check_combinations(parser: argparse.ArgumentParser, args) -> None:
    """Checks that involve two arguments, still before any work (argparse's exit 2)."""
    sub = parser._subparsers._group_actions[0].choices[args.command]  # the verb's own "usage:" line
    tile, overlap = getattr(args, "tile", None), getattr(args, "overlap", None)
    if tile is not None and overlap is not None and overlap >= tile:
        sub.error(f"argument --overlap: must be less than --tile ({tile}), got {overlap}")
    if args.command == "deblur" and args.output is None:  # the default runs/deblur/expN, checked as -o is
        try:
            _check_writable_folder(RUNS_DIR, "default output folder")
        except argparse.ArgumentTypeError as e:
            sub.error(f"argument -o/--output: {e}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_combinations(parser, args)
    logs.set_verbosity(logs.NORMAL if args.verbosity is None else args.verbosity)
    try:
        return args.func(args)
    except EdgeDeblurError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
