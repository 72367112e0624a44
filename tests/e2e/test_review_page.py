"""Annotations page: AppTest (empty store, populated store and filters, export, import report,
prepare with stats), and the real app in Chromium: the table shows a box saved through BoxStore,
selecting its row and pressing "Open on the Annotate page" lands on that slice.
Screenshots go to /tmp/shots/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import annotate
from core.annotations import BoxStore
from core.io import load_volume
from core.io.writers import write_dicom_series
from core.phantoms import chest_ct_phantom
from tests.e2e.conftest import run_app

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "review.py")
SHOTS = Path("/tmp/shots")
N_SLICES = 10


def _write_case(root: Path, name: str = "case0", seed: int = 3, patient: str = "P-0"):
    ph = chest_ct_phantom((N_SLICES, 64, 64), (5.0, 2.8, 2.8), seed=seed)
    folder = root / "ct" / name
    write_dicom_series(np.round(ph.hu).astype(np.int16), folder, spacing=(5.0, 2.8, 2.8), patient_id=patient)
    return load_volume(folder)


def _store(tmp_path: Path) -> BoxStore:
    return BoxStore(tmp_path / "annotations" / "lung_bbox.csv")


def _texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.info, *at.error, *at.caption, *at.markdown, *at.success, *at.warning)]
    return "\n".join(str(p) for p in parts)


def _app() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=60)


def test_empty_store(data_root):
    at = _app().run()
    assert not at.exception
    assert "No annotated slice yet" in _texts(at)
    assert at.button(key="review_export").disabled


@pytest.fixture
def populated(data_root, tmp_path):
    """Two series: proposals on the first (one confirmed by dr_a), a hand-drawn box on the second."""
    first = _write_case(data_root, "case0", 3, "P-0")
    second = _write_case(data_root, "case1", 4, "P-1")
    store = _store(tmp_path)
    annotate.propose_for_volume(store, first)
    confirmed = min(annotate.volume_boxes(store, first))
    annotate.confirm_proposal(store, first, confirmed, "dr_a")
    annotate.save_box(store, second, 4, (0.2, 0.25, 0.8, 0.7), "dr_b")
    return store, first, second


def test_populated_store_table_filters_and_progress(populated):
    store, first, _ = populated
    at = _app().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == len(store) and set(table["Annotator"]) == {"auto", "dr_a", "dr_b"}
    assert table["Thumbnail"].str.startswith("data:image/png;base64,").all()
    assert table.loc[table.Annotator == "dr_a", "IoU proposal→final"].iloc[0] == pytest.approx(1.0)
    assert f" / {2 * N_SLICES} slices annotated" in at.get("progress")[0].proto.text
    at.multiselect(key="review_annotators").set_value(["dr_b"]).run()
    table = at.dataframe[0].value
    assert list(table["Annotator"]) == ["dr_b"] and list(table["Slice"]) == [4]
    at.multiselect(key="review_annotators").set_value([]).run()
    at.segmented_control(key="review_status").set_value("Unconfirmed proposals").run()
    table = at.dataframe[0].value
    assert set(table["Status"]) == {"unconfirmed"} and len(table) == len(store) - 2
    at.selectbox(key="review_volume").set_value(first.volume_id).run()
    assert set(at.dataframe[0].value["Volume"]) == {"ct/case0"}
    assert not at.exception


def test_export_writes_the_three_files(populated, data_root, tmp_path):
    at = _app().run()
    out = data_root / "export"  # typed folders must lie under the data root or runs root (core.confine)
    at.text_input(key="review_export_dir").set_value(str(out)).run()
    at.button(key="review_export").click().run()
    assert not at.exception
    assert {p.name for p in out.iterdir()} == {"lung_bbox.csv", "train.csv", "coco.json"}
    assert len(json.loads((out / "coco.json").read_text())["annotations"]) == len(populated[0])
    assert len(at.get("download_button")) == 3


def test_import_report_names_unknown_and_invalid_rows(populated, tmp_path):
    store, first, _ = populated
    csv = ("Image,Xmin,Ymin,Xmax,Ymax\n"
           f"{first.slice_ids[0]},0.1,0.1,0.9,0.9\n"
           "1.2.3.not.here,0.1,0.1,0.5,0.5\n"
           f"{first.slice_ids[1]},0.9,0.1,0.1,0.5\n")
    at = _app().run()
    at.file_uploader(key="review_upload").set_value(("other_site.csv", csv.encode(), "text/csv")).run()
    at.button(key="review_import").click().run()
    assert not at.exception
    text = _texts(at)
    assert "1 box(es) imported, 1 for unknown slices, 1 invalid" in text
    assert "other_site.csv, line 4" in text
    unknown = at.dataframe[-1].value
    assert list(unknown["Image"]) == ["1.2.3.not.here"] and list(unknown["Line"]) == [3]
    assert store.get(first.slice_ids[0])["Annotator"] == "import"


def test_import_of_a_file_without_box_columns_is_an_error(populated):
    at = _app().run()
    at.file_uploader(key="review_upload").set_value(("x.csv", b"Image,Foo\nA,1\n", "text/csv")).run()
    at.button(key="review_import").click().run()
    assert not at.exception
    assert "missing column(s) Xmin" in at.error[0].value


def test_prepare_runs_and_shows_stats(populated, data_root, tmp_path):
    at = _app().run()
    out = data_root / "prepared"  # under the data root (core.confine)
    at.text_input(key="review_prepare_dir").set_value(str(out)).run()
    at.number_input(key="review_size").set_value(32).run()
    at.number_input(key="review_val_fraction").set_value(0.5).run()
    at.button(key="review_prepare").click().run()
    assert not at.exception, at.exception
    stats = json.loads((out / "stats.json").read_text())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Train slices"] == str(stats["n_train"])
    assert metrics["Validation slices"] == str(stats["n_val"])
    assert metrics["Mean"] == f"{stats['mean']:.4f}" and stats["n_val"] >= 1
    assert "patient" in _texts(at)


def test_prepare_error_is_shown(data_root, tmp_path):
    store = _store(tmp_path)
    store.upsert("lost#0", 0.1, 0.1, 0.5, 0.5, volume="lost.nii.gz", slice=0, annotator="x")
    at = _app().run()
    at.text_input(key="review_prepare_dir").set_value(str(data_root / "p")).run()
    at.button(key="review_prepare").click().run()
    assert not at.exception
    assert "Prepare failed" in at.error[0].value and "lost.nii.gz" in at.error[0].value


def test_broken_csv_is_reported(data_root, tmp_path):
    path = tmp_path / "annotations" / "lung_bbox.csv"
    path.parent.mkdir(parents=True)
    path.write_text("Image,Xmin\nA,oops\n")
    at = _app().run()
    assert not at.exception and "line 1" in at.error[0].value


# ------------------------------------------------------------------------------------------ browser


def _click_first_row(page) -> None:
    """Select the first data row of the glide data grid (its row-marker column at the left)."""
    grid = page.get_by_test_id("stDataFrame").first
    grid.wait_for()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 36 + 72 / 2)  # header ~36 px, then a 72 px row


@pytest.mark.e2e
def test_table_row_opens_the_slice_on_the_annotate_page(page, tmp_path):
    root = tmp_path / "data"
    volume = _write_case(root)
    store = _store(tmp_path)
    z = 7
    store.upsert(volume.slice_ids[z], 0.2, 0.25, 0.8, 0.7, volume=volume.volume_id, slice=z, annotator="e2e")
    SHOTS.mkdir(exist_ok=True)
    with run_app(root, tmp_path) as url:
        page.goto(f"{url}/review?annotator=e2e")
        page.get_by_text(f"Data root: 1 / {N_SLICES} slices annotated").wait_for()
        page.get_by_test_id("stDataFrame").first.wait_for()
        page.wait_for_timeout(500)  # thumbnails drawn into the grid
        page.screenshot(path=str(SHOTS / "review_table.png"), full_page=True)
        _click_first_row(page)
        page.get_by_text(f"Selected slice {z} of").wait_for()
        page.get_by_role("button", name="Open on the Annotate page").click()
        page.get_by_text(f"Slice {z + 1} of {N_SLICES}").wait_for()
        page.get_by_text("Box Xmin 0.2000, Ymin 0.2500").wait_for()
        assert "/annotate" in page.url
        page.get_by_test_id("bc-stage").wait_for()  # the Annotate page's box canvas
        page.screenshot(path=str(SHOTS / "review_opened_on_annotate.png"), full_page=True)


# ----------------------------------------------------------------------- Annotate page additions

ANNOTATE = str(REPO / "pages" / "annotate.py")


def test_annotate_confirm_proposal_and_root_progress(data_root, tmp_path):
    volume = _write_case(data_root)
    _write_case(data_root, "case1", 4, "P-1")
    at = AppTest.from_file(ANNOTATE, default_timeout=60).run()
    at.text_input(key="annotator").set_value("dr_x").run()
    z = at.session_state["annotate_z"]
    assert at.button(key="annotate_confirm").disabled
    at.button(key="annotate_propose").click().run()
    store = _store(tmp_path)
    assert store.get(volume.slice_ids[z])["Annotator"] == "auto" and "Proposed box" in _texts(at)
    texts = [p.proto.text for p in at.get("progress")]
    assert f"Slice {z + 1} of {N_SLICES} · 0 confirmed · 1 proposed (unconfirmed)" in texts
    assert f"CT volumes: 0 confirmed, 1 proposed of {2 * N_SLICES} slices in 2 volumes" in texts
    at.button(key="annotate_confirm").click().run()
    assert not at.exception
    assert store.get(volume.slice_ids[z])["Annotator"] == "dr_x"
    assert f"CT volumes: 1 confirmed, 0 proposed of {2 * N_SLICES} slices in 2 volumes" in [
        p.proto.text for p in at.get("progress")]
    assert "IoU proposal → final on this slice: 1.000" in _texts(at)
    at.button(key="annotate_propose_all").click().run()
    at.button(key="annotate_next").click().run()
    assert store.get(volume.slice_ids[z + 1])["Annotator"] == "auto"
    at.button(key="annotate_confirm_next").click().run()
    assert not at.exception
    assert store.get(volume.slice_ids[z + 1])["Annotator"] == "dr_x"
    assert at.session_state["annotate_z"] == z + 2
    assert "2 confirmed proposal(s)" in _texts(at)


def test_annotate_opens_the_requested_slice(data_root, tmp_path):
    _write_case(data_root)
    second = _write_case(data_root, "case1", 4, "P-1")
    at = AppTest.from_file(ANNOTATE, default_timeout=60)
    at.session_state["annotate_request"] = {"path": str(data_root / "ct" / "case1"),
                                            "volume": second.volume_id, "slice": 2}
    at.run()
    assert not at.exception
    assert at.selectbox(key="annotate_volume").value.startswith("ct/case1")
    assert at.session_state["annotate_z"] == 2
    at.session_state["annotate_request"] = {"path": str(data_root / "elsewhere"), "volume": "x", "slice": 1}
    at.run()
    assert "not under" in at.warning[0].value
