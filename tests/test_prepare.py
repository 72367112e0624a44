"""The prepare step (SPEC 4): annotated DICOM slices -> float16 .npy train/val, boxes, stats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.annotations import BoxStore
from core.errors import TrainingDataError
from core.io import load_volume
from core.io.writers import write_dicom_series
from core.models.lung_localizer.prepare import prepare_lung_dataset, split_volumes
from core.phantoms import chest_ct_phantom
from core.windowing import apply_window

REPO = Path(__file__).resolve().parents[1]
SHAPE = (8, 64, 64)


@pytest.fixture
def annotated(data_root):
    """Three phantom CT series as DICOM, their lung slices annotated with the true boxes."""
    store = BoxStore(data_root.parent / "annotations" / "lung_bbox.csv")
    volumes = []
    for k in range(3):
        ph = chest_ct_phantom(SHAPE, (5.0, 2.8, 2.8), seed=10 + k)
        folder = data_root / "ct" / f"case{k}"
        write_dicom_series(np.round(ph.hu).astype(np.int16), folder, spacing=(5.0, 2.8, 2.8))
        volume = load_volume(folder)
        volumes.append(volume)
        for z, box in enumerate(ph.boxes):
            if not np.isnan(box).any():
                store.upsert(volume.slice_ids[z], *map(float, box), volume=volume.volume_id, slice=z,
                             annotator="truth")
    return store, volumes


def _train_files(out: Path) -> list[np.ndarray]:
    return [np.load(p) for p in sorted((out / "train").glob("*.npy"))]


def test_prepare_writes_float16_slices_split_by_series(annotated, data_root, tmp_path):
    store, volumes = annotated
    messages = []
    out = prepare_lung_dataset(store.path, data_root, tmp_path / "prepared", val_fraction=0.34, size=32,
                               seed=1, progress=messages.append)
    table = pd.read_csv(out / "boxes.csv")
    assert list(table.columns) == [
        "Image", "Xmin", "Ymin", "Xmax", "Ymax", "Volume", "Slice", "split", "file"]
    assert len(table) == len(store.rows())
    train_series = set(table.loc[table.split == "train", "Volume"])
    val_series = set(table.loc[table.split == "val", "Volume"])
    assert len(val_series) == 1 and len(train_series) == 2 and not train_series & val_series
    for _, row in table.iterrows():
        image = np.load(out / row["file"])
        assert image.dtype == np.float16 and image.shape == (32, 32)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert row["file"].startswith(row["split"] + "/")
    for split in ("train", "val"):
        ids = (out / f"{split}_ids.txt").read_text().split()
        assert ids == list(table.loc[table.split == split, "Image"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["size"] == 32 and stats["n_train"] + stats["n_val"] == len(table)
    assert sorted(stats["val_volumes"]) == sorted(val_series)
    assert any("prepared" in m for m in messages) and sum("volume" in m for m in messages) == 3


def test_stats_equal_a_direct_numpy_computation(annotated, data_root, tmp_path):
    store, _ = annotated
    out = prepare_lung_dataset(store.path, data_root, tmp_path / "p", size=24, progress=lambda m: None)
    images = np.stack(_train_files(out)).astype(np.float64)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["mean"] == pytest.approx(images.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(images.std(), rel=1e-6)
    assert 0.05 < stats["mean"] < 0.95 and stats["std"] > 0.05


def test_slices_are_the_lung_window_divided_by_its_max(annotated, data_root, tmp_path):
    store, volumes = annotated
    out = prepare_lung_dataset(store.path, data_root, tmp_path / "p", size=64, progress=lambda m: None)
    table = pd.read_csv(out / "boxes.csv")
    row = table.iloc[0]
    volume = next(v for v in volumes if v.volume_id == row["Volume"])
    expected = apply_window(volume.array[volume.slice_ids.index(row["Image"])], -600, 1500)
    expected /= expected.max()
    np.testing.assert_allclose(np.load(out / row["file"]).astype(np.float32), expected, atol=1e-3)


def test_matches_the_lung_localizer_input_pipeline(annotated, data_root, tmp_path):
    lung = pytest.importorskip("core.models.lung_localizer.net")
    store, volumes = annotated
    out = prepare_lung_dataset(store.path, data_root, tmp_path / "p", size=48, progress=lambda m: None)
    row = pd.read_csv(out / "boxes.csv").iloc[0]
    volume = next(v for v in volumes if v.volume_id == row["Volume"])
    z = volume.slice_ids.index(row["Image"])
    expected = lung.prepare_input(volume, {"image_size": 48, "mean": 0.0, "std": 1.0})[z, 0].numpy()
    np.testing.assert_allclose(np.load(out / row["file"]).astype(np.float32), expected, atol=1e-3)


def test_rerun_replaces_the_previous_output(annotated, data_root, tmp_path):
    store, _ = annotated
    out = tmp_path / "p"
    prepare_lung_dataset(store.path, data_root, out, size=16, progress=lambda m: None)
    before = len(list(out.glob("*/*.npy")))
    for row in store.rows()[:4]:
        store.delete(row["Image"])
    prepare_lung_dataset(store.path, data_root, out, size=16, progress=lambda m: None)
    assert len(list(out.glob("*/*.npy"))) == before - 4 == len(pd.read_csv(out / "boxes.csv"))


def test_unreadable_volumes_are_skipped_and_listed(annotated, data_root, tmp_path):
    store, _ = annotated
    store.upsert("lost#0", 0.1, 0.1, 0.5, 0.5, volume="lost.nii.gz", slice=0, annotator="x")
    out = prepare_lung_dataset(store.path, data_root, tmp_path / "p", size=16, progress=lambda m: None)
    stats = json.loads((out / "stats.json").read_text())
    assert len(stats["skipped"]) == 1 and "lost.nii.gz" in stats["skipped"][0]
    assert "lost#0" not in set(pd.read_csv(out / "boxes.csv")["Image"])


def test_nothing_to_prepare_raises(data_root, tmp_path):
    with pytest.raises(TrainingDataError, match="no annotated slice"):
        prepare_lung_dataset(tmp_path / "none.csv", data_root, tmp_path / "p", progress=lambda m: None)
    store = BoxStore(tmp_path / "lost.csv")
    store.upsert("lost#0", 0.1, 0.1, 0.5, 0.5, volume="lost.nii.gz", slice=0, annotator="x")
    with pytest.raises(TrainingDataError, match="lost.nii.gz"):
        prepare_lung_dataset(store.path, data_root, tmp_path / "p", progress=lambda m: None)
    assert not (tmp_path / "p" / "stats.json").exists()


def test_bad_settings_raise(data_root, tmp_path):
    with pytest.raises(TrainingDataError, match="val_fraction"):
        split_volumes(["a", "b"], 1.5, 0)
    with pytest.raises(TrainingDataError, match="size"):
        prepare_lung_dataset(tmp_path / "x.csv", data_root, tmp_path / "p", size=2)


def test_split_is_seeded_and_keeps_both_sides():
    ids = [f"s{i}" for i in range(10)]
    train, val = split_volumes(ids, 0.2, seed=3)
    assert len(val) == 2 and train | val == set(ids) and not train & val
    assert split_volumes(ids, 0.2, seed=3) == (train, val)
    assert split_volumes(["only"], 0.2, 0) == ({"only"}, set())
    assert len(split_volumes(["a", "b"], 0.01, 0)[1]) == 1


def test_cli_prepare(annotated, data_root, tmp_path):
    store, _ = annotated
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "core", "prepare", "--csv", str(store.path), "--data", str(data_root),
         "--out", str(out), "--size", "64", "--split", "blocks"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "prepared" in result.stdout and (out / "stats.json").is_file()
    assert "block" in json.loads((out / "stats.json").read_text())["split_by"]
    bad = subprocess.run([sys.executable, "-m", "core", "prepare", "--csv", str(tmp_path / "none.csv"),
                          "--data", str(data_root), "--out", str(out)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "no annotated slice" in bad.stderr


def _write_patient_series(root: Path, store: BoxStore, name: str, patient: str, seed: int) -> str:
    ph = chest_ct_phantom((6, 32, 32), (5.0, 3.0, 3.0), seed=seed)
    folder = root / "ct" / name
    write_dicom_series(np.round(ph.hu).astype(np.int16), folder, spacing=(5.0, 3.0, 3.0), patient_id=patient)
    volume = load_volume(folder)
    assert volume.meta["PatientID"] == patient
    for z in range(volume.shape[0]):
        store.upsert(volume.slice_ids[z], 0.1, 0.2, 0.8, 0.7, volume=volume.volume_id, slice=z, annotator="t")
    return volume.volume_id


def test_two_series_of_one_patient_land_on_the_same_side(data_root, tmp_path):
    store = BoxStore(tmp_path / "patients.csv")
    series = {name: _write_patient_series(data_root, store, name, patient, seed)
              for seed, (name, patient) in enumerate([("p1_a", "LIDC-0001"), ("p1_b", "LIDC-0001"),
                                                      ("p2", "LIDC-0002"), ("p3", "LIDC-0003")])}
    sides_seen = set()
    for seed in range(6):
        out = prepare_lung_dataset(store.path, data_root, tmp_path / f"p{seed}", val_fraction=0.5, size=16,
                                   seed=seed, progress=lambda m: None)
        table = pd.read_csv(out / "boxes.csv")
        side = dict(zip(table.Volume, table.split, strict=False))
        assert side[series["p1_a"]] == side[series["p1_b"]]
        sides_seen.add(side[series["p1_a"]])
        stats = json.loads((out / "stats.json").read_text())
        assert not set(stats["train_groups"]) & set(stats["val_groups"])
        assert len(stats["train_groups"]) + len(stats["val_groups"]) == 3  # three patients
    assert sides_seen == {"train", "val"}  # the pair moves together, to either side


def test_placeholder_patient_ids_split_by_series():
    from core.models.lung_localizer.prepare import split_groups, usable_patient_id

    assert usable_patient_id("ANON") is None and usable_patient_id(" ") is None
    assert usable_patient_id(None) is None and usable_patient_id("DEMO-003") == "DEMO-003"
    groups = {"s1": "patient:A", "s2": "patient:A", "s3": "series:s3", "s4": "series:s4"}
    for seed in range(5):
        train, val = split_groups(groups, 0.34, seed)
        assert train | val == set(groups) and not train & val
        assert {"s1", "s2"} <= train or {"s1", "s2"} <= val


def test_one_annotated_patient_still_gets_a_validation_block(tmp_path):
    """A first user annotates one CT: its top slices validate, two slices between are left out."""
    from core.models.lung_localizer.prepare import BLOCK_GAP, slice_block_split

    assert slice_block_split(10, 0.2) == ["train"] * 6 + ["gap"] * BLOCK_GAP + ["val"] * 2
    assert slice_block_split(3, 0.2) == ["train"] * 3  # too few slices for a held-out block
    assert slice_block_split(10, 0.0) == ["train"] * 10
