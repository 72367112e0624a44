"""Predict & review for masks: the generic decisions (core.mask_review) and the page on a tiny trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.io.writers import write_nrrd

REPO = Path(__file__).resolve().parents[1]


def test_label_beside_an_image(tmp_path):
    from core.mask_review import find_case_volume, label_beside

    for name in (
        "a/image.nrrd",
        "a/label.nrrd",
        "b/lgemri.nrrd",
        "b/laendo.nrrd",
        "c/image.nrrd",
        "flat/x_image.nii.gz",
        "flat/x_label.nii.gz",
        "flat/y_image.nrrd",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert label_beside(tmp_path / "a/image.nrrd") == tmp_path / "a/label.nrrd"
    assert label_beside(tmp_path / "b/lgemri.nrrd") == tmp_path / "b/laendo.nrrd"
    assert label_beside(tmp_path / "c/image.nrrd") is None
    assert label_beside(tmp_path / "flat/x_image.nii.gz") == tmp_path / "flat/x_label.nii.gz"
    assert label_beside(tmp_path / "flat/y_image.nrrd") is None
    assert label_beside(tmp_path / "a/label.nrrd") is None
    paths = [tmp_path / "a/label.nrrd", tmp_path / "a/image.nrrd", tmp_path / "flat/x_image.nii.gz"]
    assert find_case_volume("a", paths) == tmp_path / "a/image.nrrd"
    assert find_case_volume("x", paths) == tmp_path / "flat/x_image.nii.gz"
    assert find_case_volume("zzz", paths) is None


def test_slice_dice_worst_slice_strip_and_order():
    from core.mask_review import (
        case_table,
        cases_worst_first,
        dice_strip,
        fullest_slice,
        slice_dice,
        worst_slice,
    )

    truth = np.zeros((4, 4, 4), np.uint8)
    truth[1:3, 1:3, 1:3] = 1
    pred = truth.copy()
    pred[2, 1, 1] = 0  # slice 2: 3 of 4 voxels
    dice = slice_dice(pred, truth)
    assert np.isnan(dice[0]) and dice[1] == 1.0 and dice[2] == pytest.approx(6 / 7)
    assert worst_slice(pred, truth) == 2
    assert fullest_slice(pred, truth) == 1 and fullest_slice(np.zeros_like(truth), None) == 0
    strip = dice_strip(dice, current=1, row=3, width=5)
    assert strip.shape == (12, 5, 3) and strip.dtype == np.uint8
    rows = cases_worst_first({"cases": [{"case": "a", "dice": 0.9}, {"case": "b", "dice": 0.5}, {"x": 1}]})
    assert [r["case"] for r in rows] == ["b", "a"] and case_table(rows)[0]["Dice"] == 0.5


def test_mask_export_bytes_reload_in_place(tmp_path):
    from core.io import load_volume
    from core.mask_review import EXPORT_FORMATS, mask_file_bytes
    from core.volume import Volume

    mask = np.zeros((3, 5, 6), np.uint8)
    mask[1, 2:4, 1:5] = 1
    volume = Volume(np.zeros(mask.shape), spacing=(3.0, 0.8, 0.8), origin=(5.0, -7.0, 12.5))
    for suffix in EXPORT_FORMATS.values():
        path = tmp_path / f"m{suffix}"
        path.write_bytes(mask_file_bytes(volume, mask, suffix))
        back = load_volume(path)
        assert np.array_equal(back.array, mask) and np.allclose(back.origin, volume.origin, atol=1e-4)


@pytest.mark.train
def test_predict_page_reviews_a_vnet_mask(tmp_path, data_root, monkeypatch):
    import torch
    from streamlit.testing.v1 import AppTest

    from core.models.vnet.demo import atrium_phantom
    from core.train.cli import train_from_cli

    for i in range(4):
        ph = atrium_phantom((12, 32, 32), (2.0, 1.0, 1.0), 300 + i)
        write_nrrd(
            np.rint(ph.image).astype(np.uint8), data_root / f"case{i}" / "image.nrrd", spacing=ph.spacing
        )
        write_nrrd(ph.label * 255, data_root / f"case{i}" / "label.nrrd", spacing=ph.spacing)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_from_cli(
            "vnet",
            data_root,
            tmp_path / "runs" / "tiny",
            [
                "width=2",
                "locator_width=2",
                "levels=1",
                "kernel_size=3",
                "locator_scale=0.5,0.5,0.5",
                "buffer=2",
                "locator_epochs=2",
                "max_epochs=1",
                "num_workers=0",
                "device=cpu",
            ],
            preset="quick",
        )
    finally:
        torch.set_num_threads(threads)
    at = AppTest.from_file(str(REPO / "pages" / "predict.py"), default_timeout=120).run()
    assert not at.exception
    assert any("worst Dice first" in e.label for e in at.expander)
    at.button(key="predict_run").click().run()
    assert not at.exception
    labels = {m.label for m in at.metric}
    assert {"Dice", "IoU", "Hausdorff", "HD95"} <= labels
    assert at.slider(key="mask_slice").value >= 1
