"""core.volume_fit: a volume's modality told without loading it, and the volume list ordered for a family."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np

from core.catalog import list_volumes
from core.io.writers import write_dicom_series
from core.volume_fit import entry_modality, fits, mismatch, order_for


def _nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), path)
    return path


def _root(tmp_path: Path) -> Path:
    write_dicom_series(np.full((3, 16, 16), -1000, np.int16), tmp_path / "b_ct", spacing=(2.0, 1.0, 1.0))
    write_dicom_series(np.full((3, 16, 16), 300, np.int16), tmp_path / "c_mr", spacing=(2.0, 1.0, 1.0),
                       modality="MR")
    _nifti(tmp_path / "a" / "P1_flair.nii.gz", np.ones((16, 16, 4)))
    _nifti(tmp_path / "a" / "chest.nii.gz", np.full((16, 16, 4), -1024.0))
    _nifti(tmp_path / "a" / "label.nii.gz", np.zeros((16, 16, 4)))
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a" / "xray.png")
    return tmp_path


def test_modality_from_headers_names_and_the_first_slice(tmp_path):
    root = _root(tmp_path)
    found = {e.name: entry_modality(e.path, e.kind) for e in list_volumes(root)}
    assert found == {"b_ct": "CT", "c_mr": "MR", "a/P1_flair.nii.gz": "MR", "a/chest.nii.gz": "CT",
                     "a/label.nii.gz": "", "a/xray.png": "OT"}
    assert entry_modality(tmp_path / "missing.nii.gz", "NIfTI") == ""  # unreadable: unknown, no crash


def test_suiting_volumes_first_unknown_next_the_rest_last(tmp_path):
    lung = SimpleNamespace(name="lung", title="Lung localizer", modalities=("CT",))
    ordered = order_for(lung, list_volumes(_root(tmp_path)))
    assert [(f.entry.name, f.fits) for f in ordered] == [
        ("b_ct", True), ("a/chest.nii.gz", True), ("a/label.nii.gz", None),
        ("c_mr", False), ("a/P1_flair.nii.gz", False), ("a/xray.png", False)]
    assert ordered[0].label == "b_ct  ·  DICOM series  ·  CT"
    assert ordered[3].label == "c_mr  ·  DICOM series  ·  MR  ·  not for this model"
    assert ordered[2].label == "a/label.nii.gz  ·  NIfTI"


def test_mismatch_only_for_a_known_other_modality():
    lung = SimpleNamespace(name="lung", title="Lung localizer", modalities=("CT",))
    assert fits(lung, "CT") is True and fits(lung, "") is None and fits(lung, "MR") is False
    assert mismatch(lung, "x", "CT") == "" and mismatch(lung, "x", "") == ""
    text = mismatch(lung, "brain.nii.gz", "MR")
    assert text.startswith("brain.nii.gz is MR, but Lung localizer is made for CT")
    anything = SimpleNamespace(name="vnet", title="", modalities=())
    assert fits(anything, "MR") is True and mismatch(anything, "x", "MR") == ""


def test_a_data_root_that_is_one_series_is_named_by_its_folder(tmp_path):
    series = tmp_path / "LIDC-IDRI-0001"
    write_dicom_series(np.full((3, 16, 16), -1000, np.int16), series, spacing=(2.0, 1.0, 1.0))
    [entry] = list_volumes(series)
    lung = SimpleNamespace(name="lung", title="Lung localizer", modalities=("CT",))
    assert order_for(lung, [entry])[0].label == "LIDC-IDRI-0001 (the data root)  ·  DICOM series  ·  CT"
