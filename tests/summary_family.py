"""A toy box family whose spec says what training will use (`dataset_summary`), for the Train page's tests.

Registered through SLICEWISE_FAMILY_MODULES=tests.summary_family. Its data set is a folder with a
`boxes.csv` (Volume, Slice, annotator); like the lung localizer it counts confirmed boxes and
proposals (core.annotate.is_proposal's rule: annotator "auto" or "model:..."), and with one
patient its `split` "auto" holds out blocks of slices. Training reuses the toy blob network, so
a job finishes in seconds.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from core.models import QUICK_PRESET, LazyRef, ModelSpec, family_defaults, register

FAMILY = "summary_boxes"


def is_dataset(folder: Path, names: set) -> bool:
    return "boxes.csv" in names


def _rows(folder: Path) -> list[dict[str, str]]:
    path = Path(folder) / "boxes.csv"
    return list(csv.DictReader(path.open(newline=""))) if path.is_file() else []


def _proposal(row: dict[str, str]) -> bool:
    annotator = row.get("annotator") or ""
    return annotator == "auto" or annotator.startswith("model:")


def check(folder: Path) -> str:
    rows = [r for r in _rows(folder) if not _proposal(r)]
    return "" if rows else f"{Path(folder) / 'boxes.csv'}: no confirmed boxes yet: confirm some on Annotate"


def summary(folder: Path, settings: dict[str, Any]) -> str:
    rows = _rows(folder)
    confirmed = [r for r in rows if not _proposal(r)]
    proposals = len(rows) - len(confirmed)
    used = rows if settings.get("include_proposals") else confirmed
    patients = {r["Volume"] for r in used}
    split = settings.get("split", "auto")
    if split == "blocks" or split == "auto" and len(patients) == 1:
        how = "validation: blocks of neighbouring slices held out (one patient)"
    else:
        how = "validation: whole patients held out"
    left_out = "" if settings.get("include_proposals") or not proposals else \
        f"; {proposals} proposals left out (include_proposals)"
    return f"{len(confirmed)} confirmed boxes from {len(patients)} patient(s){left_out}. {how}."


def make_training(settings: dict[str, Any], data: Path, run_dir: Path):
    from tests.toy_family import make_training as toy_training

    return toy_training(settings, data, run_dir)


def make_predictor(payloads: list[dict[str, Any]], device: str, name: str):
    from tests.toy_family import make_predictor as toy_predictor

    return toy_predictor(payloads, device, name)


_FIELDS = {"dataset_check": check}
if "dataset_summary" in ModelSpec.__dataclass_fields__:  # the field the localizer's branch adds
    _FIELDS["dataset_summary"] = LazyRef(f"{__name__}:summary")

SPEC = register(
    ModelSpec(
        name=FAMILY,
        task="box_regression",
        title="Summary boxes (a test family)",
        defaults=family_defaults({"width": 8, "lr": 0.02, "max_epochs": 2, "batch_size": 16, "num_workers": 0,
                                  "split": "auto", "include_proposals": False}),
        make_training=LazyRef(f"{__name__}:make_training"),
        make_predictor=LazyRef(f"{__name__}:make_predictor"),
        outputs=("mask",),
        review="mask",
        dataset_rule=is_dataset,
        choices={"split": ("auto", "patient", "blocks")},
        presets={QUICK_PRESET: {"max_epochs": 2}},
        **_FIELDS,
    )
)
if "dataset_summary" not in _FIELDS:  # before that branch: the Train page reads the attribute all the same
    object.__setattr__(SPEC, "dataset_summary", LazyRef(f"{__name__}:summary"))
