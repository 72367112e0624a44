"""Train page: the data-set check reads the settings chosen on the page (include_proposals,
exclude_volumes), so Start is disabled exactly when training would stop on the data. AppTest over
a real DICOM series and a real annotation CSV."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.settings import annotations_path
from tests.test_train_form import _annotated_series

REPO = Path(__file__).resolve().parents[2]
TRAIN_PAGE = str(REPO / "pages" / "train.py")
QUICK = "train_set_lung_localizer_quick_"


def _start(at: AppTest):
    return at.button(key="train_start_lung_localizer")


def test_start_waits_for_confirmed_boxes_unless_the_settings_say_otherwise(data_root):
    volume = _annotated_series(data_root, "p1", "P1", ["auto", "auto", "model:run_1"])
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="train_data_lung_localizer").value.label == "annotated slices of the data root"
    assert at.radio(key="train_preset_lung_localizer").value == "quick"
    errors = [e.value for e in at.error]
    refused = f"{annotations_path()}: no confirmed box to train on"
    assert any(e.startswith(refused) and "include_proposals" in e for e in errors), errors
    assert _start(at).disabled

    at.checkbox(key=QUICK + "include_proposals").check().run()  # train on the proposals: allowed
    assert not at.exception and not at.error
    assert not _start(at).disabled
    assert "3 unconfirmed proposal(s) included" in "\n".join(i.value for i in at.info)

    at.text_input(key=QUICK + "exclude_volumes").set_value(volume.volume_id).run()  # nothing left
    errors = [e.value for e in at.error]
    excluded = "every annotated volume is excluded by the setting exclude_volumes"
    assert any(excluded in e and volume.volume_id in e for e in errors), errors
    assert _start(at).disabled
