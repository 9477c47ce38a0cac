"""The estimation window (KernelConfig.max_side) on whole held-out photos: the benchmark sets are
256-pixel crops, estimated whole whatever the window, so this is where the window shows. 8 whole
Kodak24 photos (768x512; every third from the second, a check, never tuned on) x Levin kernels 0-5,
a defocus disk (r 3.5) and a Gaussian (sigma 1.5), noise 0.01 on sRGB; the blind method as shipped
(restarts, selection), Levin-protocol gain against the true kernel's.

    python benchmarks/blind_window.py --max-side 256      (and --max-side 400, beside it)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is a folder of scripts, not a package
from blind_tune import levin_gain  # noqa: E402
from converters.blur import center_kernel  # noqa: E402
from converters.data import blur_photo, heldout_photos, levin_kernels  # noqa: E402
from edge_deblur.blind import BlindConfig, BlindDeblurrer, KernelConfig  # noqa: E402
from edge_deblur.blind.method import split_image  # noqa: E402
from edge_deblur.classical import defocus_psf, gaussian_psf  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-side", type=int, default=KernelConfig().max_side)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(5)
    levin = levin_kernels()
    kernels = [("levin", center_kernel(levin[i])) for i in range(6)] + [("defocus", defocus_psf(3.5)), ("gaussian", gaussian_psf(1.5))]
    blind = BlindDeblurrer.load(BlindConfig(threads=args.threads, kernel=replace(KernelConfig(), max_side=args.max_side)))
    rows = []
    for (name, photo), (kind, kernel) in zip(heldout_photos()[1::3][:8], kernels):
        blurred = blur_photo(photo, kernel, 0.01, rng)
        x, back = split_image(blurred)
        t = time.perf_counter()
        out = back(blind.deblur_float(x))
        seconds = time.perf_counter() - t
        true = back(blind.restore(x, kernel, blind.last.noise_sigma))
        rows.append((levin_gain(photo, out, blurred), levin_gain(photo, true, blurred)))
        print(f"{name:22s} {kind:8s} gain {rows[-1][0]:+.2f} (true kernel {rows[-1][1]:+.2f}) {seconds:.0f} s", flush=True)
    r = np.array(rows)
    print(f"max_side {args.max_side}: gain {r[:, 0].mean():+.2f} dB (median {np.median(r[:, 0]):+.2f}; true kernel {r[:, 1].mean():+.2f})")


if __name__ == "__main__":
    main()
