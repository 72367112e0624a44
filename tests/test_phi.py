"""De-identified display by default: PHI hidden in the header table, in exports and in stats.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from streamlit.testing.v1 import AppTest

from core.annotations import BoxStore
from core.export import export_annotations
from core.io import load_volume
from core.io.phi import HIDDEN, PHI_KEYS, pseudonym, redact
from core.io.writers import write_dicom_series
from core.render import header_table

REPO = Path(__file__).resolve().parents[1]
SECRETS = {"PatientName": "Doe^Jane", "PatientID": "MRN-7734512", "PatientBirthDate": "19610203",
           "AccessionNumber": "ACC99812", "StudyDate": "20240117", "InstitutionName": "St Example Hospital"}


def _series(folder: Path, patient: str = "MRN-7734512") -> Path:
    hu = (np.arange(3 * 16 * 16).reshape(3, 16, 16) % 1500 - 1000).astype(np.int16)
    uids = write_dicom_series(hu, folder, spacing=(2.0, 0.8, 0.8), patient_id=patient)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        for key, value in {**SECRETS, "PatientID": patient}.items():
            setattr(ds, key, value)
        ds.save_as(f)
    assert uids
    return folder


def _shown(rows) -> str:
    return "\n".join(f"{k}: {v}" for k, v in rows)


def test_header_table_hides_phi_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SLICEWISE_SHOW_PHI", raising=False)
    volume = load_volume(_series(tmp_path / "s"))
    assert volume.meta["PatientID"] == "MRN-7734512"  # the reader keeps it; the display hides it
    text = _shown(header_table(volume.meta))
    for secret in ("MRN-7734512", "20240117"):
        assert secret not in text
    assert "PatientID: " + HIDDEN in text and "Modality: CT" in text


def test_header_table_shows_phi_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICEWISE_SHOW_PHI", "1")
    text = _shown(header_table({"PatientID": "MRN-7734512", "StudyDate": "20240117", "Modality": "CT"}))
    assert "MRN-7734512" in text and "20240117" in text


def test_redact_covers_the_named_fields():
    meta = {**SECRETS, "Modality": "CT", "Rows": 512}
    out = redact(meta, force=True)
    assert all(out[k] == HIDDEN for k in SECRETS) and out["Modality"] == "CT" and out["Rows"] == 512
    assert set(SECRETS) <= PHI_KEYS


def test_pseudonym_is_salted_stable_and_not_the_id(monkeypatch, tmp_path):
    monkeypatch.setenv("SLICEWISE_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("SLICEWISE_PHI_SALT", raising=False)
    a = pseudonym("MRN-7734512")
    assert a == pseudonym("MRN-7734512") and a != pseudonym("MRN-7734513") and "7734512" not in a
    assert (tmp_path / "runs" / ".phi-salt").stat().st_mode & 0o077 == 0  # the salt is private
    monkeypatch.setenv("SLICEWISE_PHI_SALT", "other")
    assert pseudonym("MRN-7734512") != a


def test_exports_carry_no_phi(data_root, tmp_path):
    folder = _series(data_root / "ct")
    volume = load_volume(folder)
    store = BoxStore(tmp_path / "lung_bbox.csv")
    store.upsert(volume.slice_ids[1], 0.1, 0.1, 0.6, 0.6, volume=volume.volume_id, slice=1, annotator="me")
    result = export_annotations(store, data_root, tmp_path / "export")
    for key in ("lung_bbox", "train", "coco"):
        text = Path(result[key]).read_text()
        for secret in SECRETS.values():
            assert secret not in text, (key, secret)


def test_prepared_stats_group_by_a_hash_not_the_patient_id(data_root, tmp_path):
    from core.models.lung_localizer.prepare import prepare_lung_dataset

    store = BoxStore(tmp_path / "lung_bbox.csv")
    for name, patient in (("a", "MRN-1111111"), ("b", "MRN-2222222")):
        volume = load_volume(_series(data_root / name, patient))
        store.upsert(volume.slice_ids[1], 0.1, 0.1, 0.6, 0.6, volume=volume.volume_id, slice=1,
                     annotator="me")
    out = prepare_lung_dataset(store.path, data_root, tmp_path / "prepared", val_fraction=0.5, size=16,
                               progress=lambda m: None)
    text = (out / "stats.json").read_text()
    assert "MRN-1111111" not in text and "MRN-2222222" not in text
    stats = json.loads(text)
    groups = stats["train_groups"] + stats["val_groups"]
    assert sorted(groups) == sorted(f"patient:{pseudonym(p)}" for p in ("MRN-1111111", "MRN-2222222"))


@pytest.mark.parametrize("show", [False, True])
def test_viewer_header_tab_hides_the_patient_id(data_root, monkeypatch, show):
    if show:
        monkeypatch.setenv("SLICEWISE_SHOW_PHI", "1")
    else:
        monkeypatch.delenv("SLICEWISE_SHOW_PHI", raising=False)
    _series(data_root / "ct")
    at = AppTest.from_file(str(REPO / "pages" / "viewer.py"), default_timeout=60).run()
    assert not at.exception
    shown = " ".join(str(t.value) for t in at.table) + " ".join(str(d.value) for d in at.dataframe)
    shown += " ".join(m.value for m in at.markdown)
    assert "Modality" in shown or "CT" in shown  # the header tab rendered
    assert ("MRN-7734512" in shown) is show
