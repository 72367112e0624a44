"""Export (lung_bbox.csv, train.csv metadata, COCO) and import of lung-box annotations."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from core.annotations import BoxStore
from core.errors import AnnotationFormatError, VolumeReadError
from core.export import VolumeLocator, export_annotations, import_boxes, known_slices
from core.io import load_volume
from core.io.writers import write_dicom_series, write_nifti
from core.phantoms import chest_ct_phantom


@pytest.fixture
def annotated(data_root):
    """Two DICOM series and one NIfTI volume under the data root, a few slices annotated."""
    store = BoxStore(data_root.parent / "annotations" / "lung_bbox.csv")
    volumes = []
    for k in range(2):
        ph = chest_ct_phantom((8, 64, 80), (5.0, 1.4, 1.4), seed=k)
        folder = data_root / "ct" / f"case{k}"
        write_dicom_series(np.round(ph.hu).astype(np.int16), folder, spacing=(5.0, 1.4, 1.4),
                           study_uid=f"1.2.826.0.1.3680043.8.498.{k + 1}")
        volumes.append(load_volume(folder))
    write_nifti(np.full((4, 48, 40), -1000, np.int16), data_root / "nifti" / "scan.nii.gz")
    volumes.append(load_volume(data_root / "nifti" / "scan.nii.gz"))
    for v in volumes:
        for z in (1, 2):
            store.upsert(v.slice_ids[z], 0.25, 0.125, 0.75, 0.5, volume=v.volume_id, slice=z, annotator="ana")
    return store, volumes


def test_export_writes_bbox_train_metadata_and_coco(annotated, data_root, tmp_path):
    store, volumes = annotated
    out = export_annotations(store, data_root, tmp_path / "export")
    assert out["missing"] == []
    bbox = pd.read_csv(out["lung_bbox"])
    train = pd.read_csv(out["train"])
    assert list(train.columns) == ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "path"]
    joined = bbox.merge(train, left_on="Image", right_on="SOPInstanceUID")  # the reference's join
    assert len(joined) == len(bbox) == 6
    dicom = joined[joined["Volume"] == volumes[0].volume_id]
    assert set(dicom["SeriesInstanceUID"]) == {volumes[0].volume_id}
    assert set(dicom["StudyInstanceUID"]) == {"1.2.826.0.1.3680043.8.498.1"}
    files = dict(zip(volumes[0].slice_ids, volumes[0].meta["files"], strict=True))
    for _, row in dicom.iterrows():
        assert (data_root / row["path"]).resolve() == (data_root / files[row["Image"]]).resolve()
    nifti = joined[joined["Volume"] == volumes[2].volume_id]
    assert set(nifti["path"]) == {"nifti/scan.nii.gz"}

    coco = json.loads(out["coco"].read_text())
    assert coco["categories"] == [{"id": 1, "name": "lungs", "supercategory": "anatomy"}]
    assert len(coco["images"]) == len(coco["annotations"]) == 6
    by_id = {im["id"]: im for im in coco["images"]}
    for ann in coco["annotations"]:
        image = by_id[ann["image_id"]]
        width, height = image["width"], image["height"]
        assert ann["bbox"] == pytest.approx([0.25 * width, 0.125 * height, 0.5 * width, 0.375 * height])
    sizes = {(im["volume"], im["width"], im["height"]) for im in coco["images"]}
    assert (volumes[0].volume_id, 80, 64) in sizes and (volumes[2].volume_id, 40, 48) in sizes


def test_export_reports_rows_whose_volume_is_gone(annotated, data_root, tmp_path):
    store, _ = annotated
    store.upsert("gone#0", 0.1, 0.1, 0.5, 0.5, volume="deleted/scan.nii.gz", slice=0, annotator="x")
    out = export_annotations(store, data_root, tmp_path / "export")
    assert len(out["missing"]) == 1 and "gone#0" in out["missing"][0]
    assert len(pd.read_csv(out["lung_bbox"])) == 7 and len(pd.read_csv(out["train"])) == 6


def test_locator_names_an_unknown_volume(data_root):
    with pytest.raises(VolumeReadError, match="nowhere"):
        VolumeLocator(data_root).load("nowhere")


def _write(path, rows, header=("Image", "Xmin", "Ymin", "Xmax", "Ymax")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_import_reference_csv_reports_unknown_and_invalid(annotated, tmp_path):
    store, volumes = annotated
    fresh = BoxStore(tmp_path / "imported.csv")
    ids = volumes[0].slice_ids
    src = _write(tmp_path / "theirs.csv", [
        [ids[0], 0.1, 0.2, 0.6, 0.7],
        [ids[3], 0.1, 0.2, 0.6, 0.7],
        ["1.2.3.not.here", 0.1, 0.2, 0.6, 0.7],
        [ids[4], 0.6, 0.2, 0.1, 0.7],  # reversed
        [ids[5], "x", 0.2, 0.6, 0.7],  # not a number
        [ids[3], 0.2, 0.2, 0.6, 0.7],  # duplicate: the later row wins
    ])
    report = import_boxes(src, fresh, known_slices(volumes))
    assert report.imported == 2
    assert report.unknown == [(4, "1.2.3.not.here")]
    assert [line for line, _ in report.invalid] == [5, 6, 3]
    assert all(str(src) in why for _, why in report.invalid)
    assert fresh.get(ids[3])["Xmin"] == 0.2
    assert fresh.get(ids[0])["Volume"] == volumes[0].volume_id and fresh.get(ids[0])["Slice"] == 0
    assert fresh.get(ids[0])["Annotator"] == "import"
    assert sorted(fresh.undo()) == sorted([ids[0], ids[3]])  # one undo step


def test_import_full_format_with_a_set_of_known_ids(annotated, data_root, tmp_path):
    store, volumes = annotated
    exported = export_annotations(store, data_root, tmp_path / "export")["lung_bbox"]
    fresh = BoxStore(tmp_path / "copy.csv")
    report = import_boxes(exported, fresh, {r["Image"] for r in store.rows()})
    assert report.imported == 6 and not report.unknown and not report.invalid
    assert [(r["Image"], r["Xmin"], r["Volume"], r["Slice"], r["Annotator"]) for r in fresh.rows()] == [
        (r["Image"], r["Xmin"], r["Volume"], r["Slice"], r["Annotator"]) for r in store.rows()]


def test_import_with_a_set_needs_volume_and_slice(tmp_path):
    src = _write(tmp_path / "theirs.csv", [["a", 0.1, 0.1, 0.5, 0.5]])
    report = import_boxes(src, BoxStore(tmp_path / "x.csv"), {"a"})
    assert report.imported == 0 and "Volume/Slice" in report.invalid[0][1]


def test_import_file_without_box_columns_raises(tmp_path):
    src = _write(tmp_path / "theirs.csv", [["a", 0.1]], header=("Image", "Xmin"))
    with pytest.raises(AnnotationFormatError, match="missing column"):
        import_boxes(src, BoxStore(tmp_path / "x.csv"), {"a"})


def test_import_unreadable_file_raises(tmp_path):
    src = tmp_path / "theirs.csv"
    src.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(AnnotationFormatError, match=str(src)):
        import_boxes(src, BoxStore(tmp_path / "x.csv"), {"a"})
