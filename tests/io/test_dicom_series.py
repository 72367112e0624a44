"""DICOM series folders: ordering, rescale, gaps, duplicates, several series, corrupt slices."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from core.errors import SlicewiseError, VolumeReadError
from core.io import load_volume
from core.io.dicom import read_dicom_series
from core.io.writers import write_dicom_series
from tests.io.conftest import edit_dicom, move_all, small_hu


def test_order_comes_from_positions_not_names_or_instance_numbers(series):
    folder, hu, uids = series
    files = sorted(folder.glob("*.dcm"))
    for i, f in enumerate(files):  # reverse names and instance numbers; positions stay true
        edit_dicom(f, InstanceNumber=len(files) - i)
        f.rename(folder / f"slice_{len(files) - i:02d}.dcm")
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.slice_ids == uids


def test_order_follows_the_slice_normal(tmp_path):
    """Sagittal slices: normal = row x column direction; positions along it decide the order."""
    hu = small_hu(z=4)
    folder = tmp_path / "sag"
    uids = write_dicom_series(hu, folder)
    row, col = [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]  # normal = (-1, 0, 0)
    for z, f in enumerate(sorted(folder.glob("*.dcm"))):
        edit_dicom(f, ImageOrientationPatient=row + col, ImagePositionPatient=[-5.0 * z, 0.0, 0.0])
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.slice_ids == uids and vol.spacing[0] == pytest.approx(5.0)
    np.testing.assert_allclose(vol.direction[:, 2], [-1, 0, 0])


def test_rescale_slope_and_intercept_give_hu(series):
    folder, hu, _ = series
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        stored = ds.pixel_array.astype(np.int32) + 1024  # HU -> stored with slope 0.5, intercept -2048
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -2048
        ds.save_as(f)
    expected = (hu.astype(np.int32) + 1024 + 1024) * 0.5 - 2048
    np.testing.assert_array_equal(load_volume(folder).array, expected.astype(np.float32))


def test_missing_slice_loads_with_a_warning(series):
    folder, hu, uids = series
    (folder / "IM00003.dcm").unlink()
    vol = load_volume(folder)
    assert vol.shape[0] == 5 and vol.spacing[0] == pytest.approx(2.0)
    np.testing.assert_array_equal(vol.array, np.delete(hu, 2, axis=0))
    assert any("missing slice" in w and str(folder) in w and "4 mm" in w for w in vol.warnings)


def test_uneven_spacing_is_reported(series):
    folder, _, _ = series
    edit_dicom(folder / "IM00004.dcm", ImagePositionPatient=[-3.0, -4.0, 10.0 + 3 * 2.0 + 0.6])
    vol = load_volume(folder)
    assert any("uneven slice spacing" in w for w in vol.warnings)


def test_duplicate_positions_are_reported_and_dropped(series):
    folder, hu, _ = series
    dup = folder / "copy.dcm"
    shutil.copy(folder / "IM00002.dcm", dup)
    edit_dicom(dup, SOPInstanceUID=generate_uid(), InstanceNumber=99)
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.array, hu)
    assert any("share a position" in w and "copy.dcm" in w for w in vol.warnings)


def test_folder_with_two_series_loads_largest_and_warns(tmp_path):
    folder = tmp_path / "mixed"
    big, small = small_hu(z=5), small_hu(z=3, seed=1)
    write_dicom_series(big, tmp_path / "a", series_uid="1.2.3.1", series_description="big")
    write_dicom_series(small, tmp_path / "b", series_uid="1.2.3.2", series_description="scout")
    move_all(tmp_path / "a", folder, "a_")
    move_all(tmp_path / "b", folder, "b_")
    vol = load_volume(folder)
    assert vol.volume_id == "1.2.3.1"
    np.testing.assert_array_equal(vol.array, big)
    assert any("2 series" in w and "1.2.3.2" in w and "scout" in w for w in vol.warnings)
    np.testing.assert_array_equal(read_dicom_series(folder, series_uid="1.2.3.2").array, small)
    with pytest.raises(VolumeReadError, match="no series 9.9"):
        read_dicom_series(folder, series_uid="9.9")


def test_stray_non_dicom_files_are_skipped_with_a_warning(series):
    folder, hu, _ = series
    (folder / "notes").write_text("not an image")
    (folder / "meta.json").write_text("{}")  # known non-DICOM suffix: ignored silently
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.array, hu)
    assert any("notes" in w and "skipped" in w for w in vol.warnings)


def test_one_truncated_slice_is_left_out_with_a_warning(series):
    folder, hu, _ = series
    data = (folder / "IM00006.dcm").read_bytes()
    (folder / "IM00006.dcm").write_bytes(data[: len(data) - 50])
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.array, hu[:5])
    assert any("IM00006.dcm" in w and "could not be read" in w for w in vol.warnings)


def test_every_slice_corrupt_raises_naming_the_folder(series):
    folder, _, _ = series
    for f in folder.glob("*.dcm"):
        data = f.read_bytes()
        f.write_bytes(data[: len(data) - 100])
    with pytest.raises(VolumeReadError, match="every slice of the series failed") as err:
        load_volume(folder)
    assert str(folder) in str(err.value)


def test_every_file_unreadable_raises(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    for i in range(3):
        (folder / f"IM{i}.dcm").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(VolumeReadError, match="none of its 3 files is a readable DICOM image") as err:
        load_volume(folder)
    assert str(folder) in str(err.value)


def test_empty_folder_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlicewiseError, match="empty") as err:
        load_volume(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def test_compressed_series_decodes(tmp_path):
    from pydicom.uid import RLELossless

    hu = small_hu(z=3)
    write_dicom_series(hu, tmp_path / "rle", transfer_syntax=RLELossless)
    np.testing.assert_array_equal(load_volume(tmp_path / "rle").array, hu)
