"""core.catalog: what the Home page shows for a data root, including missing and broken parts."""

from __future__ import annotations

import json

import numpy as np

from core import catalog
from core.io.writers import write_dicom_series, write_nifti, write_png


def _small_root(root):
    hu = np.full((3, 16, 16), -1000, np.int16)
    write_dicom_series(hu, root / "ct" / "series_a", spacing=(2.0, 1.0, 1.0))
    write_nifti(np.zeros((4, 8, 8), np.float32), root / "brain.nii.gz")
    write_png(np.zeros((8, 8), np.uint8), root / "xray" / "a.png")
    (root / "notes.csv").write_text("a,b\n")


def test_summarise_lists_volumes_with_kinds(data_root):
    _small_root(data_root)
    result = catalog.summarise(data_root)
    assert result.exists and not result.problems
    kinds = {v.name: v.kind for v in result.volumes}
    assert kinds == {"brain.nii.gz": "NIfTI", "ct/series_a": "DICOM series", "xray/a.png": "image"}
    assert result.counts() == {"volumes": 3, "annotated boxes": 0, "training runs": 0, "checkpoints": 0}
    assert not result.has_demo and not result.has_lidc


def test_missing_root_is_a_problem_not_an_exception(tmp_path):
    result = catalog.summarise(tmp_path / "nowhere", runs_root=tmp_path / "runs",
                               annotations=tmp_path / "a.csv")
    assert not result.exists
    assert result.volumes == [] and result.runs == []
    assert "does not exist" in result.problems[0] and "nowhere" in result.problems[0]


def test_annotation_rows_runs_and_checkpoints(data_root, tmp_path):
    csv_path = tmp_path / "annotations" / "lung_bbox.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("Image,Xmin,Ymin,Xmax,Ymax,Volume,Slice,Annotator,Updated\n"
                        "a,0.1,0.1,0.9,0.9,v,0,me,2026-01-01T00:00:00Z\n"
                        "b,0.1,0.1,0.9,0.9,v,1,me,2026-01-01T00:00:00Z\n")
    runs = tmp_path / "runs"
    done = runs / "run_1"
    (done / "checkpoints").mkdir(parents=True)
    (done / "config.json").write_text(json.dumps({"family": "lung_localizer"}))
    (done / "checkpoints" / "best.ckpt").write_bytes(b"x")
    (done / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (done / "result.json").write_text(json.dumps({"best_metric": 0.8}))
    running = runs / "run_2"
    running.mkdir()
    (running / "progress.json").write_text(json.dumps({"epoch": 2, "max_epochs": 10}))
    (running / "config.json").write_text("{broken")
    (runs / "not_a_run").mkdir()
    result = catalog.summarise(data_root)
    assert result.annotation_rows == 2
    assert [(r.name, r.status, r.family, r.checkpoints, r.best_metric) for r in result.runs] == [
        ("run_1", "DONE", "lung_localizer", 2, 0.8),
        ("run_2", "epoch 2/10", "", 0, None),
    ]
    assert [p.name for p in result.checkpoints] == ["best.ckpt", "last.ckpt"]


def test_status_file_wins_and_demo_is_detected(data_root, tmp_path):
    run = tmp_path / "runs" / "job"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "status.json").write_text(json.dumps({"state": "RUNNING"}))
    (data_root / "demo").mkdir()
    (data_root / "demo" / "manifest.json").write_text("{}")
    result = catalog.summarise(data_root)
    assert result.runs[0].status == "RUNNING"
    assert result.has_demo


def test_unreadable_annotation_file_is_reported(data_root, tmp_path):
    csv_path = tmp_path / "annotations" / "lung_bbox.csv"
    csv_path.parent.mkdir()
    csv_path.write_bytes(b"\xff\xfe\x00bad")
    result = catalog.summarise(data_root)
    assert any("lung_bbox.csv" in p for p in result.problems)


def _linked_in(data_root, tmp_path):
    """A real DICOM series and a NIfTI outside the data root, linked in; plus links that stay inside
    or sit in a hidden folder (neither is reported)."""
    outside = tmp_path / "outside"
    hu = np.full((3, 16, 16), -1000, np.int16)
    write_dicom_series(hu, outside / "lidc_series", spacing=(2.0, 1.0, 1.0))
    write_nifti(np.zeros((4, 8, 8), np.float32), outside / "brain.nii.gz")
    write_dicom_series(hu, data_root / "ct" / "series_a", spacing=(2.0, 1.0, 1.0))
    (data_root / "ct" / "lidc_link").symlink_to(outside / "lidc_series", target_is_directory=True)
    (data_root / "brain_link.nii.gz").symlink_to(outside / "brain.nii.gz")
    (data_root / "alias").symlink_to(data_root / "ct", target_is_directory=True)  # inside: not reported
    (data_root / ".cache").mkdir()
    (data_root / ".cache" / "hidden_link").symlink_to(outside / "lidc_series", target_is_directory=True)
    return outside


def test_links_leading_outside_the_root_are_skipped_and_said(data_root, tmp_path):
    from core.io import load_volume

    outside = _linked_in(data_root, tmp_path)
    assert load_volume(data_root / "ct" / "lidc_link").shape == (3, 16, 16)  # a real, loadable series
    result = catalog.summarise(data_root)
    assert [v.name for v in result.volumes] == ["ct/series_a"]  # confinement: nothing outside is listed
    assert result.outside_links == ["brain_link.nii.gz", "ct/lidc_link"]
    assert not result.problems  # said once, in the note, not as one problem per link
    assert result.outside_links_note() == (
        "2 links leading outside the data root were skipped (brain_link.nii.gz, ct/lidc_link): copy the "
        "files in, or make the linked folder the data root.")
    # the linked folder made the data root: its series is listed, nothing is skipped
    moved = catalog.summarise(outside)
    assert {v.name for v in moved.volumes} == {"lidc_series", "brain.nii.gz"} and not moved.outside_links
    # without `outside` list_volumes keeps reporting a linked file as a problem (its old contract)
    problems: list[str] = []
    assert [v.name for v in catalog.list_volumes(data_root, problems)] == ["ct/series_a"]
    link = data_root / "brain_link.nii.gz"
    assert problems == [f"{link}: skipped, it links outside the data root {data_root}"]


def test_outside_links_note_counts_and_names_the_first_few():
    assert catalog.outside_links_note([]) == ""
    assert catalog.outside_links_note(["ct/a"]).startswith(
        "1 link leading outside the data root was skipped (ct/a): copy")
    assert "4 links leading outside the data root were skipped (a, b, c, …): " in \
        catalog.outside_links_note(["a", "b", "c", "d"])


def test_a_series_folder_whose_slices_link_outside_is_not_listed(data_root, tmp_path):
    """The folder is inside the data root, its slice files are links to files outside: listed, the
    Viewer would read them from outside. Skipped and said like a folder link."""
    outside = tmp_path / "outside"
    hu = np.full((3, 16, 16), -1000, np.int16)
    write_dicom_series(hu, outside / "private", spacing=(2.0, 1.0, 1.0))
    write_dicom_series(hu, data_root / "ct" / "own", spacing=(2.0, 1.0, 1.0))
    mixed = data_root / "ct" / "mixed"
    mixed.mkdir()
    for f in sorted((outside / "private").iterdir()):
        (mixed / f.name).symlink_to(f)
    inner = data_root / "ct" / "inner_links"  # links that stay inside the root are fine
    inner.mkdir()
    for f in sorted((data_root / "ct" / "own").iterdir()):
        (inner / f.name).symlink_to(f)
    result = catalog.summarise(data_root)
    assert [v.name for v in result.volumes] == ["ct/inner_links", "ct/own"]
    assert result.outside_links == ["ct/mixed"]
    assert "ct/mixed" in result.outside_links_note()
