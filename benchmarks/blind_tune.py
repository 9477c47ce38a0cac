"""The tuning set of the blind estimator, and the two measurements its settings were chosen by.

Never Kodak (held out): the 6 validation photos and 6 training photos, 256x256 centre crops,
blurred in linear light by seeded trajectory kernels of 13-27 px (Boracchi & Foi) and defocus disks,
with noise on sRGB (the evaluation forward model, ``converters.data.blur_photo``).

  sweep        estimate every pair's kernel with the given settings, restore with it and with the
               true kernel (the blind method's HQS): kernel similarity (max normalised
               cross-correlation), Levin et al.'s error ratio, and the Levin-protocol gain of both
  fixed-point  start at the finest scale from the true kernel (31 px box) and run one scale's
               alternations on the denoised copy: how far the alternation itself moves a right
               kernel (its bias), in similarity and in gain
  whole        the blind method on whole photos (321x481 to 500x500, not 256-pixel crops: the
               estimation window, KernelConfig.max_side, then matters), 6 validation and 6 other
               training photos x the same kernel classes, gain against the true kernel's

    python benchmarks/blind_tune.py sweep --noise 0.01 [--set finest_iterations=20 --set edge_r=2] [--blind restarts=()]
    python benchmarks/blind_tune.py fixed-point --lambda 1e-4 --set edge_r=0 --set iterations=20   (the finest scale's settings)
    python benchmarks/blind_tune.py whole --pairs 12 --set max_side=400
"""

from __future__ import annotations

import argparse
import ast
import time
from dataclasses import replace

import numpy as np

from converters.blur import center_kernel, trajectory_kernel
from converters.data import TRAINING, blur_photo, load_photo, validation_photos
from edge_deblur.blind import BlindConfig, BlindDeblurrer, KernelConfig
from edge_deblur.blind.kernel import estimate_at_scale, estimation_image, kernel_similarity
from edge_deblur.blind.method import split_image
from edge_deblur.classical import defocus_psf
from edge_deblur.metrics import align_upto_shift, error_ratio, psnr

SIZES = (13, 17, 21, 25, 27, 19)


def tuning_pairs(n: int = 24, noise: float = 0.01, seed: int = 7, *, whole: bool = False):
    """(name, kind, blurred, sharp, kernel): photo i of the 12, every 6th a defocus disk (r 2-5),
    the others a trajectory kernel of SIZES[i mod 6]; 256x256 centre crops, or with ``whole`` the
    whole photos (another seed and another 6 training photos, so not the crops' images again)."""
    rng = np.random.default_rng(seed)
    others = TRAINING[3::11][:6] if whole else TRAINING[:: max(1, len(TRAINING) // 6)][:6]
    photos = validation_photos() + [(t, load_photo(t)) for t in others]
    out = []
    for i in range(n):
        name, p = photos[i % len(photos)]
        if i % 6 == 5:
            k, kind = defocus_psf(rng.uniform(2, 5)), "defocus"
        else:
            k, kind = center_kernel(trajectory_kernel(rng, size=SIZES[i % 6])), f"shake {SIZES[i % 6]}"
        b = blur_photo(p, k, noise, rng)
        if whole:
            out.append((name, kind, b, p, k))
            continue
        h, w = p.shape[:2]
        y, x = (h - 256) // 2, (w - 256) // 2
        out.append((name, kind, b[y : y + 256, x : x + 256], p[y : y + 256, x : x + 256], k))
    return out


similarity = kernel_similarity  # Hu & Yang (2012): max normalised cross-correlation over shifts


def levin_gain(sharp, out, blurred) -> float:
    score = lambda t: psnr(*align_upto_shift(sharp, t)[:2], data_range=1.0)
    return score(out) - score(blurred)


def sweep(config: KernelConfig, pairs, threads: int, blind_config: BlindConfig = BlindConfig()) -> None:
    blind = BlindDeblurrer.load(replace(blind_config, threads=threads, kernel=config))
    rows = []
    for name, kind, b, s, k in pairs:
        x, back = split_image(b)
        sigma = blind.noise_sigma(x)
        t = time.perf_counter()
        est = blind.estimate(x, sigma)
        seconds = time.perf_counter() - t
        with_true, with_est = back(blind.restore(x, k, sigma)), back(blind.restore(x, est, sigma))
        rows.append((similarity(est, k), error_ratio(s, with_est, with_true), levin_gain(s, with_est, b),
                     levin_gain(s, with_true, b), seconds))
        print(f"{name:22s} {kind:9s} similarity {rows[-1][0]:.3f} error ratio {rows[-1][1]:6.2f} "
              f"gain {rows[-1][2]:+.2f} (true kernel {rows[-1][3]:+.2f}) {seconds:.1f} s", flush=True)
    r = np.array(rows)
    print(f"similarity {r[:, 0].mean():.3f} (min {r[:, 0].min():.3f}), error ratio {r[:, 1].mean():.2f} "
          f"(<= 3: {np.mean(r[:, 1] <= 3):.0%}), gain {r[:, 2].mean():+.2f} dB (true kernel {r[:, 3].mean():+.2f}), "
          f"estimate {np.median(r[:, 4]):.2f} s median, {r[:, 4].max():.2f} s max")


def fixed_point(config: KernelConfig, pairs, lam: float, size: int = 31, threads: int = 2) -> None:
    """Start the finest scale from the true kernel and run its alternations on the denoised copy
    the blind method estimates on; the moved kernel judged by similarity and by the gain of its
    restoration against the true kernel's."""
    blind = BlindDeblurrer.load(BlindConfig(threads=threads))
    rows = []
    for name, kind, b, s, k in pairs:
        x, back = split_image(b)
        sigma = blind.noise_sigma(x)
        gray, clipped = estimation_image(blind.denoised(x, sigma), config)
        start = np.zeros((size, size))
        o = (size - k.shape[0]) // 2
        start[o : o + k.shape[0], o : o + k.shape[1]] = k
        moved, _ = estimate_at_scale(gray, start, lam, config, clipped, gray.size)
        gain = levin_gain(s, back(blind.restore(x, moved, sigma)), b)
        true_gain = levin_gain(s, back(blind.restore(x, k, sigma)), b)
        rows.append((similarity(moved, k), gain, true_gain))
        print(f"{name:22s} {kind:9s} after {config.iterations} alternations: similarity {rows[-1][0]:.3f}, "
              f"gain {gain:+.2f} (true kernel {true_gain:+.2f})", flush=True)
    r = np.array(rows)
    print(f"fixed point: similarity {r[:, 0].mean():.3f} (min {r[:, 0].min():.3f}), gain {r[:, 1].mean():+.2f} dB "
          f"(true kernel {r[:, 2].mean():+.2f})")


def whole_photos(blind_config: BlindConfig, pairs, threads: int) -> None:
    """The blind method as shipped (restarts, selection, restoration) on each whole photo."""
    blind = BlindDeblurrer.load(replace(blind_config, threads=threads))
    rows = []
    for name, kind, b, s, k in pairs:
        x, back = split_image(b)
        t = time.perf_counter()
        out = back(blind.deblur_float(x))
        seconds = time.perf_counter() - t
        with_true = back(blind.restore(x, k, blind.last.noise_sigma))
        rows.append((levin_gain(s, out, b), levin_gain(s, with_true, b), seconds))
        print(f"{name:22s} {b.shape[1]}x{b.shape[0]} {kind:9s} gain {rows[-1][0]:+.2f} (true kernel {rows[-1][1]:+.2f}) "
              f"{seconds:.1f} s", flush=True)
    r = np.array(rows)
    print(f"gain {r[:, 0].mean():+.2f} dB (median {np.median(r[:, 0]):+.2f}; true kernel {r[:, 1].mean():+.2f}), "
          f"{np.median(r[:, 2]):.1f} s median per photo")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("sweep", "fixed-point", "whole"))
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lambda", dest="lam", type=float, default=6e-4, help="fixed-point: lambda at the finest scale")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a KernelConfig field")
    ap.add_argument("--blind", action="append", default=[], metavar="FIELD=VALUE",
                    help="a BlindConfig field (sweep), e.g. restarts=() for one estimate")
    args = ap.parse_args(argv)
    fields = lambda items: {f: ast.literal_eval(v) for f, v in (item.split("=", 1) for item in items)}
    config = replace(KernelConfig(), **fields(args.set))
    blind_config = replace(BlindConfig(), **fields(args.blind))
    if args.mode == "whole":
        whole_photos(replace(blind_config, kernel=config), tuning_pairs(args.pairs, args.noise, seed=11, whole=True), args.threads)
        return
    pairs = tuning_pairs(args.pairs, args.noise)
    if args.mode == "sweep":
        sweep(config, pairs, args.threads, blind_config)
    else:
        fixed_point(config, pairs[:12], args.lam, threads=args.threads)


if __name__ == "__main__":
    main()
