"""What the command line does, as functions: deblur files and folders, evaluate on blurred/sharp pairs.

A *method* turns an RGB(A)/gray image into its deblurred version. The network method is a loaded
``Deblurrer``; the classical methods need a point-spread function; ``blind`` estimates the kernel
and restores with the learned prior (``edge_deblur.blind``), and ``auto`` checks that estimate and
falls back to the network when it fails. Blind methods say, in their ``last`` attribute, which path
an image took and with which kernel.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import classical, images
from .errors import EdgeDeblurError
from .metrics import align_upto_shift, laplacian_variance, psnr, ssim
from .model import Deblurrer
from .progress import Progress

Method = Callable[[np.ndarray], np.ndarray]
METHODS = ("auto", "blind", "network", "wiener", "rl")


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
    kernel_size: int | None = None  # blind/auto: odd kernel side (None: chosen automatically)
    fallback_model: str = "teacher"  # auto: the network a failed estimate falls back to


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
    elif config.method in ("blind", "auto"):
        deblur = blind_method(config)
    else:
        raise EdgeDeblurError(f"unknown method {config.method!r} (choose from {', '.join(METHODS)})")
    if config.clahe:
        return lambda image: deblur(classical.clahe(image))
    return deblur


def blind_method(config: MethodConfig) -> Method:
    """``blind``: estimate and restore (with ``--psf``, restore with that kernel instead); ``auto``:
    blind, checked, falling back to ``config.fallback_model``."""
    from .blind import AutoDeblurrer, BlindConfig, BlindDeblurrer

    kernel = None
    if config.psf:
        try:
            kernel = classical.psf_from_spec(classical.parse_psf(config.psf))
        except ValueError as e:
            raise EdgeDeblurError(f"--psf {config.psf}: {e}") from e
    blind = BlindDeblurrer.load(BlindConfig(kernel_size=config.kernel_size, threads=config.threads), kernel=kernel)
    if config.method == "blind":
        return blind
    fallback = Deblurrer.load(config.fallback_model, threads=config.threads, tile=config.tile, overlap=config.overlap)
    return AutoDeblurrer(blind, fallback)


def save_kernel(kernel: np.ndarray, stem_path: Path) -> list[Path]:
    """Write ``kernel`` as ``STEM.kernel.npy`` (the array, reusable with ``--psf``) and
    ``STEM.kernel.png`` (scaled so its peak is white, 8x nearest-neighbour so it can be seen)."""
    npy, png = stem_path.with_name(stem_path.name + ".kernel.npy"), stem_path.with_name(stem_path.name + ".kernel.png")
    with images.AtomicFile(npy) as tmp:
        np.save(tmp, np.asarray(kernel, np.float64))
    view = np.asarray(kernel, np.float64) / max(float(np.max(kernel)), 1e-12)
    view = np.kron(view, np.ones((8, 8)))
    images.write_image(png, np.rint(view * 255).astype(np.uint8))
    return [npy, png]


def classical_method(method: str, psf: np.ndarray, config: MethodConfig = MethodConfig()) -> Method:
    if method == "wiener":
        return lambda image: classical.wiener(image, psf, balance=config.balance)
    return lambda image: classical.richardson_lucy(image, psf, iterations=config.iterations)


@dataclass(frozen=True)
class ImageTiming:
    """One written image: where from, where to, its size, and the seconds from reading it to its
    result being written (a copied pass-through included, so slow disks show)."""

    source: Path
    target: Path
    width: int
    height: int
    seconds: float
    passed_through: bool = False


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    passed_through: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    paths: list[tuple[Path, str, str]] = field(default_factory=list)  # (input, path taken, why): blind/auto
    kernels: list[Path] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)  # folders given as inputs that held no images
    timings: list[ImageTiming] = field(default_factory=list)  # one per written image, in order

    @property
    def ok(self) -> bool:
        return not self.failures and not self.empty


@dataclass(frozen=True)
class BatchPlan:
    """What a batch will read and write, known before any image is decoded."""

    sources: list[Path]  # the images to read, in order
    targets: list[Path]  # where each one's result goes
    missing: list[Path]  # inputs that do not exist (failures, the rest go on)
    empty: list[Path]  # folders with no images in them


def plan_batch(inputs: Sequence[str | Path], out_dir: str | Path, *, suffix: str | None = None,
               compare: bool = False, save_kernels: bool = False) -> BatchPlan:
    """Expand ``inputs`` (files and folders) and name every output, refusing, before any work, two
    inputs whose outputs would overwrite each other (``d1/a.png`` and ``d2/a.png``; with ``compare``
    or ``save_kernels`` also ``a.png`` and ``a.jpg``, whose ``compare/a.jpg`` and ``a.kernel.*``
    would be shared). Refusing rather than renaming keeps every output named after its input."""
    sources, missing, empty = [], [], []
    for item in map(Path, inputs):
        if not item.exists():
            missing.append(item)
            continue
        found = images.list_images([item])
        if item.is_dir() and not found:
            empty.append(item)
        sources += [path for path in found if path not in sources]  # a file named twice is deblurred once
    targets = [images.output_path(path, out_dir, suffix) for path in sources]
    claimed: dict[object, Path] = {}
    for source, target in zip(sources, targets):
        for key in [target] + ([target.stem] if compare or save_kernels else []):
            if key in claimed and claimed[key] != source:
                also = " (their compare pictures or kernels share the name)" if key == target.stem else ""
                raise EdgeDeblurError(f"{claimed[key]} and {source} would both be written as {target.name if key == target else key}"
                                      f" in {out_dir}{also}; deblur them into different output folders, or rename one")
            claimed[key] = source
    return BatchPlan(sources, targets, missing, empty)


def deblur_files(deblur: Method, inputs: Sequence[str | Path], out_dir: str | Path, *,
                 suffix: str | None = None, compare: bool = False, sharp_threshold: float | None = None,
                 max_pixels: int | None = None, progress: bool | None = None,
                 save_kernels: bool = False, on_image: Callable[[ImageTiming], None] | None = None) -> BatchReport:
    """Deblur every image in ``inputs`` (files or folders) into ``out_dir``, keeping each input's stem.

    A bad or missing file does not stop the batch: it is recorded in the report's ``failures`` and
    the rest go on; a folder with no images is listed in ``empty``. Outputs that would overwrite
    each other are refused before any work (``plan_batch``). ``compare`` also writes ``out_dir/compare/<stem>.jpg``, input and result side by side.
    Frames whose sharpness (variance of the Laplacian) reaches ``sharp_threshold`` are copied
    through untouched. For blind methods, ``report.paths`` records the path each image took, and
    ``save_kernels`` writes each estimated kernel next to its result (``save_kernel``).
    EXIF and ICC profiles are carried from each input to its result where both formats hold them
    (JPEG and PNG, ``images.read_metadata``); the EXIF orientation becomes upright, as the pixels are.
    ``report.timings`` has each written image's seconds, also handed to ``on_image`` as it is written.
    """
    out_dir = Path(out_dir)
    plan = plan_batch(inputs, out_dir, suffix=suffix, compare=compare, save_kernels=save_kernels)
    report = BatchReport(empty=list(plan.empty))
    report.failures += [(path, f"{path}: no such file or folder") for path in plan.missing]
    start = time.perf_counter()
    with Progress(len(plan.sources), "deblur", enabled=progress) as bar:
        for path, target in zip(plan.sources, plan.targets):
            started = time.perf_counter()
            try:
                image = images.read_image(path, max_pixels=max_pixels)
                if sharp_threshold is not None and laplacian_variance(image) >= sharp_threshold:
                    result = image
                    report.passed_through.append(path)
                else:
                    result = deblur(image)
                if result is image and target.suffix.lower() == path.suffix.lower():
                    # Passed through in the same format: the source's own bytes (no re-encoding, EXIF kept).
                    with images.AtomicFile(target) as tmp:
                        shutil.copyfile(path, tmp)
                else:
                    images.write_image(target, result, metadata=images.read_metadata(path))
                report.written.append(target)
                timing = ImageTiming(path, target, image.shape[1], image.shape[0], time.perf_counter() - started,
                                     passed_through=result is image)
                report.timings.append(timing)
                if on_image is not None:
                    on_image(timing)
                last = getattr(deblur, "last", None)
                if last is not None and result is not image:
                    report.paths.append((path, last.path, last.reason))
                    if save_kernels and last.kernel is not None:
                        report.kernels += save_kernel(last.kernel, target.with_suffix(""))
                if compare:
                    picture = images.side_by_side([("input", image), ("deblurred", result)])
                    images.write_image(out_dir / "compare" / f"{path.stem}.jpg", picture)
            except EdgeDeblurError as e:
                report.failures.append((path, str(e)))
            except OSError as e:  # a full disk or a vanished source: this image fails, the rest go on
                report.failures.append((path, f"{path}: {e.strerror or e}"))
            bar.update(1, failed=len(report.failures))
    report.seconds = time.perf_counter() - start
    return report


PROTOCOLS = ("plain", "levin", "both")
LEVIN_BORDER = 15  # metrics.align_upto_shift's default crop
SUCCESS_RATIO = 3.0  # Levin et al. 2009 and Sun et al. 2013 count a kernel a success at error ratio <= 3


@dataclass(frozen=True)
class EvalRow:
    """One method's means over the pairs. Plain: PSNR/SSIM of the full frames in their own range.
    Levin (``metrics.align_upto_shift``): gray, 15-pixel border cropped, best shift within +-10 px on
    a 0.25 px grid. Error ratio: per image SSE(method) / SSE(ratio reference), up to shift."""

    method: str
    psnr: float | None  # None when not measured (protocol "levin" measures no plain SSIM)
    ssim: float | None
    latency_ms: float  # median per image
    count: int
    levin_psnr: float | None = None
    levin_ssim: float | None = None
    error_ratio: float | None = None  # mean over the images
    success_rate: float | None = None  # fraction of the images with error ratio <= SUCCESS_RATIO
    ratio_reference: str | None = None  # the method the ratio divides by


def read_pairs(pairs_dir: str | Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(name, blurred, sharp, true kernel or None) for each ``blur/NAME`` with a ``sharp/NAME``
    (any image suffix); kernels come from ``kernels/NAME.npy`` when that folder exists. Every pair
    is read and checked (same size and channels) before this returns, so a bad pair stops an
    evaluation before any slow work, naming its files."""
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
        sharp_path = sharp_by_stem[blur_path.stem]
        blurred, sharp = images.read_image(blur_path), images.read_image(sharp_path)
        if blurred.shape != sharp.shape:
            raise EdgeDeblurError(f"{blur_path} is {_describe(blurred)} but its sharp counterpart {sharp_path} "
                                  f"is {_describe(sharp)}: a pair must match in size and channels")
        pairs.append((blur_path.stem, blurred, sharp, kernel))
    if not pairs:
        raise EdgeDeblurError(f"{blur_dir}: no images")
    return pairs


def _describe(image: np.ndarray) -> str:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return f"{image.shape[1]}x{image.shape[0]} with {channels} channel(s)"


def evaluate(pairs, methods: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]], *,
             protocol: str = "both", ratio_reference: str | None = None,
             progress: bool | None = None) -> list[EvalRow]:
    """Mean PSNR/SSIM against the sharp images and median latency, per method. Each method gets the
    blurred image and the pair's true kernel (None when unknown): classical baselines given the true
    kernel are the upper bound a blind method is measured against.

    ``protocol``: "plain" (full-frame PSNR/SSIM, as before), "levin" (the benchmark's PSNR/SSIM up
    to shift, with the plain PSNR kept beside it to show what the alignment adds), or "both".
    ``ratio_reference``, a method in ``methods`` (usually a non-blind restoration with the true
    kernel), adds each other method's error ratio (Levin et al. 2009): per image
    SSE_upto_shift(method) / SSE_upto_shift(reference), its mean and the fraction <= 3.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    levin = protocol in ("levin", "both")
    if ratio_reference is not None:
        if ratio_reference not in methods:
            raise EdgeDeblurError(f"ratio reference {ratio_reference!r} is not one of the methods ({', '.join(methods)})")
        if not levin:
            raise EdgeDeblurError("the error ratio is measured up to shift: it needs protocol 'levin' or 'both'")
    # Levin's crop leaves (side - 2 * 15) pixels, which SSIM's 7x7 window must fit: refuse before any work.
    smallest = LEVIN_BORDER * 2 + 7 if levin else 7
    for name, blurred, _, _ in pairs:
        if min(blurred.shape[:2]) < smallest:
            raise EdgeDeblurError(f"pair {name}: {_describe(blurred)} is too small to score; protocol {protocol!r} "
                                  f"needs at least {smallest}x{smallest}")
    measured = {}  # method -> (plain PSNR, plain SSIM, Levin PSNR, Levin SSIM, SSE up to shift) per image
    latency = {}
    with Progress(len(pairs) * len(methods), "eval", enabled=progress) as bar:
        for name, method in methods.items():
            scores, times = [], []
            for _, blurred, sharp, kernel in pairs:
                t = time.perf_counter()
                restored = method(blurred, kernel)
                times.append(time.perf_counter() - t)
                plain_ssim = ssim(sharp, restored) if protocol != "levin" else np.nan
                levin_scores = (np.nan,) * 3
                if levin:
                    sharp_crop, aligned, _ = align_upto_shift(sharp, restored, border=LEVIN_BORDER)
                    levin_scores = (psnr(sharp_crop, aligned, data_range=1.0), ssim(sharp_crop, aligned, data_range=1.0),
                                    float(np.sum((sharp_crop - aligned) ** 2)))
                scores.append((psnr(sharp, restored), plain_ssim, *levin_scores))
                bar.update(1)
            measured[name] = np.asarray(scores, dtype=np.float64)
            latency[name] = 1000 * float(np.median(times))

    def mean(name: str, column: int) -> float | None:
        values = measured[name][:, column]
        return None if np.isnan(values).all() else float(values.mean())

    rows = []
    for name in methods:
        ratio = success = None
        if ratio_reference is not None and name != ratio_reference:
            ratios = [_ratio(e, r) for e, r in zip(measured[name][:, 4], measured[ratio_reference][:, 4])]
            ratio, success = float(np.mean(ratios)), float(np.mean(np.asarray(ratios) <= SUCCESS_RATIO))
        rows.append(EvalRow(name, mean(name, 0), mean(name, 1), latency[name], len(pairs),
                            levin_psnr=mean(name, 2), levin_ssim=mean(name, 3), error_ratio=ratio,
                            success_rate=success, ratio_reference=ratio_reference if ratio is not None else None))
    return rows


def _ratio(error: float, reference_error: float) -> float:
    """error / reference_error as ``metrics.error_ratio`` defines it (1 when equal, inf over 0)."""
    if error == reference_error:
        return 1.0
    return float("inf") if reference_error == 0 else error / reference_error


def format_table(rows: Sequence[EvalRow]) -> str:
    """A Markdown table; the Levin-protocol and error-ratio columns appear when any row has them."""
    reference = next((r.ratio_reference for r in rows if r.ratio_reference), None)
    columns = [("method", lambda r: r.method, "---")]
    optional = [
        ("PSNR (dB)", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.4f}"),
        ("Levin PSNR (dB)", "levin_psnr", "{:.2f}"), ("Levin SSIM", "levin_ssim", "{:.4f}"),
        (f"error ratio vs {reference}", "error_ratio", "{:.2f}"),
        (f"ratio <= {SUCCESS_RATIO:g}", "success_rate", "{:.0%}"),
    ]
    for title, attr, fmt in optional:
        if any(getattr(r, attr) is not None for r in rows):
            columns.append((title, lambda r, attr=attr, fmt=fmt: "-" if getattr(r, attr) is None
                            else fmt.format(getattr(r, attr)), "---:"))
    columns += [("median latency (ms)", lambda r: f"{r.latency_ms:.1f}", "---:"), ("images", lambda r: str(r.count), "---:")]
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "|".join(c[2] for c in columns) + "|"]
    lines += ["| " + " | ".join(c[1](r) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
