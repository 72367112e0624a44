"""Single DICOM files: compressed transfer syntaxes, multi-frame, X-ray MONOCHROME1, colour, bad files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from core.errors import SlicewiseError, UnsupportedFormatError, VolumeReadError
from core.io import load_volume


def bundled(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom's bundled test file {name} is missing"
    return path


def reference_mr() -> np.ndarray:
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    return ds.pixel_array.astype(np.float32)[np.newaxis]


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_lossless_compressed_equal_uncompressed(name):
    vol = load_volume(bundled(name))
    assert vol.modality == "MR" and vol.shape == (1, 64, 64)
    np.testing.assert_array_equal(vol.array, reference_mr())
    assert vol.slice_ids == [str(pydicom.dcmread(bundled(name), stop_before_pixels=True).SOPInstanceUID)]


@pytest.mark.parametrize("name, shape", [
    ("SC_rgb_jpeg_dcmtk.dcm", (1, 100, 100)),       # JPEG baseline, YBR colour
    ("SC_rgb_jpeg_gdcm.dcm", (1, 100, 100)),        # JPEG lossless (process 14), RGB
    ("JPEGLSNearLossless_16.dcm", (1, 50, 10)),     # JPEG-LS near-lossless, 16 bit
    ("JPEG2000.dcm", (1, 1024, 256)),               # JPEG 2000, NM, NumberOfFrames 1
    ("JPGExtended.dcm", (1, 1024, 256)),            # JPEG extended 12 bit
])
def test_compressed_files_decode(name, shape):
    vol = load_volume(bundled(name))
    assert vol.shape == shape and np.isfinite(vol.array).all()
    assert vol.array.std() > 0


def test_jpeg_lossless_rgb_matches_rle_rgb_as_grey():
    jpeg = load_volume(bundled("SC_rgb_jpeg_gdcm.dcm")).array
    rle = load_volume(bundled("SC_rgb_rle.dcm")).array
    np.testing.assert_allclose(jpeg, rle, atol=1e-3)


def test_rgb_dicom_becomes_grey_luminance():
    ds = pydicom.dcmread(bundled("SC_rgb_rle.dcm"))
    rgb = ds.pixel_array.astype(np.float32)
    expected = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    vol = load_volume(bundled("SC_rgb_rle.dcm"))
    assert vol.shape == (1, 100, 100)
    np.testing.assert_allclose(vol.array[0], expected, rtol=1e-5, atol=1e-3)


def test_multiframe_rgb_rle_gives_one_slice_per_frame():
    vol = load_volume(bundled("SC_rgb_rle_2frame.dcm"))
    assert vol.shape == (2, 100, 100)
    sop = vol.meta.get("SOPClassUID")
    assert sop and vol.slice_ids[0].endswith("#1") and vol.slice_ids[1].endswith("#2")


def _dataset(path, rows=4, cols=5, frames=1, **extra) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = extra.pop("SOPClassUID", DigitalXRayImageStorageForPresentation)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def test_xray_monochrome1_is_inverted_so_air_is_dark(tmp_path):
    pixels = np.full((4, 5), 100, dtype=np.uint16)
    pixels[:, :2] = 4000  # air: the highest stored value, white-is-low in MONOCHROME1
    ds = _dataset(tmp_path, Modality="DX", PhotometricInterpretation="MONOCHROME1",
                  ImagerPixelSpacing=[0.15, 0.2])
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "dx.dcm", enforce_file_format=True)
    vol = load_volume(tmp_path / "dx.dcm")
    assert vol.modality == "DX" and vol.shape == (1, 4, 5) and vol.is_2d
    assert (vol.array[0, :, :2] == 100).all() and (vol.array[0, :, 2:] == 4000).all()
    assert vol.spacing[1:] == pytest.approx((0.15, 0.2))
    assert "MONOCHROME1" in vol.meta["inverted"]


def test_multiframe_with_per_frame_positions_is_sorted(tmp_path):
    frames = np.stack([np.full((4, 5), v, dtype=np.uint16) for v in (30, 10, 20)])
    ds = _dataset(tmp_path, frames=3, Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2.1")
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 3.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orient], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for z in (4.0, 0.0, 2.0):
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, z]
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = frames.tobytes()
    ds.save_as(tmp_path / "mf.dcm", enforce_file_format=True)
    vol = load_volume(tmp_path / "mf.dcm")
    assert vol.shape == (3, 4, 5)
    assert [float(vol.array[z, 0, 0]) for z in range(3)] == [10.0, 20.0, 30.0]
    assert vol.spacing == pytest.approx((2.0, 0.5, 0.5))
    assert [s.rsplit("#", 1)[1] for s in vol.slice_ids] == ["2", "3", "1"]


def test_truncated_dicom_raises_naming_file():
    path = bundled("MR_truncated.dcm")
    with pytest.raises(VolumeReadError, match="MR_truncated.dcm") as err:
        load_volume(path)
    assert "pixel data" in err.value.problem


def test_non_dicom_file_named_dcm_raises(tmp_path):
    bogus = tmp_path / "scan.dcm"
    bogus.write_text("patient list, not an image\n" * 20)
    with pytest.raises(UnsupportedFormatError) as err:
        load_volume(bogus)
    message = str(err.value)
    assert str(bogus) in message and "DICOM" in message and "NIfTI" in message


def test_dicom_without_pixels_raises(tmp_path):
    with pytest.raises(SlicewiseError, match="without pixel data") as err:
        load_volume(bundled("rtplan.dcm"))
    assert "rtplan.dcm" in str(err.value)
