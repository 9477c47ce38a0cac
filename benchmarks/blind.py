"""Blind deblurring against the feed-forward networks and the true-kernel ceiling, side by side in
one run, in both protocols (plain full-frame PSNR/SSIM, and Levin et al. 2009's: gray, 15-pixel
border, best shift within +-10 px on a 0.25 px grid).

Sets (every image 256x256, noise 0.01 on sRGB values, blurred in linear light over the full photo
and centre-cropped, as ``converters.data.make_eval_pairs``):
  levin       the 24 held-out Kodak24 photos x the 8 measured Levin kernels (photo i, kernel i mod 8)
  classes     the 24 held-out photos, twice, with one synthetic blur class each (round robin):
              small shake (trajectory 11-15 px), large shake (25-31 px), defocus (radius 2-5),
              Gaussian (sigma 1-2) and noise only
  validation  the 6 validation photos x the same classes (what the settings were chosen on)

Methods: the blurred input, the feed-forward teacher, the default student, HQS restoration with the
true kernel (the ceiling), blind (estimated kernel, same restoration) and auto (blind, or the
teacher where the checks fail, or the input where it already reads sharp: AutoDeblurrer as shipped).

    python benchmarks/blind.py --threads 2 [--sets levin,classes] [--limit N] [--pictures docs/images]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from converters.blur import center_kernel, trajectory_kernel
from converters.data import blur_photo, heldout_photos, levin_kernels, validation_photos
from edge_deblur import Deblurrer, psnr, ssim, write_image
from edge_deblur.blind import AutoDeblurrer, BlindConfig, BlindDeblurrer
from edge_deblur.blind.method import tv_ratio
from edge_deblur.classical import defocus_psf, gaussian_psf
from edge_deblur.images import side_by_side
from edge_deblur.metrics import align_upto_shift, error_ratio, sse_upto_shift
from edge_deblur.blind.kernel import identity_kernel

CLASSES = ("small shake", "large shake", "defocus", "gaussian", "noise only")
CROP = 256


def class_kernel(name: str, rng: np.random.Generator) -> np.ndarray:
    if name == "small shake":
        return center_kernel(trajectory_kernel(rng, size=int(rng.choice([11, 13, 15]))))
    if name == "large shake":
        return center_kernel(trajectory_kernel(rng, size=int(rng.choice([25, 27, 29, 31]))))
    if name == "defocus":
        return defocus_psf(rng.uniform(2, 5))
    if name == "gaussian":
        return gaussian_psf(rng.uniform(1, 2))
    return identity_kernel(3)


def pairs(set_name: str, seed: int = 0):
    """(name, class, blurred, sharp, kernel) of a set, deterministic."""
    rng = np.random.default_rng(seed)
    out = []
    if set_name == "levin":
        levin = levin_kernels()
        jobs = [(n, p, "levin", center_kernel(levin[i % 8])) for i, (n, p) in enumerate(heldout_photos())]
    else:
        photos = heldout_photos() * 2 if set_name == "classes" else validation_photos() * 5
        jobs = []
        for i, (n, p) in enumerate(photos):
            c = CLASSES[i % len(CLASSES)] if set_name == "classes" else CLASSES[(i // 6) % len(CLASSES)]
            jobs.append((n, p, c, class_kernel(c, rng)))
    for name, photo, cls, kernel in jobs:
        blurred = blur_photo(photo, kernel, 0.01, rng)
        h, w = photo.shape[:2]
        y, x = (h - CROP) // 2, (w - CROP) // 2
        out.append((Path(name).stem, cls, blurred[y : y + CROP, x : x + CROP], photo[y : y + CROP, x : x + CROP], kernel))
    return out


def scores(sharp, out) -> dict:
    ref_c, test_c, shift = align_upto_shift(sharp, out)
    return {"psnr": psnr(sharp, out), "ssim": ssim(sharp, out),
            "levin_psnr": psnr(ref_c, test_c, data_range=1.0), "levin_ssim": ssim(ref_c, test_c, data_range=1.0)}


def run_set(set_name: str, blind: BlindDeblurrer, true: BlindDeblurrer, auto, teacher, student, limit: int | None,
            pictures: Path | None) -> list[dict]:
    rows = []
    data = pairs(set_name)[:limit]
    for i, (name, cls, b, s, kernel) in enumerate(data):
        t0 = time.perf_counter()
        outs = {"blurred input": b, "teacher": teacher(b), "student": student(b)}
        true.fixed_kernel = kernel
        outs["true kernel"] = true(b)
        outs["blind"] = blind(b)
        last = blind.last
        outs["auto"] = auto(b)
        ok = auto.last.path
        row = {"set": set_name, "name": name, "class": cls, "estimate_s": last.seconds["estimate"],
               "restore_s": last.seconds["restore"], "residual_ratio": last.residual_ratio,
               "true_residual_ratio": true.last.residual_ratio, "auto_path": ok, "auto_reason": auto.last.reason,
               "tv_ratio": last.tv_ratio, "teacher_tv_ratio": tv_ratio(b.astype(np.float32) / 255, outs["teacher"].astype(np.float32) / 255),
               "noise_sigma": last.noise_sigma,
               "kernel_error_ratio": error_ratio(s, outs["blind"], outs["true kernel"]) if cls != "noise only" else None}
        for m, o in outs.items():
            row[m] = scores(s, o)
        rows.append(row)
        print(f"[{set_name} {i + 1}/{len(data)}] {name} {cls}: in {row['blurred input']['psnr']:.2f} "
              f"true {row['true kernel']['psnr']:.2f} blind {row['blind']['psnr']:.2f} (levin {row['blind']['levin_psnr']:.2f}) "
              f"auto->{row['auto_path']} ratio {last.residual_ratio:.2f} tv {last.tv_ratio:.2f} est {last.seconds['estimate']:.1f}s "
              f"restore {last.seconds['restore']:.1f}s ({time.perf_counter() - t0:.0f}s)", flush=True)
        if pictures is not None and i < 3:
            view = lambda k: np.rint(np.kron(k / k.max(), np.ones((6, 6))) * 255).astype(np.uint8)
            kpanel = side_by_side([("true kernel", view(kernel)), ("estimated", view(last.kernel))], height=128)
            write_image(pictures / f"blind_{set_name}_{name}.jpg",
                        side_by_side([("input", b), ("blind", outs["blind"]), ("true kernel", outs["true kernel"])]))
            write_image(pictures / f"blind_{set_name}_{name}_kernels.png", kpanel)
    return rows


METHODS = ("blurred input", "teacher", "student", "true kernel", "blind", "auto")


def table(rows: list[dict], group: str = "set") -> str:
    lines = ["| " + group + " | method | PSNR | SSIM | Levin PSNR | Levin SSIM | gain (Levin) |", "|---|---|---:|---:|---:|---:|---:|"]
    groups = defaultdict(list)
    for r in rows:
        groups[r[group]].append(r)
    for g, rs in groups.items():
        base = np.mean([r["blurred input"]["levin_psnr"] for r in rs])
        for m in METHODS:
            v = {k: np.mean([r[m][k] for r in rs]) for k in ("psnr", "ssim", "levin_psnr", "levin_ssim")}
            lines.append(f"| {g} ({len(rs)}) | {m} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['levin_psnr']:.2f} | "
                         f"{v['levin_ssim']:.3f} | {v['levin_psnr'] - base:+.2f} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["set"], r["class"])].append(r)
    lines = ["| set | class | images | kernel error ratio (mean / share <= 3) | auto: blind/network/input | estimate s (median) | restore s (median) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (s, c), rs in groups.items():
        ratios = [r["kernel_error_ratio"] for r in rs if r["kernel_error_ratio"] is not None]
        er = f"{np.mean(ratios):.2f} / {np.mean(np.array(ratios) <= 3):.0%}" if ratios else "-"
        lines.append(f"| {s} | {c} | {len(rs)} | {er} | {sum(r['auto_path'] == 'blind' for r in rs)}/{sum(r['auto_path'] == 'network' for r in rs)}/{sum(r['auto_path'] == 'input' for r in rs)} | "
                     f"{np.median([r['estimate_s'] for r in rs]):.2f} | {np.median([r['restore_s'] for r in rs]):.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="levin,classes,validation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N pairs of each set (a quick look)")
    ap.add_argument("--pictures", type=Path, default=None, help="write input/kernel/result pictures here")
    ap.add_argument("--json", type=Path, default=None, help="also write every per-image row here")
    args = ap.parse_args(argv)
    blind = BlindDeblurrer.load(BlindConfig(threads=args.threads))
    true = BlindDeblurrer(blind.denoiser, blind.config)
    teacher, student = Deblurrer.load("teacher", threads=args.threads), Deblurrer.load("default", threads=args.threads)
    auto = AutoDeblurrer(blind, teacher)
    rows = []
    for s in args.sets.split(","):
        rows += run_set(s, blind, true, auto, teacher, student, args.limit, args.pictures)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    print(table(rows, "set"))
    print()
    for name in dict.fromkeys(r["set"] for r in rows if r["set"] != "levin"):
        print(f"\n{name}, by blur class:\n")
        print(table([r for r in rows if r["set"] == name], "class"))
    print()
    print(summary(rows))


if __name__ == "__main__":
    main()
