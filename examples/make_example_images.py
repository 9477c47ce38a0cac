"""How examples/images was made: held-out Kodak photos (never trained on, see docs/DATA.md) blurred
in linear light by real Levin camera-shake kernels (never trained on either), with noise sigma 0.01.
clock_motion.png is scikit-image's real motion-blurred photo.

    python examples/make_example_images.py
"""

from pathlib import Path

import numpy as np

from converters.data import blur_photo, levin_kernels, load_photo
from edge_deblur import write_image

OUT = Path(__file__).with_name("images")
rng = np.random.default_rng(2024)
for photo, kernel in (("kodim05", 3), ("kodim23", 6)):
    blurred = blur_photo(load_photo(f"kodak24/{photo}.png"), levin_kernels()[kernel], 0.01, rng)
    write_image(OUT / f"{photo}_levin{kernel}.png", blurred)
