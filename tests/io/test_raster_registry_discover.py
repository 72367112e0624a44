"""PNG/JPEG, the reader registry's errors, and find_volumes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import UnsupportedFormatError, VolumeReadError
from core.io import find_volumes, load_volume
from core.io.writers import write_dicom_series, write_nifti, write_nrrd, write_png
from tests.io.conftest import small_hu


def test_rgb_png_loads_as_grey_luminance(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3)).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "cxr.png")
    vol = load_volume(tmp_path / "cxr.png")
    assert vol.shape == (1, 6, 7) and vol.modality == "OT"
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(vol.array[0], expected, rtol=1e-5, atol=1e-3)
    assert "grey" in vol.meta["converted"]


def test_jpeg_grey_loads(tmp_path):
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    Image.fromarray(grey).save(tmp_path / "x.jpg", quality=95)
    vol = load_volume(tmp_path / "x.jpg")
    assert vol.shape == (1, 8, 25) and vol.meta["format"] == "JPEG"
    assert np.abs(vol.array[0] - grey).max() < 12


def test_truncated_png_raises(tmp_path):
    write_png(np.arange(10000, dtype=np.uint16).reshape(100, 100), tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match="PNG") as err:
        load_volume(tmp_path / "t.png")
    assert "t.png" in str(err.value)


def test_nonexistent_path_raises(tmp_path):
    with pytest.raises(VolumeReadError, match="no such file or folder") as err:
        load_volume(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(err.value)


def test_unknown_format_lists_every_reader(tmp_path):
    path = tmp_path / "table.xyz"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UnsupportedFormatError) as err:
        load_volume(path)
    assert set(err.value.reasons) == {"DICOM", "NIfTI", "NRRD", "PNG/JPEG"}
    assert str(path) in str(err.value)


def test_empty_file_raises(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(UnsupportedFormatError, match="empty"):
        load_volume(tmp_path / "zero.png")


def test_content_wins_over_extension(tmp_path):
    write_png(np.full((3, 3), 9, np.uint8), tmp_path / "really_png.dcm")
    assert load_volume(tmp_path / "really_png.dcm").array.max() == 9


def test_find_volumes(tmp_path):
    root = tmp_path / "root"
    write_dicom_series(small_hu(z=3), root / "ct" / "case1")
    write_dicom_series(small_hu(z=1), root / "single")
    write_nifti(np.ones((2, 2, 2)), root / "nii" / "a.nii.gz")
    write_nrrd(np.ones((2, 2, 2)), root / "b.nrrd")
    write_png(np.ones((2, 2), np.uint8), root / "xray" / "train" / "x.png")
    write_nifti(np.ones((2, 2, 2)), root / "truth" / "skip.nii.gz")
    write_nifti(np.ones((2, 2, 2)), root / ".hidden" / "skip.nii.gz")
    (root / "boxes.csv").write_text("x")
    np.save(root / "arr.npy", np.zeros(2))
    found = find_volumes(root)
    assert found == sorted([
        root / "b.nrrd", root / "ct" / "case1", root / "nii" / "a.nii.gz",
        root / "single" / "IM00001.dcm", root / "xray" / "train" / "x.png",
    ])
    assert all(load_volume(p).array.size for p in found)
    assert find_volumes(tmp_path / "missing") == []


def test_find_volumes_lists_separate_xrays_individually(tmp_path):
    from tests.io.test_dicom_files import _dataset

    for i in range(2):
        ds = _dataset(tmp_path, Modality="DX")
        ds.PixelData = np.zeros((4, 5), np.uint16).tobytes()
        ds.save_as(tmp_path / f"x{i}.dcm", enforce_file_format=True)
    assert find_volumes(tmp_path) == [tmp_path / "x0.dcm", tmp_path / "x1.dcm"]
