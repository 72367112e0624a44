"""core.annotation_review: statuses and proposal IoU from the change log, filters, data-root
progress from headers of real DICOM / NIfTI / NRRD / PNG files, thumbnails, import helpers."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import annotate
from core import annotation_review as review
from core.annotations import BoxStore
from core.errors import VolumeReadError
from core.export import VolumeLocator, import_boxes
from core.io import load_volume
from core.io.writers import write_dicom_series, write_nifti, write_nrrd, write_png
from core.phantoms import chest_ct_phantom
from core.propose import box_iou

SHAPE = (10, 64, 64)


def _series(root: Path, name: str = "case0", seed: int = 1, shape=SHAPE):
    ph = chest_ct_phantom(shape, (5.0, 2.8, 2.8), seed=seed)
    folder = root / "ct" / name
    write_dicom_series(np.round(ph.hu).astype(np.int16), folder, spacing=(5.0, 2.8, 2.8))
    return load_volume(folder)


@pytest.fixture
def proposed(data_root, tmp_path):
    """A CT series with proposals on every lung slice; one confirmed, one edited, one hand-drawn."""
    volume = _series(data_root)
    store = BoxStore(tmp_path / "annotations" / "lung_bbox.csv")
    assert annotate.propose_for_volume(store, volume) >= 4
    zs = sorted(annotate.volume_boxes(store, volume))
    confirmed, edited = zs[0], zs[1]
    annotate.confirm_proposal(store, volume, confirmed, "dr_a")
    x0, y0, x1, y1 = annotate.row_box(store.get(volume.slice_ids[edited]))
    annotate.save_box(store, volume, edited, (x0, y0, x1 - 0.1, y1), "dr_b")
    hand = next(z for z in range(volume.shape[0]) if z not in zs)
    annotate.save_box(store, volume, hand, (0.2, 0.2, 0.6, 0.6), "dr_a")
    return store, volume, {"confirmed": confirmed, "edited": edited, "hand": hand, "auto": zs[2:]}


def test_statuses_and_proposal_iou_come_from_the_change_log(proposed):
    store, volume, z = proposed
    rows = {r.slice: r for r in review.review_rows(store)}
    assert rows[z["confirmed"]].status == "confirmed" and rows[z["confirmed"]].iou == pytest.approx(1.0)
    edited = rows[z["edited"]]
    assert edited.annotator == "dr_b" and edited.proposal is not None
    assert edited.iou == pytest.approx(box_iou(edited.proposal, edited.box)) and 0.5 < edited.iou < 0.99
    assert rows[z["hand"]].proposal is None and rows[z["hand"]].iou is None
    for k in z["auto"]:
        assert rows[k].status == "unconfirmed" and rows[k].iou is None and rows[k].proposal == rows[k].box
    assert [r.slice for r in review.review_rows(store, volume.volume_id)] == sorted(rows)
    assert review.review_rows(store, "no-such-volume") == []


def test_undo_of_a_confirmation_makes_the_row_a_proposal_again(proposed):
    store, volume, z = proposed
    store.undo(annotator="dr_a")  # the hand-drawn box goes
    store.undo(annotator="dr_a")  # the edit goes: the auto row is back
    row = next(r for r in review.review_rows(store) if r.slice == z["edited"])
    assert row.status == "unconfirmed" and row.iou is None


def test_filters_by_annotator_status_and_volume(proposed):
    store, volume, z = proposed
    rows = review.review_rows(store)
    assert review.annotators(rows) == ["auto", "dr_a", "dr_b"]
    assert {r.slice for r in review.filter_rows(rows, annotators=["dr_a"])} == {z["confirmed"], z["hand"]}
    assert {r.slice for r in review.filter_rows(rows, status="unconfirmed")} == set(z["auto"])
    assert {r.slice for r in review.filter_rows(rows, annotators=["dr_a", "dr_b"], status="confirmed")} == {
        z["confirmed"], z["edited"], z["hand"]}
    assert review.filter_rows(rows, annotators=["auto"], status="confirmed") == []
    assert review.filter_rows(rows, annotators=[]) == rows
    assert review.filter_rows(rows, volume="other") == []
    with pytest.raises(ValueError, match="status"):
        review.filter_rows(rows, status="maybe")


def test_iou_summary_and_table_records(proposed):
    store, _, z = proposed
    rows = review.review_rows(store)
    summary = review.iou_summary(rows)
    assert summary.n == 2 and summary.unchanged == 1 and summary.minimum < 0.99
    assert "2 confirmed proposal(s)" in summary.text()
    assert review.iou_summary([r for r in rows if r.status == "unconfirmed"]) is None
    records = review.table_records(rows, {rows[0].image: "data:image/png;base64,AA"})
    assert records[0]["Thumbnail"].startswith("data:image/png") and records[1]["Thumbnail"] is None
    assert set(records[0]) >= {"Slice", "Annotator", "Updated", "Status", "IoU proposal→final"}


def test_confirm_proposal_needs_a_proposal_and_a_person(proposed):
    store, volume, z = proposed
    assert annotate.confirm_proposal(store, volume, z["hand"], "dr_c") is None
    assert annotate.confirm_proposal(store, volume, z["auto"][0], "auto") is None
    row = annotate.confirm_proposal(store, volume, z["auto"][0], "dr_c")
    assert row["Annotator"] == "dr_c" and annotate.row_box(row) == annotate.row_box(
        store.history(volume.slice_ids[z["auto"][0]])[0]["new"])


def test_root_counts_come_from_headers_of_every_format(data_root):
    volume = _series(data_root)
    nifti = np.zeros((7, 20, 24), dtype=np.float32)
    write_nifti(nifti, data_root / "vols" / "a.nii.gz", spacing=(2.0, 1.0, 1.0))
    write_nrrd(np.zeros((5, 16, 16), dtype=np.float32), data_root / "vols" / "b.nrrd")
    write_png(np.zeros((32, 40), dtype=np.uint8), data_root / "xray" / "c.png")
    counts = review.root_slice_counts(data_root)
    expected = {volume.volume_id: SHAPE[0], "vols/a.nii.gz": 7, "vols/b.nrrd": 5}  # an X-ray: no lung box
    assert counts.slices == expected and counts.total == sum(expected.values()) and not counts.problems
    for path in ("vols/a.nii.gz", "vols/b.nrrd"):
        assert load_volume(data_root / path).shape[0] == expected[path]


def test_root_counts_follow_new_files_and_report_broken_ones(data_root):
    _series(data_root)
    first = review.root_slice_counts(data_root).total
    _series(data_root, "case1", seed=2, shape=(6, 32, 32))
    assert review.root_slice_counts(data_root).total == first + 6
    (data_root / "bad.nii.gz").write_bytes(b"not a nifti")
    (data_root / "bad.nrrd").write_bytes(b"not an nrrd")
    counts = review.root_slice_counts(data_root)
    assert counts.total == first + 6
    assert len(counts.problems) == 2
    assert "bad.nii.gz" in counts.problems[0] and "bad.nrrd" in counts.problems[1]
    with pytest.raises(VolumeReadError, match="bad.nii.gz.*NIfTI header"):
        review._nifti_count(data_root / "bad.nii.gz")
    with pytest.raises(VolumeReadError, match="bad.nrrd.*NRRD header"):
        review._nrrd_count(data_root / "bad.nrrd")


def test_ct_progress_counts_distinct_slices_inside_each_volume():
    counts = review.RootCounts({"A": 10, "B": 5})
    rows = [{"Volume": "A", "Slice": 0, "Annotator": "rad"}, {"Volume": "A", "Slice": 3, "Annotator": "rad"},
            {"Volume": "B", "Slice": 4, "Annotator": "auto"}, {"Volume": "B", "Slice": 9, "Annotator": "rad"},
            {"Volume": "elsewhere", "Slice": 0, "Annotator": "rad"}]
    progress = review.ct_progress(rows, counts)
    assert (progress.counts.confirmed, progress.counts.proposed, progress.total) == (2, 1, 15)
    assert (progress.volumes, progress.volumes_started) == (2, 1)
    assert progress.outside == 1 and progress.fraction == pytest.approx(2 / 15)
    assert "2 confirmed, 1 proposed of 15 slices in 2 volumes" in progress.text()
    assert "not under it" in progress.text()
    assert review.ct_progress([], review.RootCounts()).fraction == 0.0


def test_thumbnail_is_a_small_png_with_the_box(proposed, data_root):
    store, volume, z = proposed
    row = next(r for r in review.review_rows(store) if r.slice == z["hand"])
    url = review.thumbnail_url(VolumeLocator(data_root), row, size=48)
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
    assert image.shape == (48, 48, 3)
    red = (image[..., 0] > 200) & (image[..., 1] < 100)
    ys, xs = np.nonzero(red)
    assert xs.min() == pytest.approx(0.2 * 48, abs=1) and xs.max() == pytest.approx(0.6 * 48, abs=1)
    lost = review.ReviewRow("x", "gone.nii.gz", 0, "a", "t", (0.1, 0.1, 0.5, 0.5))
    assert review.thumbnail_url(VolumeLocator(data_root), lost) is None


def test_thumbnail_of_a_file_volume_uses_the_loaded_volume(data_root):
    write_nifti(np.linspace(0, 1, 4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16),
                data_root / "mr.nii.gz")
    row = review.ReviewRow("mr.nii.gz#2", "mr.nii.gz", 2, "a", "t", (0.0, 0.0, 0.5, 0.5))
    url = review.thumbnail_url(VolumeLocator(data_root), row, size=32)
    assert url.startswith("data:image/png;base64,")


def test_known_slices_under_feed_the_import_report(data_root, tmp_path):
    volume = _series(data_root)
    write_png(np.zeros((8, 8), dtype=np.uint8), data_root / "x.png")
    known, problems = review.known_slices_under(data_root)
    assert not problems and known[volume.slice_ids[3]] == (volume.volume_id, 3) and known["x.png#0"] == (
        "x.png", 0)
    src = tmp_path / "elsewhere.csv"
    src.write_text("Image,Xmin,Ymin,Xmax,Ymax\n"
                   f"{volume.slice_ids[3]},0.1,0.1,0.9,0.9\nnot-here,0.1,0.1,0.5,0.5\n{volume.slice_ids[4]},0.9,0.1,0.1,0.5\n")
    store = BoxStore(tmp_path / "imported.csv")
    report = import_boxes(src, store, known)
    assert report.imported == 1 and report.unknown == [(3, "not-here")] and len(report.invalid) == 1
    assert store.get(volume.slice_ids[3])["Slice"] == 3


def test_page_helpers():
    assert review.progress_fraction("volume 2/4: x -> 3 train slice(s)") == 0.5
    assert review.progress_fraction("prepared 3 train / 1 val") is None
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert review.default_export_dir("/d", when) == Path("/d/exports/20240506-070809")
    assert annotate.requested_slice({"volume": "1.2.3", "slice": "4"}) == ("1.2.3", 4)
    assert annotate.requested_slice({"volume": "1.2.3", "slice": "x"}) is None
    assert annotate.requested_slice(None) is None
    assert annotate.requested_entry(["/a/b", "/a/c"], "/a/c") == 1
    assert annotate.requested_entry(["/a/b"], "/a/z") is None
    assert annotate.requested_entry(["/a"], None) is None


def test_lung_box_progress_counts_chest_volumes_only(tmp_path):
    """X-rays, MR sequences and segmentation cases are not lung-box work."""
    from core.annotation_review import lung_box_candidate

    case = tmp_path / "segmentation" / "case_000"
    case.mkdir(parents=True)
    (case / "label.nrrd").write_bytes(b"")
    assert not lung_box_candidate(case / "image.nrrd")
    assert not lung_box_candidate(tmp_path / "xray" / "p.png")
    assert not lung_box_candidate(tmp_path / "brats" / "BraTS_001" / "BraTS_001_flair.nii.gz")
    assert not lung_box_candidate(tmp_path / "brats" / "BraTS_001" / "BraTS_001_seg.nii.gz")
    assert lung_box_candidate(tmp_path / "ct_nifti" / "CT-0" / "ct0_000.nii.gz")
    assert lung_box_candidate(tmp_path / "ct" / "chest_000")


# ---------------------------------------------------------- proposals: rule and model, honest progress


def test_proposals_come_from_the_rule_or_a_model_and_only_people_confirm(proposed):
    store, volume, z = proposed
    assert annotate.proposal_source({"Annotator": "auto"}) == "rule"
    assert annotate.proposal_source({"Annotator": "model:20261130-0501-ab12"}) == "model"
    assert annotate.proposal_source({"Annotator": "dr_a"}) is None and annotate.proposal_source(None) is None
    assert not annotate.is_proposal({"Annotator": "modeller"})  # a person's name, not `model:`
    k = z["auto"][0]
    store.upsert(volume.slice_ids[k], 0.1, 0.1, 0.7, 0.6, volume=volume.volume_id, slice=k,
                 annotator="model:run-1")
    row = next(r for r in review.review_rows(store) if r.slice == k)
    assert row.status == "unconfirmed" and row.source == "model" and row.proposal == (0.1, 0.1, 0.7, 0.6)
    assert annotate.confirm_proposal(store, volume, k, "model:run-2") is None  # a model is no person
    assert annotate.confirm_proposal(store, volume, k, " ") is None
    saved = annotate.confirm_proposal(store, volume, k, "dr_c")
    assert saved["Annotator"] == "dr_c" and annotate.row_box(saved) == (0.1, 0.1, 0.7, 0.6)
    row = next(r for r in review.review_rows(store) if r.slice == k)
    assert row.status == "confirmed" and row.source is None and row.iou == pytest.approx(1.0)


def test_propose_for_volume_never_replaces_a_persons_box(proposed):
    store, volume, z = proposed
    before = {k: dict(r) for k, r in annotate.volume_boxes(store, volume).items()}
    assert annotate.propose_for_volume(store, volume) == 0  # every lung slice has a box already
    k = z["auto"][0]
    store.upsert(volume.slice_ids[k], 0.1, 0.1, 0.2, 0.2, volume=volume.volume_id, slice=k,
                 annotator="model:run-1")
    written = annotate.propose_for_volume(store, volume, overwrite=True)
    after = annotate.volume_boxes(store, volume)
    assert written == len(z["auto"])  # only the proposals were proposed again
    for person in (z["confirmed"], z["edited"], z["hand"]):
        assert after[person]["Annotator"] == before[person]["Annotator"] != "auto"
        assert annotate.row_box(after[person]) == annotate.row_box(before[person])
    assert after[k]["Annotator"] == "auto" and annotate.row_box(after[k]) == annotate.row_box(before[k])


def test_volume_progress_counts_confirmed_and_proposed_apart(proposed):
    store, volume, z = proposed
    k = z["auto"][0]
    store.upsert(volume.slice_ids[k], 0.1, 0.1, 0.7, 0.6, volume=volume.volume_id, slice=k,
                 annotator="model:run-1")
    rows = annotate.volume_boxes(store, volume)
    progress = review.volume_progress(rows, volume.shape[0], 3)
    n_auto = len(z["auto"])
    assert (progress.counts.confirmed, progress.counts.rule, progress.counts.model) == (3, n_auto - 1, 1)
    assert progress.text() == f"Slice 4 of {volume.shape[0]} · 3 confirmed · {n_auto} proposed (unconfirmed)"
    assert progress.fraction == pytest.approx(3 / volume.shape[0])
    assert progress.boxed_fraction == pytest.approx((3 + n_auto) / volume.shape[0])
    assert review.confirmed_slices(rows) == {z["confirmed"], z["edited"], z["hand"]}
    assert review.volume_progress({}, 0, 0).fraction == 0.0
    assert review.volume_progress({2: {"Annotator": "a"}, 9: {"Annotator": "a"}}, 5, 0).counts.confirmed == 1


def test_ct_progress_over_the_root_counts_ct_volumes_only(data_root, proposed):
    store, volume, z = proposed
    # an MR DICOM series and a brain MRI NIfTI under the same root: not lung-box work
    ph = chest_ct_phantom((6, 32, 32), (5.0, 2.8, 2.8), seed=3)
    write_dicom_series(np.round(ph.hu).astype(np.int16), data_root / "mr" / "s1", spacing=(5.0, 2.8, 2.8),
                       modality="MR")
    write_nifti(np.zeros((7, 20, 24), np.float32), data_root / "brats" / "P1" / "P1_flair.nii.gz")
    other = _series(data_root, "case1", seed=2, shape=(6, 32, 32))
    store.upsert(other.slice_ids[0], 0.2, 0.2, 0.8, 0.8, volume="not-here", slice=0, annotator="dr_a")
    counts = review.root_slice_counts(data_root)
    assert counts.slices == {volume.volume_id: SHAPE[0], other.volume_id: 6}
    progress = review.ct_progress(store.rows(), counts)
    n_auto = len(z["auto"])
    assert (progress.counts.confirmed, progress.counts.proposed) == (3, n_auto)
    assert (progress.total, progress.volumes, progress.volumes_started, progress.outside) == (16, 2, 1, 1)
    assert progress.text() == (f"CT volumes: 3 confirmed, {n_auto} proposed of 16 slices in 2 volumes; "
                               "1 box(es) for volumes not under it")
    assert progress.fraction == pytest.approx(3 / 16)
    big = review.ct_progress([], review.RootCounts({f"v{i}": 3946 // 12 for i in range(12)}))
    assert big.text().startswith("CT volumes: 0 confirmed, 0 proposed of 3,936 slices in 12 volumes")
