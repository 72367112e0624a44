"""Training the two-stage VNet for real on small atrium phantoms (CPU): learning, prediction, export,
reproducibility and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.io.writers import write_nifti, write_nrrd
from core.train.cli import train_from_cli

# Small enough for a 2-core CPU: 3x3x3 convolutions, two levels, the locator at half resolution.
SMALL = [
    "width=4",
    "locator_width=4",
    "levels=2",
    "kernel_size=3",
    "locator_scale=0.5,0.5,0.5",
    "buffer=4",
    "batch_size=2",
    "locator_batch_size=4",
    "lr=0.003",
    "locator_lr=0.003",
    "noise_std=0.02",
    "num_workers=0",
    "device=cpu",
]


def _phantoms(folder: Path, seeds, shape) -> Path:
    from core.models.vnet.demo import atrium_phantom

    for i, seed in enumerate(seeds):
        ph = atrium_phantom(shape, (2.0, 1.0, 1.0), seed)
        write = write_nifti if i == 0 else write_nrrd  # both formats in one set
        suffix = ".nii.gz" if i == 0 else ".nrrd"
        write(np.rint(ph.image).astype(np.uint8), folder / f"case{i}" / f"image{suffix}", spacing=ph.spacing)
        write((ph.label * 255).astype(np.uint8), folder / f"case{i}" / f"label{suffix}", spacing=ph.spacing)
    return folder


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine two threads per process contend (10x slower here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ckpt(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.train
def test_two_stages_learn_held_out_cases_and_predict_masks_in_place(tmp_path):
    """Held-out Dice >= 0.85 through both stages, and the locator's crop holds >= 99 % of the truth."""
    from core.infer import load_predictor, predict_to_dir
    from core.io import load_volume
    from core.models.vnet.metrics import case_metrics

    data = _phantoms(tmp_path / "data", range(100, 108), (24, 56, 56))
    run = tmp_path / "run"
    train_from_cli("vnet", data, run, [*SMALL, "locator_epochs=40", "max_epochs=16"], preset="quick")

    evaluation = json.loads((run / "evaluation.json").read_text())
    summary = evaluation["summary"]
    assert summary["cases"] == 2
    assert summary["dice_mean"] >= 0.85, summary
    assert summary["crop_recall_min"] >= 0.99, summary
    row = evaluation["cases"][0]
    assert {"dice", "iou", "precision", "recall", "hausdorff_mm", "hd95_mm", "crop_recall"} <= set(row)
    assert row["hausdorff_mm"] is not None and row["hausdorff_mm"] < 10
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"val_dice", "val_iou", "val_precision", "val_recall"} <= set(metrics[-1])

    ckpt = _ckpt(Path(json.loads((run / "result.json").read_text())["best_checkpoint"]))
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("model.locator.") for k in keys) and any(
        k.startswith("model.segmenter.") for k in keys
    )
    meta = ckpt["slicewise"]
    assert meta["family"] == "vnet" and meta["pad_size"] == [24, 56, 56] and meta["buffer"] == 4
    assert meta["locator_scale"] == [0.5, 0.5, 0.5] and len(meta["crop_size"]) == 3

    held_out = meta["split"]["val"][0]
    image = next((data / held_out).glob("image*"))
    volume = load_volume(image)
    prediction = load_predictor(run).predict(volume)
    truth = load_volume(next((data / held_out).glob("label*"))).array > 0
    assert prediction.mask.shape == volume.shape and prediction.mask.dtype == np.uint8
    assert case_metrics(prediction.mask, truth, volume.spacing)["dice"] >= 0.85

    # a bigger volume than the training pad size: padded around, still predicted, same shape back
    bigger = np.pad(volume.array, ((4, 4), (10, 10), (12, 12)))
    from core.volume import Volume

    big = load_predictor(run).predict(Volume(bigger, spacing=volume.spacing))
    assert big.mask.shape == bigger.shape
    assert case_metrics(big.mask[4:-4, 10:-10, 12:-12], truth, volume.spacing)["dice"] >= 0.8

    out = tmp_path / "predicted"
    predict_to_dir(run, image, out, progress=lambda _: None)
    written = load_volume(next(out.glob("*_mask.nrrd")))
    assert written.shape == volume.shape and np.allclose(written.spacing, volume.spacing)
    assert np.allclose(written.origin, volume.origin) and np.array_equal(
        written.array > 0, prediction.mask > 0
    )


@pytest.mark.train
def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path):
    import torch

    data = _phantoms(tmp_path / "data", range(200, 204), (12, 32, 32))
    tiny = [
        *SMALL,
        "levels=1",
        "locator_epochs=2",
        "loss=hybrid",
        "boundary_start_epoch=1",
        "boundary_step=0.5",
    ]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train_from_cli("vnet", data, a, [*tiny, "max_epochs=2"], preset="quick")
    train_from_cli("vnet", data, b, [*tiny, "max_epochs=2"], preset="quick")
    train_from_cli("vnet", data, c, [*tiny, "max_epochs=1"], preset="quick")
    train_from_cli("vnet", data, c, ["max_epochs=2"], resume=True)

    def numbers(run: Path) -> list[dict]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("epoch_time_s", "time")} for r in rows]

    assert numbers(a) == numbers(b)
    assert numbers(a)[-1] == numbers(c)[-1]
    assert numbers(a)[-1]["boundary_weight"] == pytest.approx(0.5)
    for other in (b, c):
        wa, wo = (
            _ckpt(a / "checkpoints" / "last.ckpt")["state_dict"],
            _ckpt(other / "checkpoints" / "last.ckpt")["state_dict"],
        )
        assert wa.keys() == wo.keys()
        assert all(torch.equal(wa[k], wo[k]) for k in wa), other.name
    assert json.loads((a / "evaluation.json").read_text()) == json.loads((b / "evaluation.json").read_text())
