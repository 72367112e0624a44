"""The demo data set: real files, a manifest that lists them, truth aligned with what loads."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import core.demo
from core.demo import (
    SMALL,
    DemoDataError,
    case_seed,
    load_manifest,
    truth_for,
    write_demo_data,
)
from core.io import find_volumes, load_volume
from core.phantoms import chest_ct_phantom
from core.volume import Volume
from tests.conftest import scratch


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with scratch(tmp_path_factory, "demo") as base:
        out = base / "demo"
        messages: list[str] = []
        assert write_demo_data(out, seed=0, progress=messages.append, small=True) == out
        yield out, messages


def _cases(root, kind):
    return [c for c in load_manifest(root)["cases"] if c["kind"] == kind]


def test_manifest_lists_every_case_and_every_file_exists(demo):
    root, messages = demo
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["seed"] == 0
    kinds = {c["kind"] for c in manifest["cases"]}
    assert {"chest_ct", "ct_nifti", "xray", "brain_mri"} <= kinds  # families may add their own demo folders
    ids = [c["id"] for c in manifest["cases"]]
    assert len(ids) == len(set(ids))
    for case in manifest["cases"]:
        assert (root / case["path"]).exists(), case
        for rel in [case.get("truth"), *case.get("files", {}).values()]:
            assert rel is None or (root / rel).is_file(), case
    assert messages[-1].startswith("demo data:") and len(messages) > 5


def test_every_loadable_file_is_in_the_manifest(demo):
    root, _ = demo
    cases = load_manifest(root)["cases"]
    listed = {c["path"] for c in cases if c["kind"] != "brain_mri"}  # a brain case is a patient folder
    listed |= {f for c in cases for f in c.get("files", {}).values()}
    found = {p.relative_to(root).as_posix() for p in find_volumes(root)}
    assert found == listed


def test_chest_series_round_trip_and_truth_alignment(demo):
    root, _ = demo
    cases = _cases(root, "chest_ct")
    assert [c["label"] for c in cases] == ["normal", "lesion"]
    for i, case in enumerate(cases):
        volume = load_volume(root / case["path"])
        assert volume.modality == "CT" and volume.shape == tuple(case["shape"])
        np.testing.assert_allclose(volume.spacing, case["spacing"], rtol=1e-4)
        seed = case_seed(0, "chest_ct", i)
        lesions = case["label"] == "lesion"
        phantom = chest_ct_phantom(tuple(case["shape"]), tuple(case["spacing"]), seed=seed, lesions=lesions)
        np.testing.assert_array_equal(volume.array, np.rint(phantom.hu))  # exact, z order included
        truth = truth_for(volume)
        assert truth is not None and truth.case_id == case["id"] and truth.label == case["label"]
        lung = truth.lung_mask > 0
        assert lung.shape == volume.shape
        assert float(volume.array[lung].mean()) < -700  # lung voxels are lung
        assert float(volume.array[truth.body_mask == 0].mean()) < -500  # outside the body: air, table
        if case["label"] == "lesion":
            lesion = truth.lesion_mask > 0
            assert lesion.any() and lung[lesion].all()
            assert -750 < float(volume.array[lesion].mean()) < -250
        else:
            assert truth.lesion_mask.sum() == 0


def test_truth_boxes_cover_the_lungs_of_each_slice(demo):
    root, _ = demo
    case = _cases(root, "chest_ct")[0]
    volume = load_volume(root / case["path"])
    truth = truth_for(volume)
    slices_with_lung = set(np.flatnonzero(truth.lung_mask.any(axis=(1, 2))).tolist())
    assert set(truth.boxes) == slices_with_lung and slices_with_lung
    height, width = volume.shape[1:]
    for z, (xmin, ymin, xmax, ymax) in truth.boxes.items():
        ys, xs = np.nonzero(truth.lung_mask[z])
        assert (xmin, ymin) == pytest.approx((xs.min() / width, ys.min() / height))
        assert (xmax, ymax) == pytest.approx(((xs.max() + 1) / width, (ys.max() + 1) / height))


def test_nifti_ct_classes_and_truth(demo):
    root, _ = demo
    cases = _cases(root, "ct_nifti")
    assert {c["label"] for c in cases} == {"CT-0", "CT-23"}
    for case in cases:
        assert case["path"].startswith(f"ct_nifti/{case['label']}/") and case["path"].endswith(".nii.gz")
        volume = load_volume(root / case["path"])
        assert volume.shape == SMALL.nifti_shape
        truth = truth_for(volume)
        assert float(volume.array[truth.lung_mask > 0].mean()) < -700
        assert (truth.lesion_mask.sum() > 0) == (case["label"] == "CT-23")


def test_xray_folders_hold_grey_pngs_per_split_and_class(demo):
    root, _ = demo
    for split, count in SMALL.xray_per_class:
        for label in ("NORMAL", "PNEUMONIA"):
            files = sorted((root / "xray" / split / label).glob("*.png"))
            assert len(files) == count
            image = load_volume(files[0])
            assert image.shape == (1, SMALL.xray_size, SMALL.xray_size)
            assert image.array.max() > 100 and image.array.min() < 50  # 8-bit grey with contrast
            assert truth_for(image) is None


def test_brats_layout_name_mapping_and_seg_truth(demo):
    root, _ = demo
    cases = _cases(root, "brain_mri")
    with open(root / "brats" / "name_mapping.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"Grade", "BraTS_2020_subject_ID"} <= set(rows[0])
    assert {r["BraTS_2020_subject_ID"]: r["Grade"] for r in rows} == {c["id"]: c["label"] for c in cases}
    assert {c["label"] for c in cases} == {"LGG", "HGG"}
    for case in cases:
        folder = root / case["path"]
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(f"{case['id']}_{s}.nii.gz" for s in ("flair", "t1", "t1ce", "t2", "seg"))
        flair = load_volume(folder / f"{case['id']}_flair.nii.gz")
        truth = truth_for(flair)
        assert truth.seg.shape == flair.shape and set(np.unique(truth.seg)) <= {0, 1, 2, 4}
        tumour = truth.lesion_mask > 0
        assert tumour.any() and float(flair.array[tumour].mean()) > float(flair.array[flair.array > 0].mean())


def test_same_seed_same_data_other_seed_other_data(demo, tmp_path):
    root, _ = demo
    again = write_demo_data(tmp_path / "again", seed=0, progress=lambda _: None, small=True)
    other = write_demo_data(tmp_path / "other", seed=1, progress=lambda _: None, small=True)
    for rel in ("truth/chest_001.npz", "truth/ct23_000.npz"):
        with np.load(root / rel) as a, np.load(again / rel) as b, np.load(other / rel) as c:
            for key in ("lung_mask", "lesion_mask", "body_mask", "boxes"):
                np.testing.assert_array_equal(a[key], b[key])
            assert not np.array_equal(a["lung_mask"], c["lung_mask"])
    first, second = load_volume(root / "ct/chest_000"), load_volume(again / "ct/chest_000")
    np.testing.assert_array_equal(first.array, second.array)
    png = "xray/train/PNEUMONIA/pneumonia_000.png"
    assert (root / png).read_bytes() == (again / png).read_bytes() != (other / png).read_bytes()


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(DemoDataError, match="not empty"):
        write_demo_data(tmp_path, progress=lambda _: None, small=True)
    assert (tmp_path / "mine.txt").read_text() == "user data"
    (tmp_path / "file").write_text("")
    with pytest.raises(DemoDataError, match="not a folder"):
        write_demo_data(tmp_path / "file", progress=lambda _: None, small=True)


def test_interrupted_run_leaves_no_manifest_and_a_rerun_replaces_it(tmp_path):
    out = tmp_path / "demo"
    write_demo_data(out, progress=lambda _: None, small=True)
    stale = out / "xray" / "train" / "NORMAL" / "stale.png"
    stale.write_bytes(b"old")

    def interrupt(message: str) -> None:
        if message.startswith("X-ray"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_demo_data(out, progress=interrupt, small=True)
    assert not (out / "manifest.json").exists()
    write_demo_data(out, progress=lambda _: None, small=True)
    assert (out / "manifest.json").is_file() and not stale.exists()


def test_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(DemoDataError, match="no demo manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DemoDataError, match="manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"cases": [{"id": "x"}]}))
    with pytest.raises(DemoDataError, match="case 0"):
        load_manifest(tmp_path)


def test_truth_for_volumes_outside_a_demo(demo, tmp_path):
    assert truth_for(Volume(np.zeros((2, 4, 4)))) is None  # no source
    assert truth_for(Volume(np.zeros((2, 4, 4)), source=str(tmp_path / "x.nii.gz"))) is None
    root, _ = demo
    one_slice = load_volume(root / "ct" / "chest_000" / "IM00003.dcm")  # shape does not fit the truth
    assert truth_for(one_slice) is None


def test_command_line_writes_the_demo_and_prints_progress(tmp_path, monkeypatch, capsys):
    from core.__main__ import main

    monkeypatch.setattr(core.demo, "FULL", SMALL)  # the CLI writes the full size; keep the test quick
    assert main(["demo-data", "--out", str(tmp_path / "cli"), "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "chest CT 1/" in printed and "demo data:" in printed
    assert load_manifest(tmp_path / "cli")["seed"] == 2
