"""Smoke tests of the Home and Viewer pages with Streamlit's AppTest on a small real data root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.io.writers import write_dicom_series

REPO = Path(__file__).resolve().parents[1]


def _series(root: Path) -> np.ndarray:
    z, y, x = np.mgrid[:6, :32, :40]
    hu = (-1000 + 100 * z + 10 * y + x).astype(np.int16)  # every voxel says where it is
    write_dicom_series(hu, root / "ct" / "series_a", spacing=(2.5, 0.7, 0.7))
    return hu


def _run(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / page), default_timeout=60)
    return at.run()


def test_home_shows_the_data_root_contents(data_root):
    _series(data_root)
    at = _run("home.py")
    assert not at.exception
    assert at.text_input(key="home_data_root").value == str(data_root)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Volumes"] == "1"
    assert at.session_state["data_root"] == str(data_root)


def test_home_on_a_missing_root_explains_instead_of_failing(data_root, tmp_path):
    at = _run("home.py")
    at.text_input(key="home_data_root").set_value(str(tmp_path / "elsewhere")).run()
    assert not at.exception
    assert any("does not exist" in info.value for info in at.info)
    assert at.session_state["data_root"] == str(tmp_path / "elsewhere")


def test_viewer_plain_path_steps_windows_and_reads_hu(data_root):
    _series(data_root)
    at = _run("viewer.py")
    assert not at.exception
    assert not at.error
    at.radio(key="viewer_mode").set_value("Server slider").run()
    slider = at.slider(key="viewer_slider_axial")
    assert slider.value == 3  # the middle of 6 slices
    slider.set_value(5).run()
    at.number_input(key="viewer_probe_x_axial").set_value(7).run()
    at.number_input(key="viewer_probe_y_axial").set_value(2).run()
    assert not at.exception
    readout = " ".join(m.value for m in at.markdown)
    assert "**-473 HU** at voxel x 7, y 2, z 5" in readout  # -1000 + 500 + 20 + 7
    assert "ct_classifier" not in at.selectbox(key="viewer_window_CT").options  # reading windows only
    at.selectbox(key="viewer_window_CT").set_value("custom").run()
    at.number_input(key="viewer_center").set_value(-500.0).run()
    at.radio(key="viewer_orientation").set_value("coronal").run()
    assert not at.exception
    assert at.slider(key="viewer_slider_coronal").max == 31


def test_viewer_fast_path_mounts_without_error(data_root):
    _series(data_root)
    at = _run("viewer.py")
    assert not at.exception and not at.error
    assert "center -600 HU, width 1500" in " ".join(c.value for c in at.caption)


def test_viewer_fast_path_sends_the_start_slice_first_then_the_rest(data_root):
    """The viewer's own payload holds only the start slice (it paints at once); the feed payloads
    after it hold every other slice once, exactly the modality values (the browser windows them)."""
    from core.view_payload import IntensityCoding, decode_plane, from_raw, unpack

    hu = _series(data_root)
    at = _run("viewer.py")
    assert len(at.get("bidi_component")) == 1  # the viewer alone: its first paint waits for nothing
    at.run()  # the browser reports that first paint: this run sends the rest
    elements = at.get("bidi_component")
    names = [el.proto.component_name for el in elements]
    assert names[0].endswith("slice_viewer") and all(n.endswith("slice_feed") for n in names[1:])
    (viewer, [first]), *feeds = (unpack(el.proto.bytes) for el in elements)
    assert viewer["first"] == [3] and viewer["shape"] == [6, 32, 40]  # the middle of 6 slices
    sent = {i: blob for header, blobs in feeds if header["kind"] == "slices"
            for i, blob in zip(header["indices"], blobs, strict=True)}
    assert sorted(sent) == [0, 1, 2, 4, 5] and {h["volume"] for h, _ in feeds} == {viewer["volume"]}
    coding = IntensityCoding(viewer["coding"]["slope"], viewer["coding"]["intercept"])
    for i, blob in {**sent, 3: first}.items():
        np.testing.assert_array_equal(from_raw(decode_plane(blob, (32, 40)), coding), hu[i])


@pytest.mark.parametrize("name", ["broken.nii.gz", "garbage.nrrd"])
def test_viewer_shows_an_error_naming_a_bad_file(data_root, name):
    (data_root / name).write_bytes(b"this is not an image")
    at = _run("viewer.py")
    assert not at.exception
    assert len(at.error) == 1
    assert name in at.error[0].value and "Cannot open" in at.error[0].value


def test_viewer_keeps_working_after_a_bad_file(data_root):
    (data_root / "broken.nii.gz").write_bytes(b"junk")
    _series(data_root)
    at = _run("viewer.py")
    assert not at.error  # DICOM series are listed first
    bad = next(o for o in at.selectbox(key="viewer_volume").options if o.startswith("broken"))
    at.selectbox(key="viewer_volume").set_value(bad).run()
    assert at.error and "broken.nii.gz" in at.error[0].value
    good = next(o for o in at.selectbox(key="viewer_volume").options if o.startswith("ct/series_a"))
    at.selectbox(key="viewer_volume").set_value(good).run()
    assert not at.exception and not at.error


def test_home_says_which_links_outside_the_data_root_were_skipped(data_root, tmp_path):
    _series(data_root)
    outside = tmp_path / "outside"
    write_dicom_series(np.full((3, 16, 16), -1000, np.int16), outside / "lidc", spacing=(2.0, 1.0, 1.0))
    (data_root / "ct" / "lidc_link").symlink_to(outside / "lidc", target_is_directory=True)
    at = _run("home.py")
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Volumes"] == "1"
    assert list(at.dataframe[0].value["Volume"]) == ["ct/series_a"]
    assert [w.value for w in at.warning] == [
        "1 link leading outside the data root was skipped (ct/lidc_link): copy the files in, or make the "
        "linked folder the data root."]
