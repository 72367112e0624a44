"""The Train page's decisions (core.train_form): the form from the spec, the data-set list, the jobs table."""

from __future__ import annotations

import json
import sys

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
    assert [c.label for c in lung] == ["prepared/a", "annotated slices of the data root"]
    assert lung[-1].path == tmp_path
    assert train_form.candidate_datasets("lung_localizer", tmp_path / "missing") == []
    unknown = [c.label for c in train_form.candidate_datasets("some_new_family", tmp_path)]
    assert unknown == ["the data root", "prepared", "xray"]


def test_the_demo_set_is_named_demo_data_wherever_it_sits(tmp_path):
    demo = tmp_path / "demo"
    (demo / "truth").mkdir(parents=True)
    (demo / "manifest.json").write_text("{}")
    assert [c.label for c in train_form.candidate_datasets("lung_localizer", tmp_path)] == [
        "demo data (demo)", "annotated slices of the data root"]
    # the data root is the demo set itself (make run): offered once, as demo data
    assert [(c.label, c.path) for c in train_form.candidate_datasets("lung_localizer", demo)] == [
        ("demo data (demo)", demo)]
    assert [c.label for c in train_form.candidate_datasets("some_new_family", demo)] == [
        "demo data (demo)", "demo data (truth)"]


def test_demo_hint_only_without_a_demo_choice(tmp_path):
    plain = [train_form.DatasetChoice(tmp_path, train_form.ROOT_LABEL)]
    assert "Home → Create demo data" in train_form.demo_hint(plain, tmp_path)
    demo = [train_form.DatasetChoice(tmp_path / "demo", "demo data (demo)"), *plain]
    assert train_form.demo_hint(demo, tmp_path) == ""


def test_dataset_summary_from_a_callable_a_lazy_ref_or_nothing(tmp_path):
    from types import SimpleNamespace

    from core.models import LazyRef

    seen = []

    def summary(folder, settings):
        seen.append((folder, settings))
        return f"  {settings['split']} split of {folder.name}  "

    spec = SimpleNamespace(defaults={"split": "auto", "lr": 0.1}, dataset_summary=summary)
    text = train_form.dataset_summary(spec, tmp_path, {"split": "blocks"})
    assert text == f"blocks split of {tmp_path.name}"
    assert seen == [(tmp_path, {"split": "blocks", "lr": 0.1})]  # the defaults under the chosen settings
    assert train_form.dataset_summary(spec, None) == ""  # no folder picked
    assert train_form.dataset_summary(SimpleNamespace(defaults={}), tmp_path) == ""  # no summary field
    lazy = SimpleNamespace(defaults={}, dataset_summary=LazyRef("builtins:print"))
    assert train_form.dataset_summary(lazy, tmp_path) == ""  # resolved and called; None -> nothing to say

    def broken(folder, settings):
        raise ValueError("bad csv")

    text = train_form.dataset_summary(SimpleNamespace(defaults={}, dataset_summary=broken), tmp_path)
    assert text == f"Could not summarise `{tmp_path}` (ValueError: bad csv)."


def test_metric_series_split_losses_from_metrics():
    rows = [{"epoch": 0, "train_loss": 1.0, "val_loss": 0.9, "val_iou": 0.5, "val_iou_p10": 0.1, "lr": 1e-4,
             "time": "t"},
            {"epoch": 1, "train_loss": 0.5, "val_loss": None, "val_iou": 0.7}]
    losses, others = train_form.metric_series(rows)
    assert losses == {"train_loss": ([1, 2], [1.0, 0.5]), "val_loss": ([1], [0.9])}  # epochs from 1
    assert others == {"val_iou": ([1, 2], [0.5, 0.7])}


def test_format_duration():
    texts = [train_form.format_duration(s) for s in (None, 5.4, 185, 7440)]
    assert texts == ["–", "5 s", "3 min 05 s", "2 h 04 min"]


def test_best_metric_reads_engine_results_and_falls_back_to_val_loss_so_far(tmp_path):
    from core import jobs

    root = tmp_path / "runs"
    job = jobs.submit_command([sys.executable, "-c", "pass"], runs_root=root)
    run = root / job.id
    (run / "metrics.jsonl").write_text('{"epoch": 0, "val_loss": 0.5}\n{"epoch": 1, "val_loss": 0.25}\n')
    snapshot = jobs.get(job.id, runs_root=root)
    assert train_form.best_metric(snapshot) == ("val_loss", 0.25, False)
    assert train_form.best_metric_text(snapshot) == "val_loss 0.25 (so far)"
    (run / "result.json").write_text(json.dumps({"best_metric": {"val_acc": 0.875}}))
    assert train_form.best_metric_text(snapshot) == "val_acc 0.875"


def test_evaluation_view_keeps_what_is_well_formed(tmp_path):
    assert train_form.evaluation_view(tmp_path).empty
    (tmp_path / "evaluation.json").write_text(json.dumps({
        "confusion_matrix": {"classes": ["NORMAL", "PNEUMONIA"], "matrix": [[5, 1], [2, 8]]},
        "roc": {"fpr": [0, 0.2, 1], "tpr": [0, 0.9, 1], "auc": 0.91},
        "summary": {"accuracy": 0.8125, "note": "text is left out", "flag": True},
        "cases": [{"case": "a", "label": "NORMAL"}, "junk"],
    }))
    view = train_form.evaluation_view(tmp_path)
    assert view.classes == ["NORMAL", "PNEUMONIA"] and view.matrix == [[5.0, 1.0], [2.0, 8.0]]
    assert view.roc == ([0.0, 0.2, 1.0], [0.0, 0.9, 1.0], 0.91)
    assert view.summary == {"accuracy": 0.8125}
    assert view.cases == [{"case": "a", "label": "NORMAL"}]
    (tmp_path / "evaluation.json").write_text(json.dumps({
        "confusion_matrix": {"classes": ["a", "b"], "matrix": [[1, 2]]}, "roc": {"fpr": [0], "tpr": [0]}}))
    assert train_form.evaluation_view(tmp_path).empty


def test_dataset_note_explains_the_pick_and_refuses_what_cannot_work(tmp_path, monkeypatch):
    from core.models import get_spec

    spec = get_spec("lung_localizer")
    level, text = train_form.dataset_note(spec, None, tmp_path)
    assert level == "warning" and "No folder under" in text and spec.dataset_hint in text
    prepared = write_tiny_prepared(tmp_path / "prepared", n_train=2, n_val=1)
    level, text = train_form.dataset_note(spec, train_form.DatasetChoice(prepared, "prepared"), tmp_path)
    assert level == "info" and str(prepared) in text and spec.dataset_hint in text

    root = train_form.DatasetChoice(tmp_path, "data root (its annotated slices)")
    csv_path = tmp_path / "annotations" / "lung_bbox.csv"
    monkeypatch.setenv("SLICEWISE_ANNOTATIONS", str(csv_path))
    level, text = train_form.dataset_note(spec, root, tmp_path)
    assert level == "error" and "No lung boxes annotated yet" in text
    csv_path.parent.mkdir()
    header = "Image,Xmin,Ymin,Xmax,Ymax,Volume,Slice,Annotator,Updated\n"
    csv_path.write_text(header + "a#1,0.1,0.1,0.9,0.9,patient-1,1,x,t\na#2,0.1,0.1,0.9,0.9,patient-1,2,x,t\n")
    level, text = train_form.dataset_note(spec, root, tmp_path)
    assert level == "info"  # one patient trains too: validation on a block of its slices (split=auto)
    csv_path.write_text(csv_path.read_text() + "b#1,0.1,0.1,0.9,0.9,patient-2,1,x,t\n")
    assert train_form.dataset_note(spec, root, tmp_path)[0] == "info"


def test_series_labels_say_train_and_validation():
    assert train_form.series_label("train_loss") == "train loss"
    assert train_form.series_label("val_loss") == "validation loss"
    assert train_form.series_label("val_iou") == "validation iou"


def test_a_typed_folder_must_suit_the_family(tmp_path):
    from core.models import get_spec

    spec = get_spec("lung_localizer")

    def typed(folder):
        choice = train_form.DatasetChoice(folder, str(folder))
        return train_form.dataset_note(spec, choice, tmp_path, typed=True)

    xrays = tmp_path / "xray"
    (xrays / "train").mkdir(parents=True)
    level, text = typed(xrays)
    assert level == "error" and text.startswith(f"{xrays} does not look like training data for Lung")
    assert typed(tmp_path / "nope") == ("error", f"{tmp_path / 'nope'}: no such folder")
    assert typed(write_tiny_prepared(tmp_path / "prepared", n_train=1, n_val=1))[0] == "info"


def test_confine_job_keeps_typed_paths_under_the_allowed_folders(tmp_path, monkeypatch):
    from core.confine import PathOutsideRootError
    from core.models.imagenet import hub_folder

    data_root, runs_root, outside = tmp_path / "data", tmp_path / "runs", tmp_path / "outside"
    for folder in (data_root / "set", runs_root, outside):
        folder.mkdir(parents=True)
    monkeypatch.setenv("SLICEWISE_RUNS", str(runs_root))
    monkeypatch.setenv("SLICEWISE_ANNOTATIONS", str(tmp_path / "notes" / "lung_bbox.csv"))
    (data_root / "escape").symlink_to(outside)

    folder, settings = train_form.confine_job(
        data_root / "set", {"weights_path": str(hub_folder() / "resnet18-f37072fd.pth"), "cache_dir": "",
                            "annotations_csv": str(tmp_path / "notes" / "mine.csv"), "max_epochs": 3},
        data_root)
    assert folder == (data_root / "set").resolve() and settings["max_epochs"] == 3
    assert settings["cache_dir"] == ""  # empty: the family's default place
    for key, value in (("weights_path", outside / "w.pth"), ("cache_dir", data_root / "escape" / "cache"),
                       ("annotations_csv", data_root / ".." / "outside" / "x.csv")):
        with pytest.raises(PathOutsideRootError, match=f"setting {key}"):
            train_form.confine_job(data_root / "set", {key: str(value)}, data_root)
    with pytest.raises(PathOutsideRootError, match="outside"):
        train_form.confine_job(data_root / "escape", {}, data_root)
    assert train_form.confine_job(runs_root, {"cache_dir": str(runs_root / "c")}, data_root)[1]["cache_dir"] \
        == str((runs_root / "c").resolve())


def _annotated_series(data_root, name: str, patient: str, annotators: list[str]):
    """A real 4-slice CT series under `data_root/ct/<name>` (pydicom) with one box per slice in the
    configured annotation CSV, stored under the given annotator names; returns the volume."""
    import numpy as np

    from core.annotations import BoxStore
    from core.io import load_volume
    from core.io.writers import write_dicom_series
    from core.settings import annotations_path

    hu = np.full((len(annotators), 16, 16), -1000, np.int16)
    hu[:, 4:12, 3:13] = 40
    folder = data_root / "ct" / name
    write_dicom_series(hu, folder, spacing=(2.0, 1.0, 1.0), patient_id=patient)
    volume = load_volume(folder)
    store = BoxStore(annotations_path())
    for z, who in enumerate(annotators):
        store.upsert(volume.slice_ids[z], 0.2, 0.25, 0.8, 0.75, volume=volume.volume_id, slice=z,
                     annotator=who)
    return volume


def test_dataset_note_checks_the_data_root_with_the_chosen_settings(data_root):
    """Proposals only: refused unless include_proposals; every annotated volume excluded: refused;
    annotations_csv: that file is checked (and must stay under its roots)."""
    from core.models import get_spec
    from core.settings import annotations_path

    spec = get_spec("lung_localizer")
    root = train_form.DatasetChoice(data_root, "annotated slices of the data root")
    quick = spec.preset_settings("quick")
    volume = _annotated_series(data_root, "p1", "P1", ["auto", "auto", "model:run_1", "auto"])
    csv_path = annotations_path()

    level, text = train_form.dataset_note(spec, root, data_root, settings=quick)
    assert level == "error" and text.startswith(f"{csv_path}: no confirmed box to train on")
    assert "4 unconfirmed proposal(s)" in text and "confirm boxes" in text and "include_proposals" in text
    assert spec.dataset_check(data_root) == text  # the one-argument call checks the defaults
    assert train_form.dataset_note(spec, root, data_root, settings={**quick, "include_proposals": True}) \
        == ("info", f"Trains on `{data_root}`. {spec.title} learns from: {spec.dataset_hint}.")

    _annotated_series(data_root, "p2", "P2", ["radiologist", "auto"])
    assert train_form.dataset_note(spec, root, data_root, settings=quick)[0] == "info"
    others = ",".join(row["Volume"] for row in _rows(csv_path) if row["Volume"] != volume.volume_id)
    level, text = train_form.dataset_note(spec, root, data_root,
                                          settings={**quick, "exclude_volumes": others})
    assert level == "error" and "no confirmed box" in text  # p1 left: proposals only
    every = f"{others}, {volume.volume_id}"
    level, text = train_form.dataset_note(
        spec, root, data_root, settings={**quick, "exclude_volumes": every, "include_proposals": True})
    assert level == "error" and "every annotated volume is excluded by the setting exclude_volumes" in text
    assert volume.volume_id in text and str(csv_path) in text

    # annotations_csv: another file is checked instead; it must exist and stay under its roots
    mine = data_root / "mine.csv"
    level, text = train_form.dataset_note(spec, root, data_root,
                                          settings={**quick, "annotations_csv": str(mine)})
    assert level == "error" and f"({mine.resolve()} does not exist)" in text
    mine.write_text(csv_path.read_text())
    assert train_form.dataset_note(spec, root, data_root,
                                   settings={**quick, "annotations_csv": str(mine)})[0] == "info"
    outside = data_root.parent / "elsewhere.csv"
    level, text = train_form.dataset_note(spec, root, data_root,
                                          settings={**quick, "annotations_csv": str(outside)})
    assert level == "error" and "outside the folders" in text and "setting annotations_csv" in text


def _rows(csv_path) -> list[dict]:
    import csv

    with open(csv_path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_one_argument_dataset_check_still_works(tmp_path):
    """A family's check may take (folder) or (folder, settings); a LazyRef is resolved first."""
    from types import SimpleNamespace

    from core.models import LazyRef

    seen = []

    def one(folder):
        seen.append((folder,))
        return ""

    def two(folder, settings):
        seen.append((folder, settings))
        return "too few epochs" if settings["max_epochs"] < 2 else ""

    choice = train_form.DatasetChoice(tmp_path, "here")
    for check, settings in ((one, {"max_epochs": 1}), (two, {"max_epochs": 1}), (two, None)):
        spec = SimpleNamespace(name="toy", title="Toy", defaults={"max_epochs": 3, "lr": 0.1},
                               dataset_hint="", dataset_check=check)
        seen.clear()
        level, _ = train_form.dataset_note(spec, choice, tmp_path, settings=settings)
        if check is one:
            assert level == "info" and seen == [(tmp_path,)]
        elif settings is None:  # no settings from the caller: the family's defaults
            assert level == "info" and seen == [(tmp_path, {"max_epochs": 3, "lr": 0.1})]
        else:
            assert level == "error" and seen == [(tmp_path, {"max_epochs": 1, "lr": 0.1})]
    lazy = LazyRef("tests.summary_family:check")  # a one-argument check behind a LazyRef
    (tmp_path / "boxes.csv").write_text("Volume,Slice,annotator\nv,1,auto\n")
    spec = SimpleNamespace(name="toy", title="Toy", defaults={}, dataset_hint="", dataset_check=lazy)
    level, text = train_form.dataset_note(spec, choice, tmp_path, settings={})
    assert level == "error" and "no confirmed boxes yet" in text


def test_dataset_summary_reads_no_annotation_file_outside_the_allowed_folders(tmp_path, monkeypatch):
    from core.annotations import BoxStore
    from core.models import get_spec

    data_root, outside = tmp_path / "data", tmp_path / "outside"
    data_root.mkdir()
    monkeypatch.setenv("SLICEWISE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SLICEWISE_ANNOTATIONS", str(tmp_path / "notes" / "lung_bbox.csv"))
    BoxStore(outside / "secret.csv").upsert("1.2.3", 0.1, 0.1, 0.6, 0.6, volume="v", slice=0, annotator="dr")
    spec = get_spec("lung_localizer")
    settings = {"annotations_csv": str(outside / "secret.csv")}
    assert "1 confirmed box" in train_form.dataset_summary(spec, data_root, settings)  # the CLI's view
    assert train_form.dataset_summary(spec, data_root, settings, data_root) == ""  # the page's: nothing read
    inside = {"annotations_csv": str(tmp_path / "notes" / "mine.csv")}
    BoxStore(tmp_path / "notes" / "mine.csv").upsert("1.2.4", 0.1, 0.1, 0.6, 0.6, volume="v", slice=1,
                                                     annotator="dr")
    assert "1 confirmed box" in train_form.dataset_summary(spec, data_root, inside, data_root)
