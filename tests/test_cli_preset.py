"""`python -m core train --preset NAME` (SPEC 9): every family's `quick` preset, named errors otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.models import QUICK_PRESET, list_specs
from core.train.cli import TrainSettingsError, resolve_settings

REPO = Path(__file__).resolve().parents[1]


FAMILIES = ["lung_localizer", "xray_classifier", "ct_classifier", "vnet", "brain_mri"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_a_quick_preset_that_the_cli_resolves(family, tmp_path):
    spec = next(s for s in list_specs() if s.name == family)
    settings = resolve_settings(family, tmp_path / "run", ["seed=3"], preset=QUICK_PRESET)
    assert settings == {**spec.preset_settings(QUICK_PRESET), "seed": 3}


def test_an_unknown_preset_or_a_bad_setting_is_refused_on_the_command_line(tmp_path):
    with pytest.raises(TrainSettingsError, match="unknown preset 'fastest'"):
        resolve_settings("lung_localizer", tmp_path / "run", [], preset="fastest")
    result = subprocess.run(
        [sys.executable, "-m", "core", "train", "--family", "vnet", "--data", str(tmp_path), "--out",
         str(tmp_path / "run"), "--preset", "quick", "--set", "max_epochs=-3"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "max_epochs" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
