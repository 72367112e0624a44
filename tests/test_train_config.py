"""Training settings: types, choices and ranges checked before anything trains (CLI, jobs, form)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.models import get_spec, list_specs
from core.train.config import SettingsError, apply_overrides, check_range, range_text, validate_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("key, value, words", [
    ("max_epochs", -3, "max_epochs must be >= 1"),
    ("max_epochs", 0, "max_epochs must be >= 1"),
    ("batch_size", 0, "batch_size must be >= 1"),
    ("locator_batch_size", -1, "must be >= 1"),
    ("lr", 0.0, "lr must be > 0"),
    ("locator_lr", -1e-4, "must be > 0"),
    ("num_workers", -1, "num_workers must be >= 0"),
    ("val_fraction", 0.0, "in (0, 1)"),
    ("val_fraction", 1.0, "in (0, 1)"),
    ("dropout", 1.0, "in [0, 1)"),
    ("lr_factor", 1.0, "in (0, 1)"),
    ("early_stop_patience", -1, ">= 0"),
    ("image_size", 0, ">= 1"),
    ("lr", float("nan"), "finite"),
])
def test_out_of_range_values_are_refused_with_the_range(key, value, words):
    with pytest.raises(SettingsError, match=key) as caught:
        check_range(key, value)
    assert words in str(caught.value)


@pytest.mark.parametrize("key, value", [
    ("max_epochs", 1), ("lr", 1e-9), ("num_workers", 0), ("val_fraction", 0.5), ("dropout", 0.0),
    ("eval_crop_fraction", 1.0), ("hu_min", -1000.0), ("seed", 0), ("augment", False), ("name", "x"),
])
def test_values_in_range_pass(key, value):
    check_range(key, value)


def test_range_text_for_the_form():
    assert range_text("max_epochs", 5) == "must be >= 1"
    assert range_text("val_fraction", 0.2) == "must be in (0, 1)"
    assert range_text("hu_min", -1000.0) == "" and range_text("augment", True) == ""


def test_every_familys_defaults_and_presets_are_in_range():
    for spec in list_specs():
        for preset in spec.preset_names():
            validate_settings(spec, spec.preset_settings(preset))


def test_overrides_and_saved_settings_are_range_checked():
    spec = get_spec("lung_localizer")
    with pytest.raises(SettingsError, match="max_epochs=-3 is out of range"):
        apply_overrides(spec, ["max_epochs=-3"])
    with pytest.raises(SettingsError, match="batch_size=0 is out of range"):
        validate_settings(spec, {"batch_size": 0})
    assert apply_overrides(spec, ["max_epochs=2"])["max_epochs"] == 2


def test_cli_refuses_a_negative_epoch_count_before_training(tmp_path):
    cmd = [sys.executable, "-m", "core", "train", "--family", "lung_localizer", "--data", str(tmp_path),
           "--out", str(tmp_path / "run"), "--set", "max_epochs=-3"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: setting max_epochs=-3 is out of range: max_epochs must be >= 1")
    assert not (tmp_path / "run").exists()
    assert "Traceback" not in result.stderr
