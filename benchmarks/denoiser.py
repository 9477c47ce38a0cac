"""The plug-and-play prior (``edge_deblur.denoise``): speed and quality, side by side in one run.

1. Speed: one ``Denoiser.__call__`` on a 640x480 RGB frame (a held-out photo resized, sigma 25/255),
   float TFLite, INT8 TFLite and ONNX (onnxruntime, CPU), median of ``--repeats`` after 2 warm-ups.
2. Quality: PSNR (RGB, [0, 1], mean over photos) on the 24 held-out Kodak24 photos with additive
   white Gaussian noise at sigma 5/15/25/50 (seeded, not clipped, as published denoiser tables do):
   the noisy input, OpenCV's non-local means (``cv2.fastNlMeansDenoisingColored``, which takes
   uint8, so it gets the noisy photo clipped and rounded; its ``h`` per sigma was chosen on the
   validation photos with ``--tune-nlm``, never on Kodak24) and the denoiser, float and INT8.

    python benchmarks/denoiser.py --threads 2 --repeats 9
    python benchmarks/denoiser.py --tune-nlm         # choose NLM's h on the validation photos
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from converters.data import heldout_photos, validation_photos
from edge_deblur.denoise import Denoiser

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = (5, 15, 25, 50)
# h and hColor of cv2.fastNlMeansDenoisingColored per sigma (/255), as multiples of sigma, chosen
# by ``--tune-nlm`` on the validation photos (grid 0.3..1.4; measured 2026-12-01).
NLM_H_FACTOR = {5: 0.5, 15: 0.6, 25: 0.6, 50: 0.6}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


def noisy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return clean + np.float32(sigma) * np.random.default_rng(seed).standard_normal(clean.shape, dtype=np.float32)


def nlm(noisy_image: np.ndarray, sigma255: float, factor: float) -> np.ndarray:
    u8 = np.round(np.clip(noisy_image, 0, 1) * 255).astype(np.uint8)
    h = factor * sigma255
    out = cv2.fastNlMeansDenoisingColored(u8[..., ::-1].copy(), None, h, h, 7, 21)
    return out[..., ::-1].astype(np.float32) / 255.0


def tune_nlm(factors=(0.3, 0.4, 0.5, 0.6, 0.8)) -> dict:
    photos = [p.astype(np.float32) / 255.0 for _, p in validation_photos()]
    chosen = {}
    for s in SIGMAS:
        scores = {f: np.mean([psnr(nlm(noisy(c, s / 255, 100 + i), s, f), c) for i, c in enumerate(photos)])
                  for f in factors}
        chosen[s] = max(scores, key=scores.get)
        print(f"sigma {s}: " + ", ".join(f"h={f:.1f}s {v:.2f} dB" for f, v in scores.items()) + f" -> {chosen[s]}",
              flush=True)
    return chosen


def speed(models: dict[str, Path], threads: int, repeats: int) -> dict[str, float]:
    clean = heldout_photos()[4][1].astype(np.float32) / 255.0  # kodim05
    frame = cv2.resize(clean, (640, 480), interpolation=cv2.INTER_AREA)
    x = noisy(frame, 25 / 255, 0)
    times = {}
    for name, path in models.items():
        d = Denoiser.load(path, threads=threads)
        for _ in range(2):
            d(x, 25 / 255)
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            d(x, 25 / 255)
            runs.append(time.perf_counter() - t)
        times[name] = statistics.median(runs)
    return times


def quality(models: dict[str, Path], threads: int, count: int) -> dict[str, dict[int, float]]:
    photos = [p.astype(np.float32) / 255.0 for _, p in heldout_photos()[:count]]
    loaded = {name: Denoiser.load(path, threads=threads) for name, path in models.items()}
    rows: dict[str, dict[int, list[float]]] = {k: {s: [] for s in SIGMAS} for k in ("noisy", "nlm", *loaded)}
    nlm_seconds = []
    for i, clean in enumerate(photos):
        for s in SIGMAS:
            x = noisy(clean, s / 255, 1000 * s + i)
            rows["noisy"][s].append(psnr(np.clip(x, 0, 1), clean))
            t = time.perf_counter()
            rows["nlm"][s].append(psnr(nlm(x, s, NLM_H_FACTOR[s]), clean))
            nlm_seconds.append(time.perf_counter() - t)
            for name, d in loaded.items():
                rows[name][s].append(psnr(np.clip(d(x, s / 255), 0, 1), clean))
        print(f"photo {i + 1}/{len(photos)}", flush=True)
    print(f"NLM: median {statistics.median(nlm_seconds):.2f} s per photo")
    return {k: {s: float(np.mean(v)) for s, v in by.items()} for k, by in rows.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--float", default=ROOT / "build/denoiser/export/denoiser-float.tflite", type=Path)
    parser.add_argument("--int8", default=ROOT / "build/denoiser/export/denoiser-int8.tflite", type=Path)
    parser.add_argument("--onnx", default=ROOT / "edge_deblur/models/denoiser.onnx", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--photos", type=int, default=24, help="how many Kodak24 photos to score")
    parser.add_argument("--tune-nlm", action="store_true")
    args = parser.parse_args(argv)
    if args.tune_nlm:
        tune_nlm()
        return
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, threads {args.threads}")
    models = {"float TFLite": args.float, "INT8 TFLite": args.int8, "ONNX (float)": args.onnx}
    times = speed(models, args.threads, args.repeats)
    print("\n| model | 640x480 RGB, one call (median of %d) |\n|---|---|" % args.repeats)
    for name, t in times.items():
        print(f"| {name} | {t:.3f} s |")
    scores = quality({"denoiser float": args.float, "denoiser INT8": args.int8}, args.threads, args.photos)
    print(f"\n| Kodak24 ({args.photos} photos), PSNR dB | " + " | ".join(f"sigma {s}" for s in SIGMAS) + " |")
    print("|---|" + "---|" * len(SIGMAS))
    names = {"noisy": "noisy input", "nlm": "cv2.fastNlMeansDenoisingColored (h = %s sigma)"
             % "/".join(f"{NLM_H_FACTOR[s]:g}" for s in SIGMAS)}
    for key, by in scores.items():
        print(f"| {names.get(key, key)} | " + " | ".join(f"{by[s]:.2f}" for s in SIGMAS) + " |")


if __name__ == "__main__":
    main()
