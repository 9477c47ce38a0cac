"""Deblurring quality on held-out photos: blurred input, classical baselines given the true kernel,
and the network(s), as a Markdown table plus side-by-side pictures.

Sets (all from the held-out Kodak24 photos, never trained on; see docs/DATA.md):
  levin       the 8 real camera-shake kernels of Levin et al. (never seen in training) + noise
  trajectory  random camera-shake trajectories (the training distribution, new draws) + noise
and scikit-image's clock_motion.png, a real motion-blurred photo with no sharp pair (a picture only).

    python benchmarks/quality.py --model teacher --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from converters.blur import linear_to_srgb, srgb_to_linear
from converters.data import make_eval_pairs
from edge_deblur import Deblurrer, psnr, read_image, write_image
from edge_deblur.images import side_by_side
from edge_deblur.pipeline import classical_method, evaluate, format_table, read_pairs, MethodConfig

ROOT = Path(__file__).resolve().parents[1]
WIENER_BALANCES = (0.003, 0.01, 0.03, 0.1)
RL_ITERATIONS = (10, 20, 40, 80)


def in_linear_light(method: str, kernel: np.ndarray, config: MethodConfig):
    """A classical deconvolution applied where the blur happened: in linear light (the held-out sets
    are blurred there, see converters.data.blur_photo), so the baseline gets the true forward model."""
    deconvolve = classical_method(method, kernel, config)

    def run(blurred: np.ndarray) -> np.ndarray:
        linear = srgb_to_linear(blurred.astype(np.float32) / 255.0)
        srgb = linear_to_srgb(np.clip(deconvolve(linear), 0.0, 1.0))
        return np.rint(srgb * 255.0).astype(np.uint8)

    return run


def oracle_tuned(method: str, pairs) -> MethodConfig:
    """The classical setting with the best mean PSNR on these very pairs: an upper bound, since a
    blind method gets neither the kernel nor the tuning."""
    grid = ([MethodConfig(balance=b) for b in WIENER_BALANCES] if method == "wiener"
            else [MethodConfig(iterations=n) for n in RL_ITERATIONS])
    best = max(grid, key=lambda c: np.mean([psnr(s, in_linear_light(method, k, c)(b)) for _, b, s, k in pairs]))
    print(f"{method}: oracle setting {best.balance if method == 'wiener' else best.iterations}")
    return best


def methods_for(models: list[str], threads: int, pairs) -> dict:
    wiener, rl = oracle_tuned("wiener", pairs), oracle_tuned("rl", pairs)
    methods = {
        "blurred input": lambda blurred, kernel: blurred,
        "Wiener, true kernel": lambda blurred, kernel: in_linear_light("wiener", kernel, wiener)(blurred),
        "Richardson-Lucy, true kernel": lambda blurred, kernel: in_linear_light("rl", kernel, rl)(blurred),
    }
    for model in models:
        deblur = Deblurrer.load(model, threads=threads)
        methods[f"{model} (network, blind)"] = lambda blurred, kernel, deblur=deblur: deblur(blurred)
    return methods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "runs" / "eval"))
    ap.add_argument("--pictures", default=str(ROOT / "docs" / "images"))
    args = ap.parse_args()
    models = args.model or ["teacher"]
    work, pictures = Path(args.work), Path(args.pictures)
    for kernels in ("levin", "trajectory"):
        pair_dir = work / kernels
        make_eval_pairs(pair_dir, kernels=kernels)
        pairs = read_pairs(pair_dir)
        methods = methods_for(models, args.threads, pairs)
        rows = evaluate(pairs, methods)
        print(f"\n### Held-out Kodak24 crops, {kernels} kernels, noise sigma 0.01\n")
        print(format_table(rows))
        name, blurred, sharp, kernel = pairs[3]
        panels = [(label, fn(blurred, kernel)) for label, fn in methods.items()] + [("sharp", sharp)]
        write_image(pictures / f"quality_{kernels}.jpg", side_by_side(panels, height=256))
    clock = read_image(ROOT / "examples" / "images" / "clock_motion.png")
    panels = [("clock_motion (real blur)", clock)]
    panels += [(model, Deblurrer.load(model, threads=args.threads)(clock)) for model in models]
    write_image(pictures / "clock_motion.jpg", side_by_side(panels))
    print(f"\npictures written to {pictures}")


if __name__ == "__main__":
    main()
