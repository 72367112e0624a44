"""Brain MRI grade classifier (SPEC 5E): data checks, real training on grade phantoms, prediction,
and the four-sequence view of core.multi_sequence."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import TrainingDataError, VolumeReadError
from core.io import load_volume
from core.io.writers import write_nifti
from core.models import get_spec
from core.models.brain_mri.demo import MAPPING_COLUMNS, write_brats
from core.multi_sequence import (
    SEQUENCES,
    largest_tumour_slice,
    load_sequences,
    probability_strip,
    probability_strip_png,
    sequence_views,
)
from tests.conftest import scratch

SHAPE = (24, 48, 48)
SPACING = (4.0, 3.0, 3.0)
TRAIN_PATIENTS = 16
TEST_PATIENTS = 8


def _grades(folder: Path) -> dict[str, str]:
    with open(folder / "name_mapping.csv", newline="") as handle:
        return {row["BraTS_2020_subject_ID"]: row["Grade"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def brats(tmp_path_factory) -> dict[str, Path]:
    with scratch(tmp_path_factory, "brats") as root:
        write_brats(root / "train", TRAIN_PATIENTS, SHAPE, seed=0, spacing=SPACING)
        write_brats(root / "test", TEST_PATIENTS, SHAPE, seed=7, spacing=SPACING)  # never seen in training
        yield {"train": root / "train", "test": root / "test", "root": root}


# ------------------------------------------------------------------ the spec


def test_spec_declares_a_patient_folder_family_and_recognises_brats_folders(brats):
    spec = get_spec("brain_mri")
    assert spec.input_kind == "patient_folder" and spec.review == "volume_classes"
    assert spec.outputs == ("label", "probabilities", "slice_probabilities", "heatmap")
    assert spec.modalities == ("MR",) and spec.monitor_mode == "max" and "quick" in spec.presets
    names = {p.name for p in brats["train"].iterdir()}
    assert spec.dataset_rule(brats["train"], names)
    assert not spec.dataset_rule(brats["train"] / "BraTS20_Training_001", {"x_flair.nii.gz"})
    for key in ("image_size", "max_epochs", "batch_size", "lr", "num_workers", "seed", "val_fraction"):
        assert key in spec.defaults


def test_demo_hook_writes_the_brats_layout_with_both_grades(tmp_path):
    cases = get_spec("brain_mri").demo_data(tmp_path, 0, True, lambda _: None)
    assert {c["label"] for c in cases} == {"LGG", "HGG"}
    assert _grades(tmp_path / "brats") == {c["id"]: c["label"] for c in cases}
    for case in cases:
        for rel in case["files"].values():
            assert (tmp_path / rel).is_file()
    seg = load_volume(tmp_path / cases[0]["files"]["seg"]).array
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg > 0).any()


# ------------------------------------------------------------------ bad input


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _subset(src: Path, dst: Path, n: int) -> Path:
    """The first `n` patients of a BraTS folder with its name_mapping.csv (small and quick to prepare)."""
    dst.mkdir()
    shutil.copy(src / "name_mapping.csv", dst)
    for folder in sorted(p for p in src.iterdir() if p.is_dir())[:n]:
        shutil.copytree(folder, dst / folder.name)
    return dst


def test_bad_patients_are_skipped_with_the_file_named_and_the_rest_used(brats, tmp_path):
    from core.models.brain_mri.data import index_brats, prepare_slices

    data = _subset(brats["train"], tmp_path / "data", 5)
    (data / "BraTS20_Training_001" / "BraTS20_Training_001_t1ce.nii.gz").unlink()  # a missing sequence
    odd = data / "BraTS20_Training_002" / "BraTS20_Training_002_t2.nii.gz"
    write_nifti(np.zeros((SHAPE[0], 40, 40), np.int16), odd, spacing=SPACING)  # another shape
    _copy(data / "BraTS20_Training_003", data / "BraTS20_Training_099")  # not in name_mapping.csv
    for path in (data / "BraTS20_Training_099").iterdir():
        path.rename(path.with_name(path.name.replace("_003_", "_099_")))
    index = index_brats(data)
    prepared, skipped = prepare_slices(index, tmp_path / "slices", 32, 1)
    text = "\n".join(skipped)
    assert "BraTS20_Training_001" in text and "t1ce" in text
    assert "BraTS20_Training_002_t2.nii.gz" in text and "shape" in text
    assert "name_mapping.csv" in text and "BraTS20_Training_099" in text
    used = {p.patient.patient_id for p in prepared}
    assert len(used) == 5 - 2 and not used & {"BraTS20_Training_001", "BraTS20_Training_002"}
    for item in prepared:
        assert np.load(item.path).shape == (len(item.z), 4, 32, 32)


def test_a_one_grade_data_set_is_refused_naming_the_folder(brats, tmp_path):
    from core.models.brain_mri.train import make_training

    data = _subset(brats["train"], tmp_path / "data", 3)
    with open(data / "name_mapping.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MAPPING_COLUMNS, restval="NA")
        writer.writeheader()
        writer.writerows(
            {"Grade": "HGG", "BraTS_2020_subject_ID": p.name} for p in data.iterdir() if p.is_dir()
        )
    settings = get_spec("brain_mri").preset_settings("quick") | {"image_size": 32}
    with pytest.raises(TrainingDataError, match=r"only \['HGG'\].*need both"):
        make_training(settings, data, tmp_path / "run")


def test_a_mapping_without_grade_column_and_an_empty_folder_are_refused(tmp_path):
    from core.models.brain_mri.data import index_brats

    (tmp_path / "name_mapping.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(TrainingDataError, match="name_mapping.csv: needs a grade column"):
        index_brats(tmp_path)
    (tmp_path / "name_mapping.csv").unlink()
    with pytest.raises(TrainingDataError, match="no patient folders"):
        index_brats(tmp_path)


def test_a_folder_missing_a_sequence_cannot_be_predicted_or_viewed(brats, tmp_path):
    folder = _copy(brats["test"] / "BraTS20_Training_001", tmp_path / "BraTS20_Training_001")
    (folder / "BraTS20_Training_001_flair.nii.gz").unlink()
    with pytest.raises(VolumeReadError, match=r"BraTS20_Training_001: missing sequence\(s\) flair"):
        load_sequences(folder)


# ------------------------------------------------------------------ the four-sequence view


def test_sequence_views_give_four_windowed_slices_and_the_mask(brats):
    sequences = load_sequences(brats["test"] / "BraTS20_Training_001")
    z = largest_tumour_slice(sequences.seg)
    views = sequence_views(sequences, z)
    assert set(views.images) == set(SEQUENCES)
    for image in views.images.values():
        assert image.shape == SHAPE[1:] and image.dtype == np.uint8 and image.max() > 200
    assert views.mask.shape == SHAPE[1:] and views.mask.any()
    assert sequences.reference.volume_id.endswith("_flair.nii.gz")
    with pytest.raises(IndexError):
        sequence_views(sequences, SHAPE[0])


def test_probability_strip_one_block_per_slice_grey_where_unused():
    p = np.array([np.nan, 0.0, 1.0, 0.5], np.float32)
    strip = probability_strip(p, height=10, slice_width=3, current=2)
    assert strip.shape == (10, 12, 3) and strip.dtype == np.uint8
    assert tuple(strip[5, 1]) == (200, 200, 200)  # not used: grey
    assert strip[5, 4, 2] > strip[5, 4, 0] and strip[5, 7, 0] > strip[5, 7, 2]  # blue for 0, red for 1
    assert (strip[:, 6] == 0).all()  # the current slice is framed
    assert probability_strip_png(p)[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ training and prediction


@pytest.fixture(scope="module")
def trained(brats) -> Path:
    from core.train.loop import fit

    spec = get_spec("brain_mri")
    settings = spec.preset_settings("quick") | {
        "image_size": 48,
        "max_epochs": 6,
        "batch_size": 16,
        "val_fraction": 0.25,
    }
    run = brats["root"] / "run"
    fit(spec, brats["train"], run, settings)
    return run


@pytest.mark.train
def test_learns_the_grade_of_held_out_patients_through_the_cli_predict_path(trained, brats, tmp_path):
    from core.infer import predict_to_dir

    evaluation = json.loads((trained / "evaluation.json").read_text())
    assert evaluation["summary"]["val_patients"] == len(evaluation["cases"]) >= 4
    assert {"id", "true", "predicted", "probability"} <= set(evaluation["cases"][0])
    table = predict_to_dir(trained, brats["test"], tmp_path / "out", progress=lambda _: None)
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == TEST_PATIENTS and {"p_LGG", "p_HGG"} <= set(rows[0])
    assert len(list((tmp_path / "out").glob("*_heatmap.nrrd"))) == TEST_PATIENTS
    truth = _grades(brats["test"])
    predicted = {row["Volume"].removesuffix("_flair.nii.gz"): row["Label"] for row in rows}
    accuracy = np.mean([predicted[pid] == grade for pid, grade in truth.items()])
    assert accuracy >= 0.85, (predicted, truth)  # patients never seen in training or model selection


@pytest.mark.train
def test_prediction_fills_every_field_for_a_folder_and_a_volume(trained, brats, tmp_path):
    from core.infer import load_predictor

    predictor = load_predictor(trained)
    folder = brats["test"] / "BraTS20_Training_001"
    prediction = predictor.predict(folder)
    assert prediction.label in ("LGG", "HGG") and prediction.classes == ("LGG", "HGG")
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-5
    assert prediction.slice_probabilities.shape == (SHAPE[0], 2)
    seg = load_volume(folder / "BraTS20_Training_001_seg.nii.gz").array
    used = np.isfinite(prediction.slice_probabilities[:, 0])
    np.testing.assert_array_equal(used, (seg > 0).any(axis=(1, 2)))  # the tumour slices, with a mask
    assert prediction.heatmap.shape == SHAPE and prediction.heatmap.dtype == np.float32
    assert prediction.heatmap.min() >= 0 and prediction.heatmap.max() == pytest.approx(1.0)
    assert not prediction.heatmap[~used].any()
    flair = predictor.load_input(folder)
    assert flair.shape == SHAPE and flair.volume_id.endswith("_flair.nii.gz")
    assert predictor.predict(flair).label == prediction.label  # a Volume of one of its sequences
    no_mask = _copy(folder, tmp_path / "BraTS20_Training_001")
    (no_mask / "BraTS20_Training_001_seg.nii.gz").unlink()
    brain = predictor.predict(no_mask)
    assert np.isfinite(brain.slice_probabilities[:, 0]).sum() > used.sum()  # every brain slice
