"""NIfTI and NRRD: canonical orientation (radiological axial display), spacing, NaN, 4D, bad files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from core.errors import SlicewiseError, UnsupportedFormatError, VolumeReadError
from core.io import load_volume


def ras_nifti(path, data_xyz, affine):
    nib.save(nib.Nifti1Image(data_xyz, affine), str(path))
    return path


def test_ras_nifti_is_flipped_so_anterior_is_up_and_right_is_left(tmp_path):
    data = np.zeros((6, 5, 4), dtype=np.int16)  # (x: toward Right, y: toward Anterior, z: Superior)
    data[5, 4, 1] = 7  # most right, most anterior voxel of slice 1
    vol = load_volume(ras_nifti(tmp_path / "ras.nii.gz", data, np.diag([0.8, 0.9, 2.5, 1.0])))
    assert vol.shape == (4, 5, 6)
    assert vol.array[1, 0, 0] == 7  # axial slice: anterior at the top, patient's right on the image left
    np.testing.assert_array_equal(vol.array, data[::-1, ::-1, :].transpose(2, 1, 0))
    assert vol.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert vol.meta["orientation_on_disk"] == "RAS"


def test_permuted_axes_are_reordered(tmp_path):
    """Stored (z, y, x)-major with an affine that says so: the loader puts axes back."""
    canonical = np.random.default_rng(0).integers(0, 100, (3, 4, 5)).astype(np.float32)  # (z, y, x) LPS
    affine = np.array([[0, 0, -1.0, 0], [0, -1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])  # i->S, j->P, k->L
    vol = load_volume(ras_nifti(tmp_path / "perm.nii", canonical, affine))
    np.testing.assert_array_equal(vol.array, canonical)
    assert vol.spacing == pytest.approx((2.0, 1.0, 1.0))


def test_nifti_some_nan_replaced_with_warning(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 5
    data[0, 0, 0] = np.nan
    vol = load_volume(ras_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)))
    assert np.isfinite(vol.array).all() and vol.array.min() == 6
    assert any("NaN" in w and "nan.nii.gz" in w and "replaced" in w for w in vol.warnings)


def test_nifti_full_of_nan_raises_naming_file(tmp_path):
    path = ras_nifti(tmp_path / "allnan.nii.gz", np.full((2, 3, 4), np.nan, dtype=np.float32), np.eye(4))
    with pytest.raises(VolumeReadError, match="NaN") as err:
        load_volume(path)
    assert str(path) in str(err.value)


def test_4d_nifti_loads_first_volume_with_warning(tmp_path):
    data = np.stack([np.full((3, 4, 5), t, dtype=np.float32) for t in (1, 2)], axis=-1)
    vol = load_volume(ras_nifti(tmp_path / "dwi.nii.gz", data, np.eye(4)))
    assert vol.shape == (5, 4, 3) and (vol.array == 1).all()
    assert any("4D" in w and "first" in w for w in vol.warnings)


def test_random_bytes_named_nii_gz_raises(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(UnsupportedFormatError) as err:
        load_volume(path)
    assert str(path) in str(err.value) and "NIfTI" in err.value.reasons


def test_truncated_nifti_raises(tmp_path):
    path = ras_nifti(tmp_path / "cut.nii", np.ones((20, 20, 20), np.float32), np.eye(4))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(SlicewiseError) as err:
        load_volume(path)
    assert "cut.nii" in str(err.value)


def test_nrrd_with_flipped_direction_is_canonical(tmp_path):
    canonical = np.random.default_rng(1).integers(0, 50, (3, 4, 5)).astype(np.int16)
    img = sitk.GetImageFromArray(np.ascontiguousarray(canonical[:, ::-1, :]))  # stored with y toward anterior
    img.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    img.SetSpacing((0.5, 0.6, 2.0))
    sitk.WriteImage(img, str(tmp_path / "flip.nrrd"))
    vol = load_volume(tmp_path / "flip.nrrd")
    np.testing.assert_array_equal(vol.array, canonical)
    assert vol.spacing == pytest.approx((2.0, 0.6, 0.5))
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-9)


def test_nhdr_detached_header(tmp_path):
    arr = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "v.nhdr"))
    vol = load_volume(tmp_path / "v.nhdr")
    np.testing.assert_array_equal(vol.array, arr)


def test_bad_nrrd_raises(tmp_path):
    path = tmp_path / "bad.nrrd"
    path.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 5 5 5\nencoding: raw\n\n")
    with pytest.raises(VolumeReadError, match="NRRD") as err:
        load_volume(path)
    assert str(path) in str(err.value)


def test_nrrd_nan_replaced_and_truncated_raises(tmp_path):
    data = np.full((2, 3, 4), 5, np.float32)
    data[0, 0, 0] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(data), str(tmp_path / "n.nrrd"))
    vol = load_volume(tmp_path / "n.nrrd")
    assert np.isfinite(vol.array).all() and any("replaced" in w for w in vol.warnings)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20, 20), np.float32)), str(tmp_path / "t.nrrd"))
    (tmp_path / "t.nrrd").write_bytes((tmp_path / "t.nrrd").read_bytes()[:3000])
    with pytest.raises(VolumeReadError, match="t.nrrd"):
        load_volume(tmp_path / "t.nrrd")


def test_modality_is_guessed_for_formats_without_one(tmp_path):
    from core.io import load_volume
    from core.io.writers import write_nifti, write_nrrd

    ct = np.full((4, 8, 8), -1000, np.int16)
    ct[:, 2:6, 2:6] = 40
    mr = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8)
    assert load_volume(write_nifti(ct, tmp_path / "chest.nii.gz")).modality == "CT"
    assert load_volume(write_nifti(mr, tmp_path / "BraTS_001_t1ce.nii.gz")).modality == "MR"
    assert load_volume(write_nrrd(mr, tmp_path / "brain_flair.nrrd")).modality == "MR"
    assert load_volume(write_nrrd(mr, tmp_path / "mask.nrrd")).modality == "OT"
