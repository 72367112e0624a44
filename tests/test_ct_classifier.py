"""3D CT classifier (SPEC 5C): preprocessing, network, data set rules, real training on phantoms,
Grad-CAM localisation, prediction and the review helpers."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import TrainingDataError
from core.models import get_spec
from core.models.ct_classifier.data import discover, looks_like_dataset, order_classes
from core.models.ct_classifier.preprocess import (
    Preprocessing,
    VolumeTooSmallError,
    cam_to_volume,
    preprocess_array,
)
from tests.conftest import scratch

REPO = Path(__file__).resolve().parents[1]
DEMO_SHAPE = (16, 64, 64)
PER_CLASS = 12
# Demo phantoms at the network's input size; 12 epochs of 4 steps (the quick preset's model and batch).
TRAIN_SETTINGS = ["depth=16", "size=64", "max_epochs=12", "early_stop_patience=0", "num_workers=0"]


def _marker_volume(shape=(20, 40, 30)) -> np.ndarray:
    """-2000 HU everywhere and a +1000 HU block at the first slices' top-left corner."""
    hu = np.full(shape, -2000.0, np.float32)
    hu[:4, :8, :6] = 1000.0
    return hu


# ---------------------------------------------------------------------------------------------
# Preprocessing and its inverse
# ---------------------------------------------------------------------------------------------


def test_preprocessing_shape_range_and_orientation_with_an_asymmetric_marker():
    prep = Preprocessing(depth=10, size=16)
    out = preprocess_array(_marker_volume(), prep)
    assert out.shape == (10, 16, 16) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0  # -2000 clipped to -1000 -> 0; +1000 clipped to 400 -> 1
    # A quarter turn counter-clockwise (as displayed): the top-left marker lands bottom-left.
    z, y, x = np.argwhere(out > 0.5).mean(axis=0)
    assert z < 2.5 and y > 12 and x < 3
    unrotated = preprocess_array(_marker_volume(), Preprocessing(depth=10, size=16, rotate90=False))
    z, y, x = np.argwhere(unrotated > 0.5).mean(axis=0)
    assert z < 2.5 and y < 3 and x < 3


def test_preprocessing_matches_the_reference_clip_rotate_and_linear_zoom():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    hu = rng.uniform(-1500, 1500, (9, 20, 20)).astype(np.float32)
    prep = Preprocessing(depth=12, size=24)
    ours = preprocess_array(hu, prep)
    scaled = (np.clip(hu, -1000, 400) + 1000) / 1400
    rotated = np.rot90(scaled, 1, axes=(1, 2))
    reference = ndimage.zoom(rotated, (12 / 9, 24 / 20, 24 / 20), order=1)
    assert reference.shape == ours.shape
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_heatmap_resampled_back_lands_on_the_marker_in_the_original_geometry():
    """A CAM peaked on the marker's cells, mapped back (resize and rotation undone), peaks on the marker."""
    from core.models.ct_classifier.net import cam_cell_centres

    hu = _marker_volume((20, 40, 30))
    prep = Preprocessing(depth=16, size=32)
    prepared = preprocess_array(hu, prep)
    cells = prepared.reshape(2, 8, 4, 8, 4, 8).mean(axis=(1, 3, 5))  # 'same' padding: 8-voxel cells
    offset, step = cam_cell_centres("same")
    heat = cam_to_volume(cells / cells.max(), hu.shape, prep, offset, step)
    assert heat.shape == hu.shape
    z, y, x = np.unravel_index(np.argmax(heat), heat.shape)
    marker = np.zeros(hu.shape, bool)
    marker[:4, :8, :6] = True
    from scipy import ndimage

    cell = ndimage.binary_dilation(marker, np.ones((2 * 5 + 1, 2 * 10 + 1, 2 * 8 + 1), bool))
    assert cell[z, y, x], (z, y, x)
    assert heat[:10, :20, :15].mean() > heat[10:, 20:, 15:].mean()


def test_too_small_volumes_are_refused_with_the_file_named():
    with pytest.raises(VolumeTooSmallError, match=r"scan\.nii\.gz: 1x64x64 voxels is too small"):
        preprocess_array(np.zeros((1, 64, 64), np.float32), Preprocessing(), where="scan.nii.gz")


# ---------------------------------------------------------------------------------------------
# Network and augmentation
# ---------------------------------------------------------------------------------------------


def test_reference_network_layers_and_output():
    import torch

    from core.models.ct_classifier.net import build_model, model_args

    spec = get_spec("ct_classifier")
    model = build_model(**model_args(spec.defaults))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 256]
    assert all(c.kernel_size == (3, 3, 3) and c.padding == (0, 0, 0) for c in convs)
    for block in model.blocks:
        assert [type(m).__name__ for m in block] == ["Conv3d", "ReLU", "MaxPool3d", "BatchNorm3d"]
    assert [type(m).__name__ for m in model.head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model.head[0].out_features == 512 and model.head[2].p == pytest.approx(0.3)
    assert model.head[3].out_features == 1
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 128, 128)).shape == (1,)
    small = build_model(width=0.25, dense=32, dropout=0.3, padding="same", depth=16, size=32)
    assert [c.out_channels for c in small.modules() if isinstance(c, torch.nn.Conv3d)] == [16, 16, 32, 64]
    with pytest.raises(ValueError, match="too small for the network"):
        build_model(width=1.0, dense=8, dropout=0.3, padding="valid", depth=16, size=64)


def test_rotation_augmentation_is_seeded_in_range_and_clipped():
    import torch

    from core.models.ct_classifier.train import ROTATION_ANGLES, augmentation_angles, rotate_in_plane

    a = augmentation_angles(0, 3, 1, 64)
    assert torch.equal(a, augmentation_angles(0, 3, 1, 64))
    assert not torch.equal(a, augmentation_angles(0, 4, 1, 64))
    assert set(a.tolist()) <= set(ROTATION_ANGLES) and len(set(a.tolist())) > 3
    x = torch.rand(2, 1, 4, 16, 16)
    y = rotate_in_plane(x, torch.tensor([0.0, 20.0]))
    assert torch.allclose(y[0], x[0], atol=1e-5)
    assert float(y.min()) >= 0 and float(y.max()) <= 1 and not torch.allclose(y[1], x[1])
    quarter = rotate_in_plane(x, torch.tensor([90.0, 90.0]))  # positive angles turn counter-clockwise
    expected = torch.rot90(x, 1, dims=(3, 4))
    assert torch.allclose(quarter[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Spec and data sets
# ---------------------------------------------------------------------------------------------


def test_spec_reference_settings_and_quick_preset_without_torch():
    spec = get_spec("ct_classifier")
    d = spec.defaults
    assert (d["depth"], d["size"], d["batch_size"], d["max_epochs"], d["lr"]) == (64, 128, 2, 100, 1e-4)
    assert (d["lr_decay_rate"], d["lr_decay_steps"], d["early_stop_patience"]) == (0.96, 100000, 15)
    assert spec.monitor == "val_acc" and spec.monitor_mode == "max"
    assert spec.review == "volume_classes" and spec.outputs == ("label", "probabilities", "heatmap")
    assert spec.modalities == ("CT",) and "quick" in spec.presets and spec.demo_folder == "ct_nifti"
    code = "import sys, core.models; core.models.get_spec('ct_classifier'); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_learning_rate_decays_in_steps_like_keras_exponential_decay():
    from core.models.ct_classifier.train import staircase_decay

    f = staircase_decay(0.96, 100000)
    assert f(0) == 1.0 and f(99999) == 1.0
    assert f(100000) == pytest.approx(0.96) and f(250000) == pytest.approx(0.96**2)


def test_class_order_and_dataset_rule(tmp_path):
    assert order_classes(["CT-23", "CT-0"]) == ("CT-0", "CT-23")
    assert order_classes(["normal", "abnormal"]) == ("normal", "abnormal")
    assert order_classes(["tb", "healthy"]) == ("healthy", "tb")
    for names in ({"CT-0", "CT-23"}, {"normal", "abnormal"}):
        assert looks_like_dataset(tmp_path, names)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert not looks_like_dataset(tmp_path, {"a", "b"})
    (tmp_path / "a" / "x.nii.gz").write_bytes(b"")
    (tmp_path / "b" / "y.nrrd").write_bytes(b"")
    assert looks_like_dataset(tmp_path, {"a", "b"})
    assert not looks_like_dataset(tmp_path, {"train", "val", "test"})


def _write(path: Path, hu: np.ndarray) -> Path:
    from core.io.writers import write_nifti

    return write_nifti(hu.astype(np.int16), path, spacing=(5.0, 1.0, 1.0))


def test_one_class_folder_is_refused_naming_the_folder(tmp_path):
    _write(tmp_path / "CT-0" / "a.nii.gz", np.zeros((6, 32, 32)))
    with pytest.raises(TrainingDataError, match=r"one class folder.*needs two"):
        discover(tmp_path)


def test_bad_volumes_are_left_out_by_name_and_the_rest_is_used(tmp_path):
    from core.models.ct_classifier.train import prepare_data

    rng = np.random.default_rng(0)
    for cls in ("normal", "abnormal"):
        for i in range(4):
            _write(tmp_path / "data" / cls / f"{cls}_{i}.nii.gz", rng.uniform(-1000, 400, (6, 24, 24)))
    (tmp_path / "data" / "abnormal" / "broken.nii.gz").write_bytes(gzip.compress(b"not a nifti" * 50))
    _write(tmp_path / "data" / "normal" / "thin.nii.gz", rng.uniform(-1000, 400, (2, 24, 24)))
    settings = {**get_spec("ct_classifier").preset_settings("quick"), "depth": 8, "size": 16,
                "cache_dir": str(tmp_path / "cache")}
    dataset, train, val = prepare_data(settings, tmp_path / "data")
    assert dataset.classes == ("normal", "abnormal")
    text = " | ".join(dataset.problems)
    assert len(dataset.problems) == 2 and "broken.nii.gz" in text and "thin.nii.gz" in text
    assert "too small" in text
    assert len(train.cases) + len(val.cases) == 8 and {c.label for c in val.cases} == {0, 1}
    assert train.computed + val.computed == 8
    _, train2, val2 = prepare_data(settings, tmp_path / "data")  # preprocessed once: now from the cache
    assert train2.computed + val2.computed == 0 and train2.files == train.files


def test_given_train_and_val_folders_are_used_as_the_split(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("CT-0", "CT-23"):
            for i in range(n):
                _write(tmp_path / split / cls / f"{i}.nii.gz", np.zeros((6, 16, 16)))
    dataset = discover(tmp_path)
    assert len(dataset.train) == 6 and len(dataset.val) == 4
    assert all("/val/" in c.path.as_posix() for c in dataset.val)


def test_split_is_seeded_and_70_30_per_class(tmp_path):
    for cls in ("CT-0", "CT-23"):
        for i in range(10):
            _write(tmp_path / cls / f"{i}.nii.gz", np.zeros((6, 16, 16)))
    a, b, c = discover(tmp_path, seed=1), discover(tmp_path, seed=1), discover(tmp_path, seed=2)
    assert [x.case_id for x in a.val] == [x.case_id for x in b.val] != [x.case_id for x in c.val]
    assert sum(x.label == 0 for x in a.val) == 3 and sum(x.label == 1 for x in a.val) == 3
    assert len(a.train) == 14


# ---------------------------------------------------------------------------------------------
# Training for real on the demo phantoms, then prediction and Grad-CAM
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from core.models.ct_classifier.demo import write_ct_volumes
    from core.train.cli import train_from_cli

    with scratch(tmp_path_factory, "ctdemo") as root:
        write_ct_volumes(root, 0, PER_CLASS, DEMO_SHAPE, progress=lambda _m: None)
        run = root / "run"
        train_from_cli("ct_classifier", root / "ct_nifti", run,
                       [*TRAIN_SETTINGS, f"cache_dir={root / 'cache'}"], preset="quick")
        yield root, run


@pytest.mark.train
def test_learns_normal_vs_abnormal_on_held_out_phantoms(trained):
    _, run = trained
    result = json.loads((run / "result.json").read_text())
    assert result["monitor"] == "val_acc" and result["best_metric"]["val_acc"] >= 0.85
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        assert {"train_loss", "val_loss", "train_acc", "val_acc"} <= set(line)
    evaluation = json.loads((run / "evaluation.json").read_text())
    n_val = 2 * round(0.3 * PER_CLASS)
    assert len(evaluation["cases"]) == n_val and evaluation["summary"]["volumes"] == n_val
    assert evaluation["summary"]["accuracy"] >= 0.85
    matrix = evaluation["confusion_matrix"]
    assert matrix["classes"] == ["normal", "abnormal"] and np.sum(matrix["matrix"]) == n_val
    assert {"case", "truth", "predicted", "p(abnormal)", "correct"} <= set(evaluation["cases"][0])
    assert evaluation["roc"]["auc"] >= 0.85


@pytest.mark.train
def test_prediction_label_probabilities_and_heatmap_in_the_input_geometry(trained):
    from core.infer import load_predictor
    from core.io import load_volume
    from core.io.writers import write_nrrd

    root, run = trained
    predictor = load_predictor(run, device="cpu")
    volume = load_volume(root / "ct_nifti" / "CT-23" / "ct23_000.nii.gz")
    prediction = predictor.predict(volume)
    assert prediction.label in ("normal", "abnormal")
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.extras["confidence_text"].endswith(f"% confident {prediction.label}")
    assert prediction.heatmap.shape == volume.shape
    assert prediction.heatmap.min() >= 0 and prediction.heatmap.max() == pytest.approx(1.0)
    # another shape than the network input: the heatmap still has the input's shape
    cropped = np.rint(volume.array[:, 5:60, 2:50]).astype(np.int16)
    odd = write_nrrd(cropped, root / "odd.nrrd", (5.0, 2.8, 2.8))
    other = load_volume(odd)
    assert predictor.predict(other).heatmap.shape == other.shape == (16, 55, 48)
    from core.volume import Volume

    thin = Volume(np.zeros((2, 64, 64)), modality="CT", volume_id="thin", source="thin.nii.gz")
    with pytest.raises(VolumeTooSmallError, match="thin"):
        predictor.predict(thin)


@pytest.mark.train
def test_grad_cam_peaks_on_the_lesion_of_positive_volumes(trained):
    """Peak inside the lesion dilated by one Grad-CAM cell (8 voxels here), in >= 70 % of positives.

    The model after the last epoch: the best checkpoint by validation accuracy can be an early epoch
    (8 validation volumes tie at 7/8 early on), before the features have settled on the lesions."""
    from scipy import ndimage

    from core.infer import load_predictor
    from core.io import load_volume

    root, run = trained
    predictor = load_predictor(run / "checkpoints" / "last.ckpt", device="cpu")
    hits, total = 0, 0
    for path in sorted((root / "ct_nifti" / "CT-23").glob("*.nii.gz")):
        volume = load_volume(path)
        with np.load(root / "truth" / f"{path.name.removesuffix('.nii.gz')}.npz") as truth:
            lesion = truth["lesion_mask"] > 0
        assert lesion.any() and lesion.shape == volume.shape
        heat = predictor.predict(volume).heatmap
        lesion = ndimage.maximum_filter(lesion, size=17)  # a box of +-8 voxels (separable: fast)
        hits += bool(lesion[np.unravel_index(np.argmax(heat), heat.shape)])
        total += 1
    print(f"Grad-CAM peak on a lesion in {hits}/{total} positives")
    assert hits / total >= 0.7


@pytest.mark.train
def test_review_helpers_montage_curves_and_evaluation(trained):
    from core import volume_class_review as review
    from core.infer import load_predictor
    from core.io import load_volume

    root, run = trained
    predictor = load_predictor(run, device="cpu")
    volume = load_volume(root / "ct_nifti" / "CT-0" / "ct0_000.nii.gz")
    array, heat = review.network_view(predictor, volume)
    assert array.shape == heat.shape == (16, 64, 64)
    rgb, shown = review.montage_rgb(array, heat)
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and shown == list(range(16))
    assert review.montage_png(array).startswith(b"\x89PNG")
    prediction = predictor.predict(volume)
    assert "% confident" in review.confidence_text(prediction)
    curves = review.learning_curves(run)
    assert len(curves["epoch"]) == len(curves["val_acc"]) >= 1 and None not in curves["train_acc"]
    tables = review.evaluation_tables(run)
    assert tables["summary"]["accuracy"] >= 0.85 and len(tables["confusion"]) == 2
    assert len(tables["cases"]) == 2 * round(0.3 * PER_CLASS)
