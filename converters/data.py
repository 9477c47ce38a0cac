"""The photos, their fixed train/validation/held-out split, evaluation pairs and the training stream.

The split is written down here and in ``docs/DATA.md``: all of Kodak24 is held out for evaluation,
six photos are kept for validation (model selection), everything else trains. The measured Levin
kernels are for evaluation only; training draws synthetic kernels (``converters.blur``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from converters.blur import (
    BlurConfig, blur_linear, center_kernel, linear_to_srgb, srgb_to_linear, synthesize_pair, trajectory_kernel,
)
from edge_deblur.images import AtomicFile, write_image

REPO = Path(__file__).resolve().parents[1]
SPLIT_NAME = "kodak24-heldout-v1"

HELDOUT = tuple(f"kodak24/kodim{i:02d}.png" for i in range(1, 25))
VALIDATION = (
    "cbsd68/3096.png", "cbsd68/12084.png", "cbsd68/148026.png", "cbsd68/296059.png", "mcmaster/1.tif", "mcmaster/10.tif"
)
TRAINING = tuple(
    [f"cbsd68/{n}.png" for n in (
        "101085 101087 102061 103070 105025 106024 108005 108070 108082 109053 119082 123074 126007 "
        "130026 134035 14037 143090 145086 147091 148089 157055 159008 160068 16077 163085 167062 "
        "167083 170057 175032 175043 182053 189080 19021 196073 197017 208001 210088 21077 216081 "
        "219090 220075 223061 227092 229036 236037 24077 241004 241048 253027 253055 260058 271035 "
        "285079 291000 295087 296007 299086 300091 302008 304034 304074 306005 33039 351093"
    ).split()]
    + [f"mcmaster/{i}.tif" for i in range(2, 19) if i != 10]
    # scikit-image's bundled colour photos that load offline; clock_motion (a real blurred photo) and
    # the microscopy/astronomy images are left out.
    + [f"skimage/{n}" for n in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left")]
)


def data_dir() -> Path:
    """The shared data folder: ``$EDGE_DEBLUR_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("EDGE_DEBLUR_DATA", REPO.parent / "shared" / "data"))


def load_photo(name: str) -> np.ndarray:
    """One photo of the split by name (a file under ``photos/``, or ``skimage/NAME``) as RGB uint8."""
    folder, stem = name.split("/", 1)
    if folder == "skimage":
        import skimage.data

        return skimage.data.stereo_motorcycle()[0] if stem == "motorcycle_left" else getattr(skimage.data, stem)()
    path = data_dir() / "photos" / name
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{path}: photo missing or unreadable (set EDGE_DEBLUR_DATA to the data folder)")
    return np.ascontiguousarray(bgr[..., ::-1])


def _load(names: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    return [(name, load_photo(name)) for name in names]


def training_photos() -> list[tuple[str, np.ndarray]]:
    """The photos training may see: ``(name, RGB uint8)``."""
    return _load(TRAINING)


def validation_photos() -> list[tuple[str, np.ndarray]]:
    """Photos for model selection during training, never trained on."""
    return _load(VALIDATION)


def heldout_photos() -> list[tuple[str, np.ndarray]]:
    """Photos for evaluation only (all of Kodak24)."""
    return _load(HELDOUT)


def levin_kernels() -> list[np.ndarray]:
    """The 8 measured camera-shake kernels of Levin et al. (CVPR 2009), for evaluation only."""
    with np.load(data_dir() / "kernels" / "levin09.npz") as z:
        return [z[k].astype(np.float64) for k in sorted(z.files, key=lambda s: int(s[1:]))]


def blur_photo(sharp: np.ndarray, kernel: np.ndarray, noise_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The evaluation forward model: blur in linear light, then Gaussian noise of ``noise_sigma`` on
    the sRGB values in [0, 1] (the usual non-blind deblurring benchmark), quantised to uint8."""
    linear = srgb_to_linear(sharp.astype(np.float32) / 255.0)
    srgb = linear_to_srgb(np.clip(blur_linear(linear, kernel), 0, 1))
    srgb = srgb + noise_sigma * rng.standard_normal(srgb.shape, dtype=np.float32)
    return np.round(np.clip(srgb, 0, 1) * 255).astype(np.uint8)


def make_eval_pairs(
    out_dir: str | os.PathLike, kernels: str = "levin", noise_sigma: float = 0.01, seed: int = 0, crop: int = 256
) -> list[str]:
    """Write blurred/sharp evaluation pairs of the held-out photos, deterministically.

    Photo ``i`` is blurred (full frame, so the crop has real borders) by Levin kernel ``i mod 8``
    (centred, see ``center_kernel``) or by a seeded trajectory kernel, noised (see ``blur_photo``) and
    centre-cropped to ``crop`` pixels.
    Writes ``blur/NAME.png``, ``sharp/NAME.png`` and ``kernels/NAME.npy`` (the true kernel) under
    ``out_dir``; returns the names (``kodim01``...).
    """
    if kernels not in ("levin", "trajectory"):
        raise ValueError(f"kernels must be 'levin' or 'trajectory', got {kernels!r}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    levin = levin_kernels()
    names = []
    for i, (name, sharp) in enumerate(heldout_photos()):
        kernel = center_kernel(levin[i % len(levin)]) if kernels == "levin" else trajectory_kernel(rng, size=31)
        blurred = blur_photo(sharp, kernel, noise_sigma, rng)
        h, w = sharp.shape[:2]
        if min(h, w) < crop:
            raise ValueError(f"{name}: photo of {w}x{h} is smaller than the {crop}-pixel crop")
        y, x = (h - crop) // 2, (w - crop) // 2
        stem = Path(name).stem
        write_image(out / "blur" / f"{stem}.png", blurred[y : y + crop, x : x + crop])
        write_image(out / "sharp" / f"{stem}.png", sharp[y : y + crop, x : x + crop])
        with AtomicFile(out / "kernels" / f"{stem}.npy") as tmp:
            np.save(tmp, kernel)
        names.append(stem)
    return names


def training_batches(
    photos: list[tuple[str, np.ndarray]], config: BlurConfig, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """An endless stream of ``(blurred, sharp)`` float32 batches of shape (B, crop, crop, 3), each pair
    synthesised on the fly from a uniformly drawn photo. Resumable: it depends only on ``rng``'s state."""
    while True:
        pairs = [synthesize_pair(photos[rng.integers(len(photos))][1], rng, config)[:2] for _ in range(batch_size)]
        yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def training_dataset(photos: list[tuple[str, np.ndarray]], config: BlurConfig, batch_size: int, seed: int = 0):
    """``training_batches`` as a prefetching ``tf.data.Dataset`` (for feeding ``keras.Model.fit``)."""
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size, config.crop, config.crop, 3), tf.float32)
    return tf.data.Dataset.from_generator(
        lambda: training_batches(photos, config, batch_size, np.random.default_rng(seed)), output_signature=(spec, spec)
    ).prefetch(2)


def validation_pairs(crop: int = 192, per_photo: int = 2, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Fixed ``(blurred, sharp)`` validation batches from the validation photos, drawn from the
    training distribution with a fixed seed (no JPEG, so the score follows restoration only)."""
    rng = np.random.default_rng(seed)
    config = BlurConfig(crop=crop, p_jpeg=0.0)
    pairs = [synthesize_pair(photo, rng, config)[:2] for _, photo in validation_photos() for _ in range(per_photo)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


SHAKE_SIZES = (13, 15, 17, 19, 21, 23, 25, 27)  # the sizes of Levin's measured kernels


def shake_validation_pairs(crop: int = 256, noise_sigma: float = 0.01, seed: int = 2024) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(blurred, sharp)`` uint8 pairs for choosing between models without looking at the held-out
    Levin set: each validation photo blurred by one seeded trajectory kernel of each of Levin's
    kernel sizes (``SHAKE_SIZES``), with the held-out set's forward model (``blur_photo``, full frame)
    and centre ``crop``: 6 photos x 8 kernels."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _, sharp in validation_photos():
        h, w = sharp.shape[:2]
        y, x = (h - crop) // 2, (w - crop) // 2
        for size in SHAKE_SIZES:
            blurred = blur_photo(sharp, trajectory_kernel(rng, size=size), noise_sigma, rng)
            pairs.append((blurred[y : y + crop, x : x + crop], sharp[y : y + crop, x : x + crop]))
    return pairs

