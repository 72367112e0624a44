"""The Train page's decisions (core.train_form): the form from the spec, the data-set list, the jobs table."""

from __future__ import annotations

import pytest

from core import train_form
from tests.test_jobs import write_tiny_prepared


def test_setting_fields_follow_the_defaults_types():
    from core.models import get_spec

    spec = get_spec("lung_localizer")
    fields = {f.key: f for f in train_form.setting_fields(spec)}
    assert "device" not in fields  # offered on its own
    assert fields["backbone"].kind == "choice" and "resnet18" in fields["backbone"].options
    assert fields["augment"].kind == "checkbox" and fields["augment"].default is True
    assert fields["max_epochs"].kind == "int" and fields["max_epochs"].default == 100
    assert fields["lr"].kind == "float" and fields["lr"].step == pytest.approx(1e-5)
    assert fields["weights_path"].kind == "text"
    assert set(fields) == set(spec.defaults) - {"device"}


def test_changed_settings_keeps_only_real_changes():
    defaults = {"lr": 1e-4, "max_epochs": 100, "augment": True, "backbone": "resnet50"}
    values = {"lr": 0.0001, "max_epochs": 3, "augment": True, "backbone": "resnet18"}
    assert train_form.changed_settings(defaults, values) == {"max_epochs": 3, "backbone": "resnet18"}
    assert train_form.changed_settings({"lr": 0.5}, {"lr": 1}) == {"lr": 1.0}


def test_candidate_datasets_find_prepared_lung_folders(tmp_path):
    write_tiny_prepared(tmp_path / "prepared" / "a", n_train=1, n_val=1)
    (tmp_path / "xray" / "train" / "NORMAL").mkdir(parents=True)
    (tmp_path / "xray" / "val").mkdir()
    (tmp_path / ".hidden").mkdir()
    lung = train_form.candidate_datasets("lung_localizer", tmp_path)
    assert [c.label for c in lung] == ["prepared/a", "data root (its annotated slices)"]
    assert lung[-1].path == tmp_path
    assert train_form.candidate_datasets("lung_localizer", tmp_path / "missing") == []
    unknown = [c.label for c in train_form.candidate_datasets("some_new_family", tmp_path)]
    assert unknown == [".", "prepared", "xray"]


def test_metric_series_split_losses_from_metrics():
    rows = [{"epoch": 0, "train_loss": 1.0, "val_loss": 0.9, "val_iou": 0.5, "val_iou_p10": 0.1, "lr": 1e-4,
             "time": "t"},
            {"epoch": 1, "train_loss": 0.5, "val_loss": None, "val_iou": 0.7}]
    losses, others = train_form.metric_series(rows)
    assert losses == {"train_loss": ([0, 1], [1.0, 0.5]), "val_loss": ([0], [0.9])}
    assert others == {"val_iou": ([0, 1], [0.5, 0.7])}


def test_format_duration():
    texts = [train_form.format_duration(s) for s in (None, 5.4, 185, 7440)]
    assert texts == ["–", "5 s", "3 min 05 s", "2 h 04 min"]
