"""Writers for DICOM series, NIfTI, NRRD and PNG that `core.io.load_volume` reads back exactly.

They exist for the demo data, the tests and the predictions (masks as `.nrrd`); the layouts are the
ones `load_volume` treats as canonical, so a round trip returns the same `(z, y, x)` array.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from core.errors import SlicewiseError

RESCALE_INTERCEPT = -1024.0
_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class WriteError(SlicewiseError):
    """A writer was given values it cannot store faithfully."""


def _stored_values(hu: np.ndarray, target: str) -> tuple[np.ndarray, int]:
    """HU -> stored pixel values (HU - intercept) as uint16 when non-negative, else int16."""
    arr = np.asarray(hu)
    if arr.ndim != 3 or 0 in arr.shape:
        raise WriteError(f"{target}: hu must be a non-empty (z, y, x) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise WriteError(f"{target}: hu holds NaN or infinite values")
    stored = np.rint(arr.astype(np.float64)) - RESCALE_INTERCEPT
    lo, hi = float(stored.min()), float(stored.max())
    if lo >= 0 and hi <= 65535:
        return stored.astype(np.uint16), 0
    if lo >= -32768 and hi <= 32767:
        return stored.astype(np.int16), 1
    raise WriteError(f"{target}: HU range [{lo - 1024:g}, {hi - 1024:g}] does not fit 16-bit DICOM")


def _file_meta(sop_class: str, sop_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    return meta


def _series_dataset(
    modality: str, study_uid: str, series_uid: str, patient_id: str, description: str,
    spacing: Sequence[float], window: tuple[float, float] | None, pixel_rep: int, shape: tuple[int, ...],
) -> Dataset:
    """The header every slice of the series shares."""
    now = _dt.datetime.now()
    ds = Dataset()
    ds.SOPClassUID = _SOP_CLASS[modality]
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = series_uid + ".1" if len(series_uid) < 62 else generate_uid()
    ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = now.strftime("%H%M%S")
    ds.SeriesNumber = 1
    ds.SeriesDescription = description
    ds.Manufacturer = "Slicewise"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
    ds.SliceThickness = float(spacing[0])
    ds.Rows, ds.Columns = int(shape[1]), int(shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = pixel_rep
    ds.RescaleSlope = 1
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleType = "HU" if modality == "CT" else "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
    return ds


def write_dicom_series(
    hu: np.ndarray,
    folder: Path,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    modality: str = "CT",
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_id: str = "ANON",
    series_description: str = "",
    window: tuple[float, float] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[str]:
    """Write `hu` (z, y, x) as one CT/MR Image Storage file per slice, IM00001.dcm, ...

    `spacing` is (z, y, x) mm, `origin` the (x, y, z) mm patient position of voxel [0, 0, 0];
    slice z sits at origin z + z * spacing z. Stored values are HU + 1024 (RescaleIntercept -1024).
    A compressed `transfer_syntax` is encoded with pydicom's encoders (RLE Lossless works with the
    installed plugins; JPEG-LS needs pyjpegls). Returns the SOPInstanceUIDs in z order.
    """
    folder = Path(folder)
    if modality not in _SOP_CLASS:
        raise WriteError(f"{folder}: modality must be one of {sorted(_SOP_CLASS)}, got {modality!r}")
    stored, pixel_rep = _stored_values(hu, str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    base = _series_dataset(
        modality, study_uid or generate_uid(), series_uid, patient_id, series_description,
        spacing, window, pixel_rep, stored.shape,
    )
    uids = []
    for z in range(stored.shape[0]):
        position = [float(origin[0]), float(origin[1]), float(origin[2]) + z * float(spacing[0])]
        uids.append(_write_slice(base, stored[z], z, position, folder, UID(transfer_syntax)))
    return uids


def _write_slice(base: Dataset, pixels: np.ndarray, z: int, position: list[float], folder: Path,
                 transfer_syntax: UID) -> str:
    ds = Dataset()
    ds.update(base)
    # Derived from the series UID and the slice index: the same series writes the same UIDs.
    sop_uid = generate_uid(entropy_srcs=[str(base.SeriesInstanceUID), str(z)])
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = z + 1
    ds.ImagePositionPatient = position
    ds.SliceLocation = position[2]
    ds.file_meta = _file_meta(base.SOPClassUID, sop_uid, ExplicitVRLittleEndian)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if transfer_syntax not in _UNCOMPRESSED:
        ds.compress(transfer_syntax, np.ascontiguousarray(pixels), generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(folder / f"IM{z + 1:05d}.dcm", enforce_file_format=True)
    return sop_uid


def _check_array(array: np.ndarray, target: Path) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 3 or 0 in arr.shape:
        raise WriteError(f"{target}: array must be a non-empty (z, y, x) array, got shape {arr.shape}")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def write_nifti(array: np.ndarray, path: Path, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Path:
    """Write `array` (z, y, x) as NIfTI in the LPS+ voxel layout that `load_volume` returns unchanged.

    The data are stored (x, y, z) with affine diag(-sx, -sy, sz): x runs to the patient's left, y to
    posterior, z to superior (RAS world coordinates, as NIfTI requires).
    """
    import nibabel as nib

    path = Path(path)
    arr = _check_array(array, path)
    sz, sy, sx = (float(s) for s in spacing)
    affine = np.diag([-sx, -sy, sz, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_nrrd(array: np.ndarray, path: Path, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Path:
    """Write `array` (z, y, x) as NRRD (SimpleITK, LPS identity direction, compressed)."""
    import SimpleITK as sitk

    path = Path(path)
    arr = _check_array(array, path)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    sz, sy, sx = (float(s) for s in spacing)
    img.SetSpacing((sx, sy, sz))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def write_png(gray2d: np.ndarray, path: Path) -> Path:
    """Write a 2D uint8 or uint16 grey image as PNG (16-bit kept)."""
    from PIL import Image

    path = Path(path)
    arr = np.asarray(gray2d)
    if arr.ndim != 2 or 0 in arr.shape:
        raise WriteError(f"{path}: a PNG needs a non-empty 2D array, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise WriteError(f"{path}: a PNG needs uint8 or uint16 values, got {arr.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG", compress_level=1)
    return path


def write_like(volume, array: np.ndarray, path: Path) -> Path:
    """Write `array` (the volume's (z, y, x) shape) as `.nrrd` or `.nii.gz`/`.nii` with the source volume's
    geometry: spacing, origin and direction, so that `core.io.load_volume` reloads it aligned to `volume`
    (and 3D Slicer puts it over the source). `volume` is a `core.volume.Volume` (canonical layout: index
    axes x, y, z with patient directions `volume.direction` columns, voxel [0, 0, 0] at `volume.origin`).
    """
    path = Path(path)
    arr = _check_array(array, path)
    if tuple(arr.shape) != tuple(volume.shape):
        raise WriteError(f"{path}: array shape {arr.shape} differs from the volume's {tuple(volume.shape)}")
    sz, sy, sx = (float(s) for s in volume.spacing)
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith((".nii.gz", ".nii")):
        import nibabel as nib

        affine_lps = np.eye(4)
        affine_lps[:3, :3] = direction * np.array([sx, sy, sz])
        affine_lps[:3, 3] = volume.origin
        affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
        img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), affine_ras)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(affine_ras, code=1)
        img.set_sform(affine_ras, code=1)
        nib.save(img, str(path))
        return path
    if not name.endswith((".nrrd", ".nhdr")):
        raise WriteError(f"{path}: write_like writes .nrrd, .nii.gz or .nii")
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing((sx, sy, sz))
    img.SetOrigin(tuple(float(v) for v in volume.origin))
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


_TYPE2 = ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber", "ReferringPhysicianName",
          "StudyDate", "StudyTime")


def _with_type2(ds: Dataset) -> Dataset:
    """Type 2 attributes a SEG copies from its source, present (empty) when a source omits them."""
    for name in _TYPE2:
        if name not in ds:
            setattr(ds, name, "")
    return ds


def write_dicom_seg(volume, mask: np.ndarray, path: Path, segment_label: str = "Segmentation",
                    algorithm: str = "Slicewise") -> Path:
    """A binary DICOM Segmentation (highdicom) of `mask` over the DICOM series `volume` was loaded from.

    One frame per source slice that holds foreground (highdicom leaves empty frames out), each
    referencing its source image (SOPInstanceUID), so DICOM viewers place it over the series.
    Needs a volume read from single-frame DICOM files (`volume.meta["files"]`, z order).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    arr = _check_array(array=mask, target=path)
    files = list(volume.meta.get("files") or [])
    if volume.meta.get("format") != "DICOM" or len(files) != volume.shape[0] or len(set(files)) != len(files):
        raise WriteError(f"{path}: DICOM SEG needs a volume read from a single-frame DICOM series "
                         f"({volume.volume_id} is {volume.meta.get('format', 'not DICOM')})")
    if tuple(arr.shape) != tuple(volume.shape):
        raise WriteError(f"{path}: mask shape {arr.shape} differs from the volume's {tuple(volume.shape)}")
    sources = [_with_type2(pydicom.dcmread(f)) for f in files]
    algorithm_id = hd.AlgorithmIdentificationSequence(name=algorithm, version="1",
                                                      family=codes.cid7162.ArtificialIntelligence)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=segment_label,
        segmented_property_category=codes.cid7150.Tissue,
        segmented_property_type=codes.cid7166.ConnectiveTissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm_id)
    with warnings.catch_warnings():  # highdicom doubts one-component patient names such as "ANON"
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = _segmentation(hd, sources, arr, segment, segment_label, algorithm)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(str(path))
    return path


def _segmentation(hd, sources, arr, segment, segment_label: str, algorithm: str):
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=(arr > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=hd.UID(), series_number=100, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="Slicewise", manufacturer_model_name=algorithm, software_versions="1",
        device_serial_number="0", series_description=f"{segment_label} ({algorithm})")
