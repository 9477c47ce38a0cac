"""What the command line does, as functions: deblur files and folders, evaluate on blurred/sharp pairs.

A *method* turns an RGB(A)/gray image into its deblurred version. The network method is a loaded
``Deblurrer``; the classical methods need a point-spread function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import classical, images
from .errors import EdgeDeblurError
from .metrics import laplacian_variance, psnr, ssim
from .model import Deblurrer
from .progress import Progress

Method = Callable[[np.ndarray], np.ndarray]
METHODS = ("network", "wiener", "rl")


@dataclass(frozen=True)
class MethodConfig:
    method: str = "network"
    model: str = "default"
    threads: int | None = None
    tile: int | None = None
    overlap: int = 32
    psf: str | None = None  # "motion:15,30", "defocus:4", "gaussian:2", or a PSF image/.npy
    iterations: int = 30  # Richardson-Lucy
    balance: float = 0.01  # Wiener noise-to-signal ratio
    clahe: bool = False  # equalise X-ray-like gray images before deblurring


def make_method(config: MethodConfig) -> Method:
    """The deblurring function a configuration describes (loads the model once)."""
    if config.method == "network":
        deblur: Method = Deblurrer.load(config.model, threads=config.threads, tile=config.tile,
                                        overlap=config.overlap)
    elif config.method in ("wiener", "rl"):
        if not config.psf:
            raise EdgeDeblurError(f"--method {config.method} needs a point-spread function: --psf motion:LEN,ANGLE | defocus:R | gaussian:SIGMA | FILE")
        try:
            psf = classical.psf_from_spec(classical.parse_psf(config.psf))
        except ValueError as e:
            raise EdgeDeblurError(f"--psf {config.psf}: {e}") from e
        deblur = classical_method(config.method, psf, config)
    else:
        raise EdgeDeblurError(f"unknown method {config.method!r} (choose from {', '.join(METHODS)})")
    if config.clahe:
        return lambda image: deblur(classical.clahe(image))
    return deblur


def classical_method(method: str, psf: np.ndarray, config: MethodConfig = MethodConfig()) -> Method:
    if method == "wiener":
        return lambda image: classical.wiener(image, psf, balance=config.balance)
    return lambda image: classical.richardson_lucy(image, psf, iterations=config.iterations)


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    passed_through: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def deblur_files(deblur: Method, inputs: Sequence[str | Path], out_dir: str | Path, *,
                 suffix: str | None = None, compare: bool = False, sharp_threshold: float | None = None,
                 max_pixels: int | None = None, progress: bool | None = None) -> BatchReport:
    """Deblur every image in ``inputs`` (files or folders) into ``out_dir``, keeping each input's stem.

    A bad file does not stop the batch: it is recorded in the report's ``failures`` and the rest go
    on. ``compare`` also writes ``out_dir/compare/<stem>.jpg``, input and result side by side.
    Frames whose sharpness (variance of the Laplacian) reaches ``sharp_threshold`` are copied
    through untouched.
    """
    report = BatchReport()
    paths = images.list_images(inputs)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    with Progress(len(paths), "deblur", enabled=progress) as bar:
        for path in paths:
            try:
                image = images.read_image(path, max_pixels=max_pixels)
                if sharp_threshold is not None and laplacian_variance(image) >= sharp_threshold:
                    result = image
                    report.passed_through.append(path)
                else:
                    result = deblur(image)
                target = images.output_path(path, out_dir, suffix)
                images.write_image(target, result)
                report.written.append(target)
                if compare:
                    picture = images.side_by_side([("input", image), ("deblurred", result)])
                    images.write_image(out_dir / "compare" / f"{path.stem}.jpg", picture)
            except EdgeDeblurError as e:
                report.failures.append((path, str(e)))
            bar.update(1, failed=len(report.failures))
    report.seconds = time.perf_counter() - start
    return report


@dataclass(frozen=True)
class EvalRow:
    method: str
    psnr: float
    ssim: float
    latency_ms: float  # median per image
    count: int


def read_pairs(pairs_dir: str | Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(name, blurred, sharp, true kernel or None) for each ``blur/NAME`` with a ``sharp/NAME``
    (any image suffix); kernels come from ``kernels/NAME.npy`` when that folder exists."""
    root = Path(pairs_dir)
    blur_dir, sharp_dir, kernel_dir = root / "blur", root / "sharp", root / "kernels"
    if not blur_dir.is_dir() or not sharp_dir.is_dir():
        raise EdgeDeblurError(f"{root}: expected sub-folders blur/ and sharp/ holding image pairs")
    sharp_by_stem = {p.stem: p for p in images.list_images([sharp_dir])}
    pairs = []
    for blur_path in images.list_images([blur_dir]):
        if blur_path.stem not in sharp_by_stem:
            raise EdgeDeblurError(f"{blur_path}: no sharp counterpart in {sharp_dir}")
        kernel_path = kernel_dir / f"{blur_path.stem}.npy"
        kernel = classical.load_psf(kernel_path) if kernel_path.exists() else None
        pairs.append((blur_path.stem, images.read_image(blur_path), images.read_image(sharp_by_stem[blur_path.stem]), kernel))
    if not pairs:
        raise EdgeDeblurError(f"{blur_dir}: no images")
    return pairs


def evaluate(pairs, methods: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]], *,
             progress: bool | None = None) -> list[EvalRow]:
    """Mean PSNR/SSIM against the sharp images and median latency, per method. Each method gets the
    blurred image and the pair's true kernel (None when unknown): classical baselines given the true
    kernel are the upper bound a blind method is measured against."""
    rows = []
    with Progress(len(pairs) * len(methods), "eval", enabled=progress) as bar:
        for name, method in methods.items():
            scores, times = [], []
            for _, blurred, sharp, kernel in pairs:
                t = time.perf_counter()
                restored = method(blurred, kernel)
                times.append(time.perf_counter() - t)
                scores.append((psnr(sharp, restored), ssim(sharp, restored)))
                bar.update(1)
            p, s = np.mean(scores, axis=0)
            rows.append(EvalRow(name, float(p), float(s), 1000 * float(np.median(times)), len(pairs)))
    return rows


def format_table(rows: Sequence[EvalRow]) -> str:
    lines = ["| method | PSNR (dB) | SSIM | median latency (ms) | images |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.method} | {r.psnr:.2f} | {r.ssim:.4f} | {r.latency_ms:.1f} | {r.count} |" for r in rows]
    return "\n".join(lines)
