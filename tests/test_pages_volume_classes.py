"""Viewer's four-sequence tab and Predict & review's volume_classes view, with AppTest on the demo data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo(data_root):
    from core.demo import write_demo_data

    write_demo_data(data_root / "demo", seed=0, small=True, progress=lambda _m: None)
    return data_root / "demo"


def _captions(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.caption)


def test_viewer_shows_the_four_sequences_of_a_brain_patient(demo):
    from core.multi_sequence import find_patient_folders

    [first, *_] = find_patient_folders(demo)
    at = AppTest.from_file(str(REPO / "pages" / "viewer.py"), default_timeout=90).run()
    label = next(o for o in at.selectbox(key="viewer_volume").options if f"{first.name}_flair" in o)
    at.selectbox(key="viewer_volume").set_value(label).run()
    assert not at.exception, at.exception
    assert "four co-registered sequences" in _captions(at)


def test_predict_review_of_a_brain_checkpoint_lists_patients_and_results(demo, tmp_path):
    run = tmp_path / "runs" / "brain-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"not read until Grade is pressed")
    (run / "config.json").write_text(json.dumps({"family": "brain_mri"}))
    (run / "result.json").write_text(json.dumps({"best_checkpoint": str(run / "checkpoints" / "best.ckpt")}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(
        {"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "train_acc": 0.5 + e / 10,
         "val_acc": 0.5 + e / 12}) + "\n" for e in range(3)))
    (run / "evaluation.json").write_text(json.dumps({
        "summary": {"patient_accuracy": 0.75, "patients": 4},
        "confusion_matrix": {"classes": ["LGG", "HGG"], "matrix": [[2, 0], [1, 1]]},
        "cases": [{"id": "p1", "true": "HGG", "predicted": "LGG", "p(HGG)": 0.45}]}))
    at = AppTest.from_file(str(REPO / "pages" / "predict.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="predict_patient").options, "no patient folder offered"
    assert any(b.label == "Grade this patient" for b in at.button)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics.get("patient accuracy") == "0.750"
