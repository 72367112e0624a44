"""The lung localizer finds lungs, not the place where lungs were in training (issue 9, item 4).

Trained (for real, CPU, 64 px) on phantom slices that all sit near the top-left corner of the field
at one size, then scored on new phantoms shrunk to 0.55-1.0 of the field and placed anywhere. The
quick preset (profile head, wide augmentation) must find them; the reference head with the old
narrow augmentation, trained the same way, and the constant mean box must not come close.
bench/bench_localizer.py measures the same on real CT (LIDC-IDRI-0001) in both directions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.models.lung_localizer.synthetic import placed_phantom_slices, write_prepared
from core.train.cli import train_from_cli

SIZE = 64
COMMON = ["pretrained=false", "num_workers=0", f"image_size={SIZE}", f"prepare_size={SIZE}", "batch_size=16",
          "lr=1e-3", "save_top_k=1", "max_epochs=8"]


def _iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    import torch

    from core.models.lung_localizer.train import box_iou

    return box_iou(torch.as_tensor(pred), torch.as_tensor(truth)).numpy()


def _score(run, held_out) -> float:
    from core.infer import load_predictor
    from core.volume import Volume

    predictor = load_predictor(json.loads((run / "result.json").read_text())["best_checkpoint"], device="cpu")
    ious = [_iou(predictor.predict_volume(Volume(g.hu, spacing=(2.5, 2.8, 2.8), modality="CT")), g.boxes)
            for g in held_out]
    return float(np.concatenate(ious).mean())


@pytest.mark.train
def test_trained_in_one_corner_it_finds_lungs_anywhere(tmp_path):
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    corner = {"size": SIZE, "zoom": (0.7, 0.75), "where": (0.0, 0.15)}
    train = [placed_phantom_slices(s, **corner) for s in range(0, 12)]
    val = [placed_phantom_slices(s, **corner) for s in range(50, 52)]
    data = write_prepared(tmp_path / "prepared", train, val, SIZE)
    held_out = [placed_phantom_slices(s, SIZE, zoom=(0.55, 1.0)) for s in range(300, 306)]
    truth = np.concatenate([g.boxes for g in held_out])
    mean_box = np.concatenate([g.boxes for g in train]).mean(axis=0)
    base = float(_iou(np.broadcast_to(mean_box, truth.shape).copy(), truth).mean())

    quick = tmp_path / "quick"
    train_from_cli("lung_localizer", data, quick, COMMON, preset="quick")
    reference = tmp_path / "reference"
    train_from_cli("lung_localizer", data, reference, [*COMMON, "backbone=resnet18"])
    iou_quick, iou_reference = _score(quick, held_out), _score(reference, held_out)
    print(f"shifted/scaled phantoms: quick (profile head, wide augmentation) {iou_quick:.3f}, "
          f"reference head + narrow augmentation {iou_reference:.3f}, mean box {base:.3f}")
    assert iou_quick >= 0.7
    assert iou_quick >= base + 0.3
    assert iou_quick >= iou_reference + 0.2
