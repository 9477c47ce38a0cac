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
  training    50 training photos, one of the same classes each (round robin; another seed): a larger
              set to choose auto's rule on, since 6 photos a class cannot tell two gates apart

Methods: the blurred input, the feed-forward teacher, the default student, HQS restoration with the
true kernel (the ceiling), blind (estimated kernel, same restoration) and auto (blind, or the
teacher where the checks fail, or the input where it already reads sharp: AutoDeblurrer as shipped).

    python benchmarks/blind.py --threads 2 [--sets levin,classes] [--limit N] [--pictures docs/images]
    python benchmarks/blind.py --sets validation --json val.json && python benchmarks/blind.py --choose-limits val.json
    python benchmarks/blind.py --rescore rows.json [--limits 1.5 2.0]   (the tables again, auto with other limits)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from converters.blur import center_kernel, trajectory_kernel
from converters.data import blur_photo, heldout_photos, levin_kernels, training_photos, validation_photos
from edge_deblur import Deblurrer, psnr, ssim, write_image
from edge_deblur.blind import AutoDeblurrer, BlindConfig, BlindDeblurrer
from edge_deblur.blind.method import auto_path, tv_ratio
from edge_deblur.classical import defocus_psf, gaussian_psf
from edge_deblur.images import side_by_side
from edge_deblur.metrics import align_upto_shift, error_ratio, sse_upto_shift
from edge_deblur.blind.kernel import identity_kernel, kernel_extent
from edge_deblur.blind.restore import reblur_residual

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
        if set_name == "training":
            rng = np.random.default_rng(seed + 1)
            photos = training_photos()[:50]
        else:
            photos = heldout_photos() * 2 if set_name == "classes" else validation_photos() * 5
        jobs = []
        for i, (n, p) in enumerate(photos):
            c = CLASSES[(i // 6) % len(CLASSES)] if set_name == "validation" else CLASSES[i % len(CLASSES)]
            jobs.append((n, p, c, class_kernel(c, rng)))
    for name, photo, cls, kernel in jobs:
        blurred = blur_photo(photo, kernel, 0.01, rng)
        h, w = photo.shape[:2]
        y, x = (h - CROP) // 2, (w - CROP) // 2
        out.append((Path(name).stem, cls, blurred[y : y + CROP, x : x + CROP], photo[y : y + CROP, x : x + CROP], kernel))
    return out


class Replay(BlindDeblurrer):
    """The blind method, replaying its last result when it is asked again about the same image:
    ``auto`` (the shipped AutoDeblurrer, gate, checks and fallback) then reuses the blind column's
    estimate instead of estimating the same kernel a second time (the estimate is deterministic)."""

    def __init__(self, blind: BlindDeblurrer):
        super().__init__(blind.denoiser, blind.config)
        self._memo = None

    def deblur_float(self, x, sigma=None, denoised=None):
        key = (x.shape, hash(x.tobytes()))
        if self._memo is not None and self._memo[0] == key:
            self.last = self._memo[2]
            return self._memo[1].copy()
        y = super().deblur_float(x, sigma, denoised)
        self._memo = (key, y.copy(), self.last)
        return y


def scores(sharp, out) -> dict:
    ref_c, test_c, shift = align_upto_shift(sharp, out)
    return {"psnr": psnr(sharp, out), "ssim": ssim(sharp, out),
            "levin_psnr": psnr(ref_c, test_c, data_range=1.0), "levin_ssim": ssim(ref_c, test_c, data_range=1.0)}


def run_set(set_name: str, blind: BlindDeblurrer, true: BlindDeblurrer, auto, teacher, student, limit: int | None,
            pictures: Path | None, rows: list[dict] | None = None, saved=None) -> list[dict]:
    """Every method on every pair of the set; each row is appended to ``rows`` (and ``saved(rows)``
    called after it, so that a long run keeps what it has measured)."""
    rows = [] if rows is None else rows
    data = pairs(set_name)[:limit]
    for i, (name, cls, b, s, kernel) in enumerate(data):
        t0 = time.perf_counter()
        outs = {"blurred input": b, "teacher": teacher(b), "student": student(b)}
        true.fixed_kernel = kernel
        outs["true kernel"] = true(b)
        outs["blind"] = blind(b)
        last = blind.last
        xb = b.astype(np.float32) / 255
        lowpass = reblur_residual(xb, outs["blind"].astype(np.float32) / 255, last.kernel, lowpass=2.0) / max(last.noise_sigma, blind.config.residual_floor)
        outs["auto"] = auto(b)
        ok = auto.last.path
        row = {"set": set_name, "name": name, "class": cls, "estimate_s": last.seconds["estimate"],
               "restore_s": last.seconds["restore"], "residual_ratio": last.residual_ratio,
               "true_residual_ratio": true.last.residual_ratio, "auto_path": ok, "auto_reason": auto.last.reason,
               "tv_ratio": last.tv_ratio, "teacher_tv_ratio": tv_ratio(b.astype(np.float32) / 255, outs["teacher"].astype(np.float32) / 255),
               "noise_sigma": last.noise_sigma, "sharpness": auto.last.sharpness,
               "kernel_extent": kernel_extent(last.kernel, 0.9), "candidates": last.candidates, "agreement": last.agreement, "lowpass_ratio": lowpass,
               "kernel_error_ratio": error_ratio(s, outs["blind"], outs["true kernel"]) if cls != "noise only" else None}
        for m, o in outs.items():
            row[m] = scores(s, o)
        rows.append(row)
        if saved is not None:
            saved(rows)
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


def row_path(row: dict, config: BlindConfig) -> str:
    """The path ``auto`` with ``config``'s gate and limits would have taken on ``row``
    (:func:`~edge_deblur.blind.method.auto_path`, the shipped rule itself): every input it needs is
    in the row (the denoised input's blur metric; the blind column's checks, which are the same
    estimate auto makes). Rows of runs before the metric was kept replay their own gate."""
    if "sharpness" not in row:
        if row["auto_path"] == "input":
            return "input"
        return auto_path(config, None, row["residual_ratio"], row["tv_ratio"])  # no metric: no gate
    return auto_path(config, row["sharpness"], row["residual_ratio"], row["tv_ratio"])


def auto_gain(row: dict, config: BlindConfig) -> float:
    """The Levin-protocol gain ``auto`` with ``config`` would have had on ``row``."""
    method = {"input": "blurred input", "blind": "blind", "network": "teacher"}[row_path(row, config)]
    return row[method]["levin_psnr"] - row["blurred input"]["levin_psnr"]


def choose_limits(rows: list[dict], residuals=np.round(np.arange(1.1, 2.01, 0.1), 2),
                  tvs=(1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0), sharps=(0.25, 0.3, 0.35), near_sharps=(0.35, 0.4, 0.45, 0.5),
                  max_loss: float = 0.2) -> tuple[BlindConfig, str]:
    """Auto's gate and limits by the stated rule: of the (sharp gate, near-sharp gate, re-blur,
    total variation) settings that lose at most ``max_loss`` dB to the teacher alone and nothing to
    the input in any blur class, the one with the best mean gain; ties go to the earlier (tighter)
    setting. Returns the config and a table of the best setting per gate pair."""
    classes = sorted({r["class"] for r in rows})
    teacher = {c: np.mean([r["teacher"]["levin_psnr"] - r["blurred input"]["levin_psnr"] for r in rows if r["class"] == c]) for c in classes}
    best, lines = None, ["| sharp gate | near-sharp gate | best re-blur, TV limits | mean gain | worst class loss to the teacher | worst class gain |",
                         "|---:|---:|---|---:|---:|---:|"]
    for sharp in sharps:
        for near in near_sharps:
            if near < sharp:
                continue
            pair_best = None
            for res in residuals:
                for tv in tvs:
                    cfg = replace(BlindConfig(), sharp_below=sharp, near_sharp_below=near,
                                  max_residual_ratio=float(res), max_tv_ratio=float(tv))
                    per = {c: np.mean([auto_gain(r, cfg) for r in rows if r["class"] == c]) for c in classes}
                    loss = max(teacher[c] - per[c] for c in classes)
                    worst = min(per.values())
                    mean = float(np.mean([auto_gain(r, cfg) for r in rows]))
                    if loss <= max_loss and worst >= 0 and (pair_best is None or mean > pair_best[1] + 1e-9):
                        pair_best = (cfg, mean, loss, worst)
            if pair_best is None:
                lines.append(f"| {sharp:g} | {near:g} | none allowed | | | |")
                continue
            cfg, mean, loss, worst = pair_best
            lines.append(f"| {sharp:g} | {near:g} | {cfg.max_residual_ratio:g}, {cfg.max_tv_ratio:g} | {mean:+.2f} | {loss:+.2f} | {worst:+.2f} |")
            if best is None or mean > best[1] + 1e-9:
                best = (cfg, mean)
    if best is None:
        raise SystemExit(f"no setting loses at most {max_loss} dB to the teacher and nothing to the input in every class")
    c = best[0]
    return c, "\n".join(lines) + (f"\n\nchosen: sharp gate {c.sharp_below:g}, near-sharp gate {c.near_sharp_below:g}, "
                                  f"re-blur <= {c.max_residual_ratio:g}, TV <= {c.max_tv_ratio:g} (mean {best[1]:+.2f} dB)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="levin,classes,validation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N pairs of each set (a quick look)")
    ap.add_argument("--pictures", type=Path, default=None, help="write input/kernel/result pictures here")
    ap.add_argument("--json", type=Path, default=None, help="also write every per-image row here")
    ap.add_argument("--choose-limits", type=Path, default=None, metavar="JSON",
                    help="choose auto's limits from the rows of a --sets validation (or training) --json run, and stop")
    ap.add_argument("--rescore", type=Path, default=None, metavar="JSON",
                    help="print the tables of a --json run again, auto's column made with --limits, and stop")
    ap.add_argument("--limits", type=float, nargs=2, default=None, metavar=("RESIDUAL", "TV"),
                    help="with --rescore: auto's re-blur and total-variation limits (default: the shipped ones)")
    ap.add_argument("--gates", type=float, nargs=2, default=None, metavar=("SHARP", "NEAR_SHARP"),
                    help="with --rescore: auto's sharp and near-sharp gates (default: the shipped ones)")
    args = ap.parse_args(argv)
    if args.choose_limits:
        print(choose_limits([r for r in json.loads(args.choose_limits.read_text()) if r["set"] in ("validation", "training")])[1])
        return
    if args.rescore:
        report(rescore(json.loads(args.rescore.read_text()), gate(args)))
        return
    blind = Replay(BlindDeblurrer.load(BlindConfig(threads=args.threads)))
    true = BlindDeblurrer(blind.denoiser, blind.config)
    teacher, student = Deblurrer.load("teacher", threads=args.threads), Deblurrer.load("default", threads=args.threads)
    auto = AutoDeblurrer(blind, teacher)
    rows: list[dict] = []
    saved = (lambda rs: args.json.write_text(json.dumps(rs, indent=1, default=float))) if args.json else None
    for s in args.sets.split(","):
        run_set(s, blind, true, auto, teacher, student, args.limit, args.pictures, rows, saved)
    report(rows)


def report(rows: list[dict]) -> None:
    print(table(rows, "set"))
    print()
    for name in dict.fromkeys(r["set"] for r in rows if r["set"] != "levin"):
        print(f"\n{name}, by blur class:\n")
        print(table([r for r in rows if r["set"] == name], "class"))
    print()
    print(summary(rows))


def rescore(rows: list[dict], config: BlindConfig) -> list[dict]:
    """The rows with auto's column as ``config``'s gate and limits would have made it (see
    row_path): every method's scores are in the row, so auto's result is one of them."""
    out = []
    for r in rows:
        r = dict(r)
        r["auto_path"] = row_path(r, config)
        r["auto"] = r[{"input": "blurred input", "blind": "blind", "network": "teacher"}[r["auto_path"]]]
        out.append(r)
    return out


def gate(args) -> BlindConfig:
    """BlindConfig with --limits and --gates (the shipped values where not given)."""
    cfg = BlindConfig()
    if args.limits:
        cfg = replace(cfg, max_residual_ratio=args.limits[0], max_tv_ratio=args.limits[1])
    if args.gates:
        cfg = replace(cfg, sharp_below=args.gates[0], near_sharp_below=args.gates[1])
    return cfg


if __name__ == "__main__":
    main()
