"""Shared fixtures: real photos from ../shared/data (see its README) and scikit-image's bundled ones."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGE_DEBLUR_DATA", REPO.parent / "shared" / "data"))


def _require_data() -> Path:
    if not (DATA / "photos").is_dir():
        pytest.fail(f"real test photos not found at {DATA} (set EDGE_DEBLUR_DATA)")
    return DATA


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require_data()


@pytest.fixture(scope="session")
def photo_paths(data_dir) -> list[Path]:
    """A handful of real photos of different sizes (Kodak 500x500, BSDS 481x321, McMaster 500x500)."""
    photos = data_dir / "photos"
    paths = sorted((photos / "kodak24").iterdir())[:2] + sorted((photos / "cbsd68").iterdir())[:2]
    paths += sorted((photos / "mcmaster").iterdir())[:1]
    return paths


@pytest.fixture(scope="session")
def photo(photo_paths) -> np.ndarray:
    """One real RGB uint8 photo (Kodak, 500x500)."""
    bgr = cv2.imread(str(photo_paths[0]), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.fixture(scope="session")
def levin_kernels(data_dir) -> list[np.ndarray]:
    with np.load(data_dir / "kernels" / "levin09.npz") as z:
        return [z[k].astype(np.float64) for k in sorted(z.files, key=lambda s: int(s[1:]))]
