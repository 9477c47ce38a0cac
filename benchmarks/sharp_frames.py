"""Why the teacher (and its students) lose 7-17 dB on frames that are already sharp (issue 14).

On validation and training photos (never Kodak24, which is held out), centre 256x256 crops with
Gaussian noise sigma 0.01 on sRGB, 8 bits (the noise-only class's forward model, no blur), this
attributes the teacher's error ``teacher(x) - sharp`` to its possible causes:

- borders (PSNR over the interior only), a global bias or colour shift (per-channel mean removed),
  a gain error (per-channel affine fit), clipping (share of outputs outside [0, 1]);
- frequency: the error low-passed (Gaussian sigma 2) against the rest, and the teacher's transfer
  gain ``Re(O S*) / |S|^2`` per radial frequency band (1 = leaves that band alone, > 1 sharpens),
  the default student's too;
- pre/post-processing: the uint8 ``Deblurrer`` call against the float one, the TFLite file against
  the Keras weights it was exported from (``--keras``; needs TensorFlow), RGB against BGR, sRGB
  against linear-light input, the whole photo (more context) against the crop;
- what the teacher assumes: its output on the same crop blurred by a Gaussian of sigma 0.5-1.5 px
  (in linear light), and its output blurred afterwards; and the input PSNR of the teacher's own
  training pairs (``BlurConfig()``, 400 draws), against the 40 dB of a noise-only frame;
- the default student on the same frames, and its agreement with the teacher.

    python benchmarks/sharp_frames.py [--photos validation|training|both] [--keras] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.blur import BlurConfig, blur_linear, linear_to_srgb, srgb_to_linear, synthesize_pair  # noqa: E402
from converters.data import training_photos, validation_photos  # noqa: E402
from edge_deblur.classical import gaussian_psf  # noqa: E402
from edge_deblur.model import MODELS_DIR, Deblurrer  # noqa: E402

CROP = 256
SIGMA = 0.01
BANDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.71)  # cycles per pixel (0.5 = Nyquist on an axis)


def db(err: np.ndarray) -> float:
    """PSNR of an error image in [0, 1] units."""
    mse = float(np.mean(np.asarray(err, np.float64) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def crops(which: str) -> list[tuple[str, np.ndarray]]:
    photos = []
    if which in ("validation", "both"):
        photos += validation_photos()
    if which in ("training", "both"):
        photos += [p for p in training_photos() if p[0].startswith(("cbsd68", "mcmaster"))][::8]
    out = []
    for name, photo in photos:
        h, w = photo.shape[:2]
        y, x = (h - CROP) // 2, (w - CROP) // 2
        out.append((name, photo, (y, x)))
    return out


def affine_residual(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``out`` minus its best per-channel affine map of ``ref`` (what a gain/offset error explains)."""
    res = np.empty_like(out)
    for c in range(out.shape[2]):
        a = np.stack([ref[..., c].ravel(), np.ones(ref[..., c].size, np.float32)], 1)
        coef, *_ = np.linalg.lstsq(a, out[..., c].ravel(), rcond=None)
        res[..., c] = out[..., c] - (a @ coef).reshape(ref.shape[:2])
    return res


def transfer(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per band of ``BANDS``: sum Re(O S*) / sum |S|^2 over the band's frequencies, mean of channels
    (Hann-windowed, means removed)."""
    h, w = ref.shape[:2]
    win = (np.hanning(h)[:, None] * np.hanning(w)[None, :]).astype(np.float32)
    r = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    gains = []
    for c in range(ref.shape[2]):
        s = np.fft.fft2((ref[..., c] - ref[..., c].mean()) * win)
        o = np.fft.fft2((out[..., c] - out[..., c].mean()) * win)
        cross, power = (o * np.conj(s)).real, np.abs(s) ** 2
        gains.append([cross[(r >= lo) & (r < hi)].sum() / power[(r >= lo) & (r < hi)].sum()
                      for lo, hi in zip(BANDS, BANDS[1:])])
    return np.mean(gains, 0)


def gaussian_blurred(sharp: np.ndarray, sigma: float) -> np.ndarray:
    lin = srgb_to_linear(sharp)
    return u8(linear_to_srgb(np.clip(blur_linear(lin, gaussian_psf(sigma)), 0, 1))).astype(np.float32) / 255


def table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", choices=("validation", "training", "both"), default="both")
    ap.add_argument("--keras", action="store_true", help="also run the Keras weights the TFLite teacher came from")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--student", default="student-rpi5")
    args = ap.parse_args()
    t0 = time.time()
    teacher = Deblurrer.load("teacher", threads=args.threads)
    student = Deblurrer.load(args.student, threads=args.threads)
    keras_teacher = None
    if args.keras:
        import json

        from converters.teacher import build_teacher

        keras_teacher = build_teacher(**json.loads((MODELS_DIR / "teacher.json").read_text())["architecture"])
        keras_teacher.load_weights(MODELS_DIR / "teacher.weights.h5")

    rng = np.random.default_rng(14)
    attrib, process, assume, gains, student_gains = [], [], [], [], []
    for name, photo, (y, x) in crops(args.photos):
        noisy_full = u8(photo / np.float32(255) + SIGMA * rng.standard_normal(photo.shape, dtype=np.float32))
        sl = np.s_[y : y + CROP, x : x + CROP]
        sharp8, noisy8 = photo[sl], noisy_full[sl]
        s, n = sharp8.astype(np.float32) / 255, noisy8.astype(np.float32) / 255
        out8 = teacher(noisy8)
        o = teacher.deblur_float(n)  # float, unclipped
        e = o - s
        b = 16
        lp = cv2.GaussianBlur(e, (0, 0), 2.0)
        attrib.append([name, db(n - s), db(out8.astype(np.float32) / 255 - s), db(e[b:-b, b:-b]),
                       db(e - e.reshape(-1, 3).mean(0)), db(affine_residual(o, s)), db(lp), db(e - lp),
                       100 * float(np.mean((o < 0) | (o > 1))), db(teacher.deblur_float(s) - s)])
        gains.append(transfer(o, s))
        bgr = teacher.deblur_float(np.ascontiguousarray(n[..., ::-1]))[..., ::-1]
        lin = linear_to_srgb(np.clip(teacher.deblur_float(srgb_to_linear(n)), 0, 1))
        full = teacher(noisy_full)[sl].astype(np.float32) / 255
        row = [name, db(o - s), db(bgr - s), db(lin - s), db(full - s)]
        if keras_teacher is not None:
            k = np.asarray(keras_teacher(n[None]))[0]
            row += [db(k - s), db(k - o)]
        st = student(noisy8).astype(np.float32) / 255
        student_gains.append(transfer(st, s))
        row += [db(st - s), db(st - out8.astype(np.float32) / 255)]
        process.append(row)
        arow = [name]
        for sigma in (0.5, 0.7, 1.0, 1.5):
            g = gaussian_blurred(s, sigma)
            arow += [f"{db(g - s):.1f} -> {db(teacher.deblur_float(g) - s):.1f}"]
        arow += [db(cv2.GaussianBlur(o, (0, 0), 0.5) - s)]
        assume.append(arow)

    print(f"noise-only frames: {len(attrib)} centre {CROP}x{CROP} crops ({args.photos} photos), "
          f"Gaussian noise sigma {SIGMA} on sRGB, 8 bits; teacher = bundled teacher.tflite via Deblurrer\n")
    print("Attribution of the teacher's error (PSNR in dB against the sharp crop):\n")
    print(table(["photo", "input", "teacher", "interior (16 px cut)", "bias removed", "affine fit removed",
                 "error low-passed (s=2)", "error high-passed", "clipped %", "teacher on the clean crop"], attrib))
    mean = lambda rows, i: float(np.mean([r[i] for r in rows]))
    print("| mean | " + " | ".join(f"{mean(attrib, i):.2f}" for i in range(1, 10)) + " |\n")
    g = np.mean(gains, 0)
    print("Transfer gain Re(O S*)/|S|^2 per radial band (cycles/px), mean of the crops:\n")
    print(table(["band"] + [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(BANDS, BANDS[1:])],
                [["teacher"] + [float(v) for v in g], [args.student] + [float(v) for v in np.mean(student_gains, 0)]]))
    print("\nPre/post-processing alternatives (PSNR against the sharp crop):\n")
    head = ["photo", "teacher (RGB, sRGB, crop)", "BGR fed", "linear light fed", "whole photo, then crop"]
    if keras_teacher is not None:
        head += ["Keras weights", "Keras vs TFLite"]
    head += [f"{args.student}", f"{args.student} vs teacher"]
    print(table(head, process))
    print("| mean | " + " | ".join(f"{mean(process, i):.2f}" for i in range(1, len(head))) + " |\n")
    print("What the teacher assumes: input -> teacher PSNR on the crop Gaussian-blurred (linear light, no noise), "
          "and its noise-only output blurred by sigma 0.5 afterwards:\n")
    print(table(["photo", "sigma 0.5", "sigma 0.7", "sigma 1.0", "sigma 1.5", "teacher output blurred s=0.5"], assume))

    photos = training_photos()
    mix_rng = np.random.default_rng(5)
    inputs = []
    for _ in range(400):
        blurred, sharp, _ = synthesize_pair(photos[mix_rng.integers(len(photos))][1], mix_rng, BlurConfig())
        inputs.append(db(blurred - sharp))
    p = np.percentile(inputs, [50, 90, 99, 100])
    print(f"\nThe teacher's training mix (BlurConfig(), 400 pairs from the training photos): input PSNR median "
          f"{p[0]:.1f}, 90th pct {p[1]:.1f}, 99th {p[2]:.1f}, max {p[3]:.1f} dB; "
          f"{100 * np.mean(np.array(inputs) >= 35):.1f}% of pairs at >= 35 dB, none without blur "
          f"(p_identity = {BlurConfig().p_identity})")
    print(f"\n{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
