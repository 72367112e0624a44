"""Training the lung localizer for real on phantom slices (CPU, small sizes), resume, run files, bad data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import CheckpointError, TrainingDataError
from core.models.lung_localizer.synthetic import phantom_dataset, placed_phantom_slices
from core.train.cli import train_from_cli
from tests.conftest import scratch

FAST = ["backbone=resnet18", "num_workers=0", "pretrained=false"]


def _load_ckpt(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.train
def test_localizer_learns_lung_boxes_on_held_out_phantoms(tmp_path):
    """Mean IoU >= 0.7 on phantoms never seen in training, clearly above a constant mean box."""
    import torch

    from core.infer import load_predictor
    from core.models.lung_localizer.train import box_iou
    from core.volume import Volume

    data = phantom_dataset(tmp_path / "prepared", range(0, 36), range(100, 106), size=64)
    run = tmp_path / "run"
    train_from_cli(
        "lung_localizer",
        data,
        run,
        [*FAST, "image_size=64", "batch_size=16", "max_epochs=6", "lr=1e-3", "augment=false"],
    )
    result = json.loads((run / "result.json").read_text())
    predictor = load_predictor(result["best_checkpoint"], device="cpu")
    train_boxes = np.concatenate([placed_phantom_slices(s, 64).boxes for s in range(0, 36)])
    mean_box = torch.tensor(train_boxes.mean(axis=0))
    ious, baseline = [], []
    for seed in range(200, 208):
        held_out = placed_phantom_slices(seed, 64)
        volume = Volume(held_out.hu, spacing=(2.5, 2.8, 2.8), modality="CT", volume_id=held_out.volume_id)
        truth = torch.tensor(held_out.boxes)
        ious.append(box_iou(torch.tensor(predictor.predict_volume(volume)), truth).numpy())
        baseline.append(box_iou(mean_box.expand_as(truth), truth).numpy())
    iou, base = float(np.concatenate(ious).mean()), float(np.concatenate(baseline).mean())
    print(f"held-out mean IoU {iou:.3f} vs constant mean box {base:.3f}")
    assert iou >= 0.7
    assert iou >= base + 0.15


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    with scratch(tmp_path_factory, "tiny") as base:
        yield phantom_dataset(base / "prepared", range(0, 3), range(50, 52), size=32)


TINY = [*FAST, "image_size=32", "batch_size=8", "lr=1e-3", "save_top_k=2"]


@pytest.mark.train
def test_interrupted_then_resumed_run_ends_with_the_same_weights(tiny_data, tmp_path):
    import torch

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_from_cli("lung_localizer", tiny_data, straight, [*TINY, "max_epochs=3"])
    train_from_cli("lung_localizer", tiny_data, interrupted, [*TINY, "max_epochs=1"])
    train_from_cli("lung_localizer", tiny_data, interrupted, ["max_epochs=3"], resume=True)
    a = _load_ckpt(straight / "checkpoints" / "last.ckpt")["state_dict"]
    b = _load_ckpt(interrupted / "checkpoints" / "last.ckpt")["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    config = json.loads((interrupted / "config.json").read_text())
    assert config["resumed"] is True and config["settings"]["image_size"] == 32  # saved settings kept

    # the run dir of the uninterrupted run, as the jobs and the Train page read it
    config = json.loads((straight / "config.json").read_text())
    assert {"family", "data", "settings", "seed", "device", "precision"} <= set(config)
    assert config["family"] == "lung_localizer" and config["device"] == "cpu" and config["seed"] == 0
    lines = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert {"epoch", "train_loss", "val_loss", "val_iou", "val_iou_p50", "lr", "time"} <= set(line)
    progress = json.loads((straight / "progress.json").read_text())
    assert (
        progress["epoch"] == progress["epochs_done"] == 3
        and progress["max_epochs"] == 3
        and progress["steps_per_epoch"] >= 1
    )
    assert {"step", "elapsed_s", "eta_s", "updated"} <= set(progress)
    result = json.loads((straight / "result.json").read_text())
    assert Path(result["best_checkpoint"]).is_file() and result["monitor"] == "val_loss"
    ckpts = sorted(p.name for p in (straight / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 3  # best 2 + last
    assert list((straight / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.train
def test_checkpoint_describes_itself_and_loads_weights_only(tiny_data, tmp_path):
    run = tmp_path / "run"
    train_from_cli("lung_localizer", tiny_data, run, [*TINY, "max_epochs=1"])
    ckpt = _load_ckpt(run / "checkpoints" / "last.ckpt")
    meta = ckpt["slicewise"]
    assert meta["family"] == "lung_localizer"
    assert meta["model_args"] == {"backbone": "resnet18", "image_size": 32, "dropout": 0.2}
    assert meta["settings"]["image_size"] == 32 and meta["settings"]["lr"] == 1e-3
    assert set(meta["stats"]) == {"mean", "std", "size"} and meta["stats"]["std"] > 0
    from core.models.lung_localizer.net import build_model

    model = build_model(**meta["model_args"])
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)  # strict: the recorded constructor arguments rebuild the same network


def test_resume_without_a_checkpoint_is_refused(tiny_data, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train_from_cli("lung_localizer", tiny_data, tmp_path / "empty", TINY, resume=True)


# ------------------------------------------------------------------ bad data


def _copy_prepared(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rewrite_boxes(root: Path, edit) -> None:
    path = root / "boxes.csv"
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows = edit(rows)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_missing_data_folder_is_reported(tmp_path):
    with pytest.raises(TrainingDataError, match="neither a prepared folder"):
        train_from_cli("lung_localizer", tmp_path / "nothing_here", tmp_path / "run", TINY)


def test_missing_stats_and_bad_stats_are_reported(tiny_data, tmp_path):
    from core.models.lung_localizer.data import read_prepared

    bad = _copy_prepared(tiny_data, tmp_path / "bad")
    (bad / "stats.json").write_text(json.dumps({"mean": 0.2, "std": 0.0}))
    with pytest.raises(TrainingDataError, match=r"stats.json: mean .* std"):
        read_prepared(bad)
    (bad / "stats.json").unlink()
    with pytest.raises(TrainingDataError, match=r"stats.json: missing"):
        read_prepared(bad)


def test_inverted_box_names_the_csv_line(tiny_data, tmp_path):
    from core.models.lung_localizer.data import read_prepared

    bad = _copy_prepared(tiny_data, tmp_path / "bad")

    def invert(rows):
        rows[3][1], rows[3][3] = rows[3][3], rows[3][1]
        return rows

    _rewrite_boxes(bad, invert)
    with pytest.raises(TrainingDataError, match=r"boxes.csv line 4: box .* Xmin < Xmax"):
        read_prepared(bad)


def test_missing_slice_file_and_missing_column_are_reported(tiny_data, tmp_path):
    from core.models.lung_localizer.data import read_prepared

    bad = _copy_prepared(tiny_data, tmp_path / "bad")
    (bad / "train" / "1.npy").unlink()
    with pytest.raises(TrainingDataError, match=r"train/1.npy: missing"):
        train_from_cli("lung_localizer", bad, tmp_path / "run", TINY)
    _rewrite_boxes(bad, lambda rows: [r[:-1] for r in rows])
    with pytest.raises(TrainingDataError, match="missing column"):
        read_prepared(bad)


def test_a_split_without_rows_is_reported(tiny_data, tmp_path):
    from core.models.lung_localizer.data import read_prepared

    bad = _copy_prepared(tiny_data, tmp_path / "bad")
    _rewrite_boxes(bad, lambda rows: [rows[0]] + [r for r in rows[1:] if r[7] == "train"])
    with pytest.raises(TrainingDataError, match="no 'val' rows"):
        read_prepared(bad)


def test_corrupt_slice_file_is_reported(tiny_data, tmp_path):
    from core.models.lung_localizer.data import read_prepared

    bad = _copy_prepared(tiny_data, tmp_path / "bad")
    with (bad / "boxes.csv").open(newline="") as handle:
        first_val = next(row["file"] for row in csv.DictReader(handle) if row["split"] == "val")
    (bad / first_val).write_bytes(b"not numpy")
    with pytest.raises(TrainingDataError, match=rf"{first_val}: not a readable .npy"):
        read_prepared(bad)


# ------------------------------------------------------------------ from a data root + annotation CSV


@pytest.mark.train
def test_data_root_and_annotation_csv_are_prepared_then_trained(data_root, tmp_path):
    from core.annotations import BoxStore
    from core.io import load_volume
    from core.io.writers import write_dicom_series
    from core.phantoms import chest_ct_phantom

    csv_path = tmp_path / "lung_bbox.csv"
    store = BoxStore(csv_path)
    for seed in range(3):
        phantom = chest_ct_phantom((8, 64, 64), spacing=(5.0, 2.8, 2.8), seed=seed)
        folder = data_root / f"chest_{seed}"
        write_dicom_series(phantom.hu.round().astype(np.int16), folder, spacing=(5.0, 2.8, 2.8))
        volume = load_volume(folder)
        for z in np.flatnonzero(~np.isnan(phantom.boxes[:, 0])):
            store.upsert(
                volume.slice_ids[z],
                *map(float, phantom.boxes[z]),
                volume=volume.volume_id,
                slice=int(z),
                annotator="test",
            )
    run = tmp_path / "run"
    train_from_cli(
        "lung_localizer",
        data_root,
        run,
        [*TINY, "max_epochs=1", f"annotations_csv={csv_path}", "prepare_size=48", "val_fraction=0.34"],
    )
    stats = json.loads((run / "prepared" / "stats.json").read_text())
    assert stats["size"] == 48 and stats["n_train"] > 0 and stats["n_val"] > 0
    assert json.loads((run / "result.json").read_text())["status"] == "done"


# ------------------------------------------------------------------ augmentation


def test_augmentation_moves_the_box_with_the_image():
    import torch

    from core.models.lung_localizer.data import Augmentation, augment, build_transform

    image = torch.zeros(1, 64, 64)
    image[:, 20:40, 16:44] = 1.0  # the "lungs": x 16..44, y 20..40
    box = torch.tensor([16.0, 20.0, 44.0, 40.0])
    aug = Augmentation(gamma=0.3, rotate_deg=25.0, scale=0.15, translate=0.1)
    transform = build_transform(aug)
    for seed in range(8):
        out, moved = augment(image, box, aug, transform, seed)
        ys, xs = torch.nonzero(out[0] > 0.5, as_tuple=True)
        bright = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert (moved[:2] <= bright[:2] + 1.5).all() and (moved[2:] >= bright[2:] - 1.5).all()  # encloses
        assert moved.min() >= 0 and moved.max() <= 64  # clipped to the image
        again, moved_again = augment(image, box, aug, transform, seed)
        assert torch.equal(out, again) and torch.equal(moved, moved_again)  # a function of the seed


def test_gamma_contrast_changes_intensities_not_the_box():
    import torch

    from core.models.lung_localizer.data import Augmentation, augment, build_transform

    image = torch.linspace(0, 1, 64 * 64).reshape(1, 64, 64)
    box = torch.tensor([10.0, 10.0, 50.0, 50.0])
    aug = Augmentation(gamma=0.5, rotate_deg=0.0, scale=0.0, translate=0.0)
    out, moved = augment(image, box, aug, build_transform(aug), seed=3)
    assert not torch.allclose(out, image) and torch.allclose(moved, box)


@pytest.mark.train
def test_demo_folder_trains_on_its_ground_truth_boxes(data_root, tmp_path):
    from core.demo import write_demo_data

    demo = write_demo_data(data_root / "demo", seed=0, progress=lambda _: None, small=True)
    run = tmp_path / "run"
    train_from_cli(
        "lung_localizer", demo, run, [*TINY, "max_epochs=1", "prepare_size=32", "val_fraction=0.5"]
    )
    with (run / "demo_truth_boxes.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {r["Annotator"] for r in rows} == {"demo-truth"}
    stats = json.loads((run / "prepared" / "stats.json").read_text())
    assert stats["n_train"] + stats["n_val"] == len(rows)
    assert json.loads((run / "result.json").read_text())["status"] == "done"


@pytest.mark.parametrize("size", [32, 37])
def test_batched_augmentation_equals_the_torchvision_reference(size):
    """The training path (draws + augment_batch) gives the reference's pixels and boxes exactly."""
    import torch

    from core.models.lung_localizer.data import (
        Augmentation,
        augment,
        augment_batch,
        build_transform,
        draw_augmentation,
    )

    generator = torch.Generator().manual_seed(size)
    images = torch.rand(12, 1, size, size, generator=generator)
    corner = torch.rand(12, 2, generator=generator) * size / 2
    extent = torch.rand(12, 2, generator=generator) * size / 2 + 1
    boxes = torch.cat([corner, corner + extent], dim=1)
    wide = Augmentation(rotate_deg=5.0, scale=0.3, translate=0.25, flip=True, window=0.15, noise=0.03)
    for aug in (Augmentation(), Augmentation(gamma=0.3, rotate_deg=25.0, scale=0.15, translate=0.1), wide):
        transform = build_transform(aug)
        seeds = range(100, 112)
        reference = [augment(images[i], boxes[i], aug, transform, s) for i, s in enumerate(seeds)]
        out, moved = augment_batch(images, boxes, [draw_augmentation(aug, s, size) for s in seeds])
        # Equal up to float rounding: on some CPUs the batched grid_sample and the per-image
        # torchvision path round differently in the last bit (seen here with a 1-ulp box difference).
        torch.testing.assert_close(out, torch.stack([r[0] for r in reference]), rtol=0, atol=1e-5)
        torch.testing.assert_close(moved, torch.stack([r[1] for r in reference]), rtol=0, atol=1e-4)


def test_augment_batch_refuses_mismatched_inputs():
    import torch

    from core.models.lung_localizer.data import Augmentation, augment_batch, draw_augmentation

    draws = [draw_augmentation(Augmentation(), seed, 16) for seed in range(3)]
    with pytest.raises(ValueError, match=r"images \(3, 1, 16, 16\), boxes \(2, 4\) and 3 draws"):
        augment_batch(torch.zeros(3, 1, 16, 16), torch.zeros(2, 4), draws)


def test_dataset_batches_equal_its_items_cached_or_not(tiny_data):
    """__getitems__ (what the DataLoader calls) = item by item, preloaded, lazily cached or uncached."""
    import torch

    from core.models.lung_localizer.data import Augmentation, LungBoxDataset, read_prepared

    data = read_prepared(tiny_data)
    make = lambda cache: LungBoxDataset(data.train, 32, data.mean, data.std, Augmentation(), 7, cache)  # noqa: E731
    preloaded, lazy, uncached = make(True), make(True), make(False)
    preloaded.preload()
    keys = [len(data.train) * 2 + i for i in (5, 0, 3, 3, len(data.train) - 1)]  # epoch 2
    batch = preloaded.__getitems__(keys)
    for dataset in (preloaded, lazy, uncached):
        for key, (image, box) in zip(keys, batch, strict=True):
            other_image, other_box = dataset[key]
            assert torch.equal(image, other_image) and torch.equal(box, other_box)
    assert not torch.equal(batch[1][0], preloaded[len(data.train) * 3][0])  # another epoch, another draw


def test_checkpoint_io_writes_atomically_and_keeps_the_old_file_on_failure(tmp_path):
    import torch

    from core.train.loop import LocalCheckpointIO

    io, path = LocalCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    assert torch.equal(_load_ckpt(path)["state_dict"]["w"], torch.ones(3))
    with pytest.raises(Exception, match="pickle"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": lambda: None}, path)
    assert torch.equal(_load_ckpt(path)["state_dict"]["w"], torch.ones(3))  # the old checkpoint stays
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, path, storage_options={"anything": 1})


@pytest.mark.train
def test_resume_with_a_loader_worker_matches_the_uninterrupted_run(tiny_data, tmp_path):
    """A worker process draws indices as soon as its loader is iterated: it must still see the
    resumed epoch, and the batches must not depend on the number of workers."""
    import torch

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_from_cli("lung_localizer", tiny_data, straight, [*TINY, "max_epochs=3"])
    worker = [*TINY, "num_workers=1"]
    train_from_cli("lung_localizer", tiny_data, interrupted, [*worker, "max_epochs=1"])
    train_from_cli("lung_localizer", tiny_data, interrupted, ["max_epochs=3"], resume=True)
    a = _load_ckpt(straight / "checkpoints" / "last.ckpt")["state_dict"]
    b = _load_ckpt(interrupted / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [m["train_loss"] for m in metrics] == [m["train_loss"] for m in reference]
