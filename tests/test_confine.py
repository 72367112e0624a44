"""core.confine: paths users type are used only under the data root / runs root."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core.annotations import BoxStore
from core.catalog import summarise
from core.confine import (
    PathOutsideRootError,
    allowed_roots,
    choose_data_root,
    confine,
    server_is_shared,
)
from core.demo import write_demo_data
from core.export import export_annotations
from core.io.writers import write_nifti


@pytest.fixture
def roots(tmp_path):
    data, runs, outside = tmp_path / "data", tmp_path / "runs", tmp_path / "outside"
    for p in (data, runs, outside):
        p.mkdir()
    return data, runs, outside


def test_inside_is_returned_resolved(roots):
    data, runs, _ = roots
    assert confine(data / "a" / "b.csv", [data, runs]) == (data / "a" / "b.csv").resolve()
    assert confine(runs, [data, runs]) == runs.resolve()
    assert confine(str(data / "x" / ".." / "y"), [data]) == (data / "y").resolve()


def test_dotdot_escape_is_refused_naming_path_and_roots(roots):
    data, runs, outside = roots
    typed = f"{data}/../outside/file.csv"
    with pytest.raises(PathOutsideRootError) as info:
        confine(typed, [data, runs])
    message = str(info.value)
    assert typed in message and str(data.resolve()) in message and str(runs.resolve()) in message
    assert str(outside / "file.csv") in message  # what it resolves to


def test_symlink_escape_is_refused(roots):
    data, _, outside = roots
    os.symlink(outside, data / "link")
    with pytest.raises(PathOutsideRootError, match="resolves to"):
        confine(data / "link" / "export", [data])
    os.symlink("/etc/passwd", data / "passwd")
    with pytest.raises(PathOutsideRootError):
        confine(data / "passwd", [data])


def test_prefix_sibling_is_not_inside(roots, tmp_path):
    data, _, _ = roots
    (tmp_path / "data2").mkdir()
    with pytest.raises(PathOutsideRootError):
        confine(tmp_path / "data2", [data])


def test_empty_and_absolute_system_paths_are_refused(roots):
    data, _, _ = roots
    for bad in ("", "   ", "/", "/etc", "~"):
        with pytest.raises(PathOutsideRootError):
            confine(bad, [data])


def test_allowed_roots_follow_settings(roots, monkeypatch):
    data, runs, _ = roots
    monkeypatch.setenv("SLICEWISE_DATA", str(data))
    monkeypatch.setenv("SLICEWISE_RUNS", str(runs))
    assert allowed_roots() == [data, runs]


def test_shared_server_fixes_the_data_root(roots, monkeypatch):
    data, _, outside = roots
    monkeypatch.setenv("SLICEWISE_DATA", str(data))
    monkeypatch.delenv("SLICEWISE_SHARED", raising=False)
    assert not server_is_shared("127.0.0.1") and not server_is_shared("localhost")
    assert server_is_shared("0.0.0.0") and server_is_shared("") and server_is_shared("10.1.2.3")
    monkeypatch.setenv("SLICEWISE_SHARED", "1")
    assert server_is_shared("127.0.0.1")
    assert choose_data_root(str(outside), shared=False) == outside.resolve()
    assert choose_data_root(str(data / "sub"), shared=True) == (data / "sub").resolve()
    with pytest.raises(PathOutsideRootError):
        choose_data_root(str(outside), shared=True)


def test_export_refuses_a_folder_outside(roots):
    data, runs, outside = roots
    store = BoxStore(data / "lung_bbox.csv")
    store.upsert("a", 0.1, 0.1, 0.5, 0.5, volume="v", slice=0, annotator="me")
    with pytest.raises(PathOutsideRootError):
        export_annotations(store, data, outside / "export", roots=[data, runs])
    assert not (outside / "export").exists()
    result = export_annotations(store, data, data / "export", roots=[data, runs])
    assert result["lung_bbox"].is_file()


def test_demo_write_target_is_confined(roots):
    data, _, outside = roots
    os.symlink(outside, data / "demo")  # the target is a link out of the data root
    with pytest.raises(PathOutsideRootError):
        write_demo_data(data / "demo", roots=[data], small=True, progress=lambda m: None)
    assert list(outside.iterdir()) == []  # nothing created or cleared there


def test_catalog_skips_volumes_that_link_outside(roots):
    data, runs, outside = roots
    write_nifti(np.zeros((3, 4, 5), np.float32), outside / "secret.nii.gz")
    write_nifti(np.zeros((3, 4, 5), np.float32), data / "mine.nii.gz")
    os.symlink(outside / "secret.nii.gz", data / "secret.nii.gz")
    catalog = summarise(data, runs_root=runs, annotations=data / "none.csv")
    assert [v.name for v in catalog.volumes] == ["mine.nii.gz"]
    assert catalog.outside_links == ["secret.nii.gz"]  # said once, on Home, under the volume table
    note = catalog.outside_links_note()
    assert "secret.nii.gz" in note and "outside the data root" in note


def test_locator_refuses_volume_ids_that_walk_out_and_skips_fifos(roots):
    from core.errors import VolumeReadError
    from core.export import VolumeLocator

    data, _, outside = roots
    write_nifti(np.zeros((3, 4, 5), np.float32), outside / "secret.nii.gz")
    os.mkfifo(data / "pipe.dcm")  # opening it would block forever
    os.symlink("/dev/zero", data / "zero.dcm")
    locator = VolumeLocator(data)
    assert locator.dicom_slices() == {}
    with pytest.raises(VolumeReadError, match="outside the data root"):
        locator.volume_path("../outside/secret.nii.gz")
