"""Predict & review for image classifiers: core.class_review (rows, sorting, overlays, figure, CSV,
evaluation numbers) and the page itself (AppTest) with a small X-ray classifier checkpoint."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from core import class_review


def _rows():
    classes = ["NORMAL", "PNEUMONIA"]
    return [
        class_review.make_row(
            Path("/d/test/NORMAL/a.png"), "NORMAL", {"NORMAL": 0.9, "PNEUMONIA": 0.1}, classes
        ),
        class_review.make_row(
            Path("/d/test/NORMAL/b.png"), "PNEUMONIA", {"NORMAL": 0.2, "PNEUMONIA": 0.8}, classes
        ),
        class_review.make_row(
            Path("/d/test/PNEUMONIA/c.png"), "PNEUMONIA", {"NORMAL": 0.4, "PNEUMONIA": 0.6}, classes
        ),
        class_review.make_row(Path("/d/other/d.png"), "NORMAL", {"NORMAL": 0.7, "PNEUMONIA": 0.3}, classes),
    ]


def test_rows_know_the_true_class_from_the_folder_and_sort():
    rows = _rows()
    assert [r["true"] for r in rows] == ["NORMAL", "NORMAL", "PNEUMONIA", None]
    assert [r["correct"] for r in rows] == [True, False, True, None]
    names = lambda rs: [r["name"] for r in rs]  # noqa: E731
    assert names(class_review.sort_rows(rows, "confidence")) == ["a.png", "b.png", "d.png", "c.png"]
    # wrong first, then unknown truth, then correct from the least confident
    assert names(class_review.sort_rows(rows, "error")) == ["b.png", "d.png", "c.png", "a.png"]
    assert names(class_review.sort_rows(rows, "class")) == ["a.png", "d.png", "b.png", "c.png"]
    with pytest.raises(ValueError, match="unknown sort"):
        class_review.sort_rows(rows, "colour")
    assert class_review.caption(rows[1]) == "PNEUMONIA 80% · true NORMAL ✗"
    assert class_review.summary_of(rows) == {"images": 4, "with_truth": 3, "accuracy": pytest.approx(2 / 3)}


def test_csv_and_evaluation_rows():
    table = list(csv.DictReader(io.StringIO(class_review.rows_csv(_rows()))))
    assert len(table) == 4 and table[1]["predicted"] == "PNEUMONIA" and table[3]["true"] == ""
    assert {"p_NORMAL", "p_PNEUMONIA", "probability", "path"} <= set(table[0])
    evaluation = {
        "split": "test",
        "summary": {"accuracy": 0.9, "auc": 0.95, "images": 2},
        "confusion_matrix": {"classes": ["NORMAL", "PNEUMONIA"], "matrix": [[1, 0], [0, 1]]},
        "roc": {"fpr": [0, 0, 1], "tpr": [0, 1, 1], "auc": 1.0},
        "cases": [
            {
                "path": "/x/test/NORMAL/a.png",
                "file": "test/NORMAL/a.png",
                "true": "NORMAL",
                "predicted": "NORMAL",
                "probability": 0.9,
                "correct": True,
                "p_NORMAL": 0.9,
            }
        ],
    }
    numbers = class_review.evaluation_numbers(evaluation)
    assert numbers["confusion"][1] == {"true \\ predicted": "PNEUMONIA", "NORMAL": 0, "PNEUMONIA": 1}
    assert len(numbers["roc"]) == 3 and numbers["auc"] == 1.0 and numbers["summary"]["accuracy"] == 0.9
    rows = class_review.rows_from_evaluation(evaluation)
    assert rows[0]["name"] == "test/NORMAL/a.png" and rows[0]["correct"] is True
    assert class_review.evaluation_numbers({}) == {
        "summary": {},
        "split": "test",
        "confusion": [],
        "roc": [],
        "auc": None,
    }


def test_overlay_figure_and_thumbnail():
    from PIL import Image

    image = np.tile(np.linspace(0, 4000, 300, dtype=np.float32), (200, 1))[None]
    heat = np.zeros((1, 200, 300), np.float32)
    heat[0, 50:80, 200:240] = 1.0
    plain = class_review.overlay(image, None)
    assert plain.shape == (200, 300, 3) and (plain[..., 0] == plain[..., 2]).all()
    hot = class_review.overlay(image, heat, opacity=1.0)
    assert tuple(hot[60, 220]) == (128, 0, 0)  # jet's top is dark red
    np.testing.assert_array_equal(class_review.overlay(image, heat, opacity=0.0), plain)
    inferno = class_review.overlay(image, heat, opacity=1.0, cmap="inferno", contour_percent=2)
    assert (inferno[50, 220] == 255).all()  # the top-2 % region's outline
    with pytest.raises(ValueError, match="differs"):
        class_review.overlay(image, heat[:, :10])
    assert class_review.thumbnail(hot, 150).shape == (100, 150, 3)
    png = class_review.figure_png(image, heat, "PNEUMONIA 80%")
    figure = Image.open(io.BytesIO(png))
    assert figure.format == "PNG" and figure.width >= 600 and figure.height == 200 + 28


def test_list_images_and_folders(tmp_path):
    from core.io.writers import write_png

    for rel in ("x/test/NORMAL/a.png", "x/test/PNEUMONIA/b.png", "x/notes.txt", "y/c.jpg"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".png"):
            write_png(np.zeros((4, 4), np.uint8), path)
        else:
            path.write_text("x")
    assert [p.name for p in class_review.list_images(tmp_path / "x")] == ["a.png", "b.png"]
    assert class_review.list_images(tmp_path / "x" / "test" / "NORMAL" / "a.png")[0].name == "a.png"
    folders = {str(p.relative_to(tmp_path)) for p in class_review.image_folders(tmp_path)}
    assert {"x/test", "x/test/NORMAL", "y"} <= folders


# ---------------------------------------------------------------- the page (AppTest)


def _checkpoint(run: Path, data: Path) -> Path:
    """A run folder as the engine writes it, with an untrained ResNet-18 (the page's wiring, not learning)."""
    import torch

    from core.models.xray_classifier.net import build_model

    args = {"backbone": "resnet18", "n_classes": 2, "image_size": 64}
    model = build_model(**args)
    ckpt = run / "checkpoints" / "epoch000-val_acc0.50000.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save(
        {
            "slicewise": {
                "format": 1,
                "family": "xray_classifier",
                "model_args": args,
                "settings": {},
                "classes": ["NORMAL", "PNEUMONIA"],
                "preprocess": {"image_size": 64, "eval_crop_fraction": 1.0},
            },
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        ckpt,
    )
    (run / "config.json").write_text(json.dumps({"family": "xray_classifier"}))
    cases = [
        {
            "path": str(p),
            "file": str(p.relative_to(data)),
            "true": p.parent.name,
            "predicted": "NORMAL",
            "probability": 0.6,
            "correct": p.parent.name == "NORMAL",
        }
        for p in sorted((data / "test").rglob("*.png"))
    ]
    (run / "evaluation.json").write_text(
        json.dumps(
            {
                "split": "test",
                "summary": {
                    "accuracy": 0.5,
                    "auc": 0.5,
                    "sensitivity": 0.0,
                    "specificity": 1.0,
                    "images": len(cases),
                },
                "confusion_matrix": {"classes": ["NORMAL", "PNEUMONIA"], "matrix": [[1, 0], [1, 0]]},
                "roc": {"fpr": [0, 1], "tpr": [0, 1], "auc": 0.5},
                "cases": cases,
            }
        )
    )
    return ckpt


def test_predict_page_shows_the_test_numbers_and_a_gallery_with_heatmaps(data_root, tmp_path):
    from streamlit.testing.v1 import AppTest

    from core import predictions
    from core.io import load_volume
    from core.models.xray_classifier.synthetic import write_xray_folder

    data = data_root / "xray"
    write_xray_folder(data, 0, (("train", 1), ("test", 1)), 64, progress=lambda _m: None)
    runs = tmp_path / "runs"
    _checkpoint(runs / "run1", data)
    at = AppTest.from_file(
        str(Path(__file__).resolve().parents[1] / "pages" / "predict.py"), default_timeout=120
    ).run()
    assert not at.exception, at.exception
    assert [m.label for m in at.metric][:2] == ["Accuracy", "ROC AUC"]
    open_buttons = [b for b in at.button if b.key and b.key.startswith("xr_open_")]
    assert len(open_buttons) == 2  # one per test image
    open_buttons[0].click().run()
    assert not at.exception, at.exception
    assert any(b.key == "xr_viewer" for b in at.button)  # the opened image, with "Open in the Viewer"
    for path in sorted((data / "test").rglob("*.png")):  # each gallery prediction is stored: the Viewer
        volume = load_volume(path)  # shows its heatmap as a layer
        (found,) = predictions.list_prediction_sets(volume.volume_id, runs)
        heat = predictions.load_prediction(found).heatmap
        assert heat.shape == volume.shape and heat.max() == pytest.approx(1.0)
