"""Small real files for the reader tests, written with the project's writers, pydicom and nibabel."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from core.io.writers import write_dicom_series


def small_hu(z: int = 6, y: int = 12, x: int = 10, seed: int = 0) -> np.ndarray:
    """Integer HU with a distinct value range per slice, so order mistakes show."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-1000, 1000, (z, y, x))
    return (base + 100 * np.arange(z)[:, None, None]).astype(np.int16)


def move_all(src: Path, dst: Path, prefix: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        shutil.move(str(f), dst / f"{prefix}{f.name}")
    src.rmdir()


def edit_dicom(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


@pytest.fixture
def series(tmp_path) -> tuple[Path, np.ndarray, list[str]]:
    hu = small_hu()
    folder = tmp_path / "series"
    uids = write_dicom_series(
        hu, folder, spacing=(2.0, 0.5, 0.6), origin=(-3.0, -4.0, 10.0), window=(40, 400)
    )
    return folder, hu, uids
