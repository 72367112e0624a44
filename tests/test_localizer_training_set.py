"""What the lung localizer trains on (issue 9): the split setting, confirmed boxes vs proposals,
HU-rule pseudo-labels, excluded volumes, the Train page's summary, the profile head and the wide
augmentation. Real DICOM series written with pydicom; no training here (see test_localizer_generalise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.annotations import BoxStore
from core.errors import TrainingDataError
from core.io import load_volume
from core.io.writers import write_dicom_series
from core.models.lung_localizer.prepare import BLOCK_GAP, prepare_lung_dataset
from core.phantoms import chest_ct_phantom

SPACING = (5.0, 3.0, 3.0)


def _series(root: Path, name: str, patient: str, seed: int, depth: int = 12):
    ph = chest_ct_phantom((depth, 48, 48), SPACING, seed=seed)
    folder = root / "ct" / name
    write_dicom_series(np.round(ph.hu).astype(np.int16), folder, spacing=SPACING, patient_id=patient)
    return load_volume(folder), ph


def _annotate(store: BoxStore, volume, ph, zs, annotator: str = "radiologist") -> list[int]:
    done = []
    for z in zs:
        if not np.isnan(ph.boxes[z]).any():
            store.upsert(volume.slice_ids[z], *map(float, ph.boxes[z]), volume=volume.volume_id, slice=int(z),
                         annotator=annotator)
            done.append(int(z))
    return done


def _prepare(store, root, out, **kwargs) -> tuple[pd.DataFrame, dict]:
    prepare_lung_dataset(store.path, root, out, size=16, progress=lambda m: None, **kwargs)
    return pd.read_csv(out / "boxes.csv"), json.loads((out / "stats.json").read_text())


def test_one_patient_auto_split_validates_on_a_block_of_top_slices(data_root, tmp_path):
    store = BoxStore(tmp_path / "one.csv")
    volume, ph = _series(data_root, "p1", "LIDC-0001", seed=1)
    annotated = _annotate(store, volume, ph, range(volume.shape[0]))
    table, stats = _prepare(store, data_root, tmp_path / "auto", val_fraction=0.2)
    assert stats["split"] == "blocks" and stats["split_setting"] == "auto" and stats["n_val"] >= 1
    train_z, val_z = (sorted(table.loc[table.split == s, "Slice"]) for s in ("train", "val"))
    assert max(train_z) < min(val_z)  # a contiguous block at the top of the stack
    assert len(train_z) + len(val_z) == len(annotated) - BLOCK_GAP  # the gap slices are left out
    from core.models.lung_localizer.data import read_prepared

    read_prepared(tmp_path / "auto")  # trainable: both splits present
    # split=patient with one patient: nothing to validate on, and stats say why
    _, stats = _prepare(store, data_root, tmp_path / "patient", val_fraction=0.2, split="patient")
    assert stats["split"] == "patient" and stats["n_val"] == 0


def test_two_patients_auto_split_holds_a_patient_out_and_blocks_can_be_forced(data_root, tmp_path):
    store = BoxStore(tmp_path / "two.csv")
    for k, patient in enumerate(("A", "B")):
        volume, ph = _series(data_root, f"s{k}", patient, seed=k)
        _annotate(store, volume, ph, range(volume.shape[0]))
    table, stats = _prepare(store, data_root, tmp_path / "auto", val_fraction=0.5)
    assert stats["split"] == "patient" and len(stats["val_volumes"]) == 1
    assert not set(stats["train_volumes"]) & set(stats["val_volumes"])
    table, stats = _prepare(store, data_root, tmp_path / "blocks", val_fraction=0.2, split="blocks")
    assert stats["split"] == "blocks"
    assert set(table.loc[table.split == "val", "Volume"]) == set(table.Volume)  # a block of each volume
    with pytest.raises(TrainingDataError, match="split must be one of"):
        _prepare(store, data_root, tmp_path / "bad", split="random")


def test_proposals_are_left_out_unless_include_proposals(data_root, tmp_path):
    store = BoxStore(tmp_path / "mixed.csv")
    volume, ph = _series(data_root, "p1", "P", seed=2)
    lung = [z for z in range(volume.shape[0]) if not np.isnan(ph.boxes[z]).any()]
    confirmed = _annotate(store, volume, ph, lung[::2])
    proposed = _annotate(store, volume, ph, lung[1::2], annotator="auto")
    table, stats = _prepare(store, data_root, tmp_path / "confirmed")
    assert set(table.Slice) <= set(confirmed)
    assert stats["confirmed_boxes"] == len(confirmed) and stats["proposal_boxes"] == len(proposed)
    assert stats["proposals_used"] == 0 and stats["include_proposals"] is False
    table, stats = _prepare(store, data_root, tmp_path / "all", include_proposals=True)
    assert set(table.Slice) & set(proposed) and stats["proposals_used"] == len(proposed)
    only = BoxStore(tmp_path / "only_proposals.csv")
    _annotate(only, volume, ph, lung, annotator="auto")
    with pytest.raises(TrainingDataError, match="include_proposals"):
        _prepare(only, data_root, tmp_path / "none")


def test_rule_pseudo_labels_fill_unannotated_training_slices_only(data_root, tmp_path):
    store = BoxStore(tmp_path / "pseudo.csv")
    volume, ph = _series(data_root, "p1", "P", seed=3, depth=16)
    lung = [z for z in range(volume.shape[0]) if not np.isnan(ph.boxes[z]).any()]
    annotated = _annotate(store, volume, ph, lung[::3])
    table, stats = _prepare(store, data_root, tmp_path / "p", val_fraction=0.3, pseudo_labels="rule")
    pseudo = table[table.split == "pseudo"]
    assert len(pseudo) == stats["n_pseudo"] > 0 and stats["pseudo_labels"] == "rule"
    assert not set(pseudo.Slice) & set(annotated)  # never a slice somebody annotated
    held = table.loc[table.split == "val", "Slice"]
    assert pseudo.Slice.max() < held.min() - 1  # nothing from the validation block or its neighbours
    from core.models.lung_localizer.data import LungBoxDataset, read_prepared

    data = read_prepared(tmp_path / "p", pseudo_weight=0.25)
    weights = sorted({item.weight for item in data.train})
    assert weights == [0.25, 1.0] and len(data.train) == stats["n_train"] + stats["n_pseudo"]
    image, box, weight = LungBoxDataset(data.train, 16, data.mean, data.std)[len(data.train) - 1]
    assert image.shape == (1, 16, 16) and float(weight) == 0.25
    assert {item.weight for item in read_prepared(tmp_path / "p", pseudo_weight=0).train} == {1.0}
    # an excluded (scored) volume never enters, pseudo-labels included
    other, ph2 = _series(data_root, "p2", "Q", seed=4)
    _annotate(store, other, ph2, range(other.shape[0]))
    table, stats = _prepare(store, data_root, tmp_path / "x", pseudo_labels="rule",
                            exclude_volumes=[other.volume_id])
    assert other.volume_id not in set(table.Volume) and stats["excluded_volumes"] == [other.volume_id]


def test_dataset_check_and_summary_for_one_patient(data_root, tmp_path):
    from core.models import get_spec

    spec = get_spec("lung_localizer")
    assert "No lung boxes annotated" in spec.dataset_check(data_root)
    store = BoxStore(data_root.parent / "annotations" / "lung_bbox.csv")
    volume, ph = _series(data_root, "p1", "P", seed=5)
    lung = [z for z in range(volume.shape[0]) if not np.isnan(ph.boxes[z]).any()]
    confirmed = _annotate(store, volume, ph, lung[:4])
    proposed = _annotate(store, volume, ph, lung[4:], annotator="auto")
    assert spec.dataset_check(data_root) == ""  # one series is no longer refused
    text = spec.dataset_summary(data_root, spec.preset_settings("quick"))
    assert f"{len(confirmed)} confirmed" in text
    assert f"{len(proposed)} unconfirmed proposal(s) left out" in text
    assert "block of the top annotated slices" in text and "1 series" in text
    text = spec.dataset_summary(data_root, {"include_proposals": True, "pseudo_labels": "rule"})
    assert "included" in text and "Pseudo-labels" in text
    assert "one series cannot be split by patient" in spec.dataset_summary(data_root, {"split": "patient"})


def test_profile_head_reads_back_the_box_it_was_given():
    import torch

    from core.models.lung_localizer.net import (
        build_model,
        interval_coverage,
        interval_from_profile,
        model_args,
    )
    from core.models.lung_localizer.spec import DEFAULTS

    lo, hi = torch.tensor([10.3, 0.0, 40.0]), torch.tensor([90.7, 128.0, 127.5])
    back = interval_from_profile(interval_coverage(lo, hi, 32, 4.0), 4.0)
    torch.testing.assert_close(torch.stack(back), torch.stack([lo, hi]))
    assert "head" not in model_args(DEFAULTS)  # reference checkpoints keep their constructor arguments
    args = model_args({**DEFAULTS, "backbone": "resnet18", "image_size": 64, "head": "profile"})
    model = build_model(**args)
    x = torch.randn(3, 1, 64, 64)
    boxes = model(x)
    assert boxes.shape == (3, 4) and (boxes >= 0).all() and (boxes <= 64).all()
    loss, pred = model.profile_loss(x, torch.tensor([[8.0, 8, 40, 50]] * 3), torch.tensor([1.0, 0.3, 0.3]))
    assert loss.ndim == 0 and loss > 0 and pred.shape == (3, 4)
    with pytest.raises(ValueError, match="resnet18 or resnet50"):
        model_args({**DEFAULTS, "backbone": "ensemble", "head": "profile"})


def test_wide_augmentation_flips_and_moves_the_box_with_the_lungs():
    import torch

    from core.models.lung_localizer.data import Augmentation, augment_batch, draw_augmentation
    from core.models.lung_localizer.spec import WIDE_AUGMENTATION

    aug = Augmentation.from_settings(WIDE_AUGMENTATION)
    assert aug.translate == 0.25 and aug.scale == 0.3 and aug.flip
    images = torch.zeros(24, 1, 64, 64)
    images[:, :, 20:40, 10:30] = 1.0  # a bright block off-centre: x 10..30, y 20..40
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]] * 24)
    draws = [draw_augmentation(aug, seed, 64) for seed in range(24)]
    out, moved = augment_batch(images, boxes, draws)
    flips = [d.pixels.flip for d in draws]
    assert 0 < sum(flips) < 24  # some slices flipped, some not
    for image, box in zip(out, moved, strict=True):
        ys, xs = torch.nonzero(image[0] > 0.6, as_tuple=True)
        bright = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert (box[:2] <= bright[:2] + 1.5).all() and (box[2:] >= bright[2:] - 1.5).all()  # encloses
        assert (box[2:] - box[:2] <= (bright[2:] - bright[:2]) * 1.25 + 2).all()  # and stays tight
    centres = (moved[:, 0] + moved[:, 2]) / 2
    assert centres.max() - centres.min() > 20  # positions spread over the field
