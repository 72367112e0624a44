"""Every writer round-trips through load_volume exactly (contracts.md)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from core.errors import SlicewiseError
from core.io import load_volume, slice_files
from core.io.writers import write_dicom_series, write_nifti, write_nrrd, write_png
from tests.io.conftest import small_hu


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_dicom_series_roundtrip_exact(tmp_path, syntax):
    hu = small_hu()
    uids = write_dicom_series(hu, tmp_path / "s", spacing=(2.5, 0.7, 0.8), origin=(-10, -20, 30),
                              transfer_syntax=syntax)
    vol = load_volume(tmp_path / "s")
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, hu.astype(np.float32))
    assert vol.slice_ids == uids
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert vol.origin == pytest.approx((-10, -20, 30))
    assert vol.modality == "CT" and vol.warnings == []
    assert pydicom.dcmread(tmp_path / "s" / "IM00001.dcm").file_meta.TransferSyntaxUID == syntax


def test_dicom_series_stored_unsigned_or_signed(tmp_path):
    low = np.full((2, 4, 4), -3000, dtype=np.int16)  # below -1024: needs signed storage
    write_dicom_series(low, tmp_path / "neg")
    assert pydicom.dcmread(tmp_path / "neg" / "IM00001.dcm").PixelRepresentation == 1
    np.testing.assert_array_equal(load_volume(tmp_path / "neg").array, low)
    air = np.full((2, 4, 4), -1024, dtype=np.int16)
    write_dicom_series(air, tmp_path / "air")
    assert pydicom.dcmread(tmp_path / "air" / "IM00001.dcm").PixelRepresentation == 0
    np.testing.assert_array_equal(load_volume(tmp_path / "air").array, air)


def test_dicom_series_meta_and_files(tmp_path):
    hu = small_hu(z=3)
    uids = write_dicom_series(hu, tmp_path / "s", modality="MR", series_uid="1.2.3.4", study_uid="1.2.3",
                              patient_id="P7", series_description="T1 axial", window=(300, 600))
    vol = load_volume(tmp_path / "s")
    assert vol.modality == "MR" and vol.volume_id == "1.2.3.4"
    m = vol.meta
    assert (m["SeriesInstanceUID"], m["StudyInstanceUID"], m["PatientID"]) == ("1.2.3.4", "1.2.3", "P7")
    assert m["SeriesDescription"] == "T1 axial" and m["WindowCenter"] == 300.0 and m["WindowWidth"] == 600.0
    assert m["Rows"] == 12 and m["Columns"] == 10
    files = slice_files(vol)
    assert list(files) == uids
    assert [pydicom.dcmread(files[u]).SOPInstanceUID for u in uids] == uids


def test_write_dicom_rejects_unstorable(tmp_path):
    with pytest.raises(SlicewiseError, match="does not fit"):
        write_dicom_series(np.full((1, 2, 2), 70000.0), tmp_path / "x")
    with pytest.raises(SlicewiseError, match="NaN"):
        write_dicom_series(np.full((1, 2, 2), np.nan), tmp_path / "y")


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_nifti_roundtrip(tmp_path, name):
    arr = np.random.default_rng(1).normal(size=(4, 6, 7)).astype(np.float32)
    write_nifti(arr, tmp_path / name, spacing=(3.0, 2.0, 1.0))
    vol = load_volume(tmp_path / name)
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.spacing == pytest.approx((3.0, 2.0, 1.0))
    assert vol.modality == "OT" and vol.volume_id == name
    assert vol.slice_ids == [f"{name}#{z}" for z in range(4)]


def test_nrrd_roundtrip(tmp_path):
    arr = np.random.default_rng(2).integers(0, 3, (5, 4, 3)).astype(np.uint8)
    write_nrrd(arr, tmp_path / "mask.nrrd", spacing=(1.5, 0.5, 0.25))
    vol = load_volume(tmp_path / "mask.nrrd")
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.spacing == pytest.approx((1.5, 0.5, 0.25))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_roundtrip_keeps_depth(tmp_path, dtype):
    img = np.random.default_rng(3).integers(0, np.iinfo(dtype).max, (9, 11)).astype(dtype)
    write_png(img, tmp_path / "x.png")
    vol = load_volume(tmp_path / "x.png")
    assert vol.shape == (1, 9, 11) and vol.is_2d
    np.testing.assert_array_equal(vol.array[0], img)


def test_volume_id_relative_to_data_root(data_root):
    write_nifti(np.zeros((2, 3, 3), np.float32) + 1, data_root / "sub" / "a.nii.gz")
    assert load_volume(data_root / "sub" / "a.nii.gz").volume_id == "sub/a.nii.gz"


def test_write_png_rejects_bad_input(tmp_path):
    with pytest.raises(SlicewiseError, match="2D"):
        write_png(np.zeros((2, 2, 2), np.uint8), tmp_path / "a.png")
    with pytest.raises(SlicewiseError, match="uint8 or uint16"):
        write_png(np.zeros((2, 2), np.float32), tmp_path / "a.png")
