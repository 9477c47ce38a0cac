"""Blind deblurring's time, split into estimation and restoration, and what linear light is worth.

Part 1, speed (medians of --repeats runs, this machine, --threads threads):
  kernel estimation on a 255x255 gray image (the Levin benchmark's size), 31-pixel kernel box:
  one estimate (estimate_kernel), and the blind method's (its restarts on --threads threads, each
  candidate restored and the best kept);
  the whole blind path (noise estimate, denoised copy, estimation, HQS restoration) on 640x480 RGB.
Part 2, linear light: the first --pairs pairs of the held-out Kodak24 x Levin set, restored with
the true kernel and blind, once in linear light (the default: the blur was made there, as a camera
makes it) and once treating sRGB values as if they were light.

    python benchmarks/blind_speed.py --threads 2
    python benchmarks/blind_speed.py --threads 2 --repeats 3 --pairs 0 --compare max_side=400
        (the 640x480 path with the shipped KernelConfig and with the variant, alternately)
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is a folder of scripts, not a package
from blind import pairs  # noqa: E402  (the same held-out pairs as benchmarks/blind.py)
from converters.blur import center_kernel
from converters.data import blur_photo, levin_kernels, load_photo
from edge_deblur.blind import BlindConfig, BlindDeblurrer, KernelConfig, RestoreConfig, estimate_kernel
from edge_deblur.metrics import psnr_upto_shift


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=8, help="linear light's pairs (0: speed only)")
    ap.add_argument("--compare", action="append", default=[], metavar="FIELD=VALUE",
                    help="a KernelConfig field: time the 640x480 path with it and without, alternately, and stop")
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    kernel = center_kernel(levin_kernels()[3])
    photo = load_photo("kodak24/kodim05.png")
    gray = cv2.cvtColor(blur_photo(photo, kernel, 0.01, rng), cv2.COLOR_RGB2GRAY)[122:377, 122:377]
    est = median_seconds(lambda: estimate_kernel(gray, size=31), args.repeats)
    blind = BlindDeblurrer.load(BlindConfig(kernel_size=31, threads=args.threads,
                                            kernel=KernelConfig(restart_workers=args.threads)))
    x = gray.astype(np.float32) / 255
    sigma = blind.noise_sigma(x)
    restarts = median_seconds(lambda: blind.estimate(x, sigma), args.repeats)
    frame = blur_photo(np.ascontiguousarray(load_photo("skimage/motorcycle_left")[:480, :640]), kernel, 0.01, rng)
    if args.compare:
        compare(blind, frame, {f: ast.literal_eval(v) for f, v in (c.split("=", 1) for c in args.compare)}, args.repeats)
        return
    splits = []
    for _ in range(args.repeats):
        blind(frame)
        splits.append((blind.last.seconds["estimate"], blind.last.seconds["restore"]))
    e, r = np.median(splits, axis=0)
    single = BlindDeblurrer(blind.denoiser, replace(blind.config, restarts=()))
    single_s = []
    for _ in range(args.repeats):
        single(frame)
        single_s.append(sum(single.last.seconds.values()))
    print("| measurement | median seconds |\n|---|---:|")
    print(f"| kernel estimation, 255x255 gray, 31 px box, one estimate | {est:.2f} |")
    print(f"| kernel estimation, 255x255 gray, 31 px box, the blind method's {1 + len(blind.config.restarts)} candidates "
          f"and their selection | {restarts:.2f} |")
    print(f"| blind path, 640x480 RGB: noise level, denoised copy, estimation (restarts, selection) | {e:.2f} |")
    print(f"| blind path, 640x480 RGB: HQS restoration (8 denoiser runs) | {r:.2f} |")
    print(f"| blind path, 640x480 RGB: total | {e + r:.2f} |")
    print(f"| blind path, 640x480 RGB, one estimate (restarts=()): total | {np.median(single_s):.2f} |")

    if args.pairs <= 0:
        return
    srgb_cfg = BlindConfig(kernel_size=31, threads=args.threads, kernel=KernelConfig(linear_light=False),
                           restore=RestoreConfig(linear_light=False))
    variants = {"linear light": blind, "sRGB values": BlindDeblurrer(blind.denoiser, srgb_cfg)}
    scores = {k: {"true kernel": [], "blind": []} for k in variants}
    data = pairs("levin")[: args.pairs]
    for _, _, b, s, k in data:
        for name, method in variants.items():
            method.fixed_kernel = k
            scores[name]["true kernel"].append(psnr_upto_shift(s, method(b)))
            method.fixed_kernel = None
            scores[name]["blind"].append(psnr_upto_shift(s, method(b)))
    base = np.mean([psnr_upto_shift(s, b) for _, _, b, s, _ in data])
    print(f"\n| {len(data)} Kodak24 x Levin pairs, Levin PSNR (input {base:.2f}) | true kernel | blind |\n|---|---:|---:|")
    for name, sc in scores.items():
        print(f"| {name} | {np.mean(sc['true kernel']):.2f} | {np.mean(sc['blind']):.2f} |")


def compare(blind: BlindDeblurrer, frame: np.ndarray, fields: dict, repeats: int) -> None:
    """The 640x480 blind path with ``blind``'s config and with ``fields`` changed in its
    KernelConfig, one after the other ``repeats`` times (so both see the same load), medians."""
    variant = BlindDeblurrer(blind.denoiser, replace(blind.config, kernel=replace(blind.config.kernel, **fields)))
    runs = {"shipped": [], ", ".join(f"{f}={v!r}" for f, v in fields.items()): []}
    for _ in range(repeats):
        for (name, times), method in zip(runs.items(), (blind, variant)):
            t = time.perf_counter()
            method(frame)
            times.append((method.last.seconds["estimate"], method.last.seconds["restore"], time.perf_counter() - t))
    print("| 640x480 blind path | estimation s | restoration s | total s |\n|---|---:|---:|---:|")
    for name, times in runs.items():
        e, r, t = np.median(times, axis=0)
        print(f"| {name} | {e:.2f} | {r:.2f} | {t:.2f} |")
    (_, _, a), (_, _, b) = (np.median(v, axis=0) for v in runs.values())
    print(f"\nvariant / shipped: {b / a:.2f}x (medians of {repeats}, alternated)")


if __name__ == "__main__":
    main()
