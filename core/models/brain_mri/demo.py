"""The family's demo folder `brats/`: BraTS-layout patient folders of grade phantoms and name_mapping.csv.

    brats/<id>/<id>_{flair,t1,t1ce,t2,seg}.nii.gz     int16 sequences, uint8 seg (labels 0, 1, 2, 4)
    brats/name_mapping.csv                          Grade + BraTS_2020_subject_ID (BraTS 2020 columns)

Grades alternate HGG / LGG, so every demo has both. Each patient's seed comes from the demo seed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.models.brain_mri.phantom import SEQUENCES, grade_phantom

FOLDER = "brats"
MAPPING = "name_mapping.csv"
MAPPING_COLUMNS = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)
FULL_DEMO = {"patients": 20, "shape": (32, 80, 80), "spacing": (4.0, 2.4, 2.4)}
SMALL_DEMO = {"patients": 4, "shape": (16, 32, 32), "spacing": (8.0, 6.0, 6.0)}


def patient_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0xB4A1, int(index)]).generate_state(1)[0])


def write_brats(
    out: Path,
    patients: int,
    shape: tuple[int, int, int],
    seed: int = 0,
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    progress: Callable[[str], Any] = lambda _: None,
    prefix: str = "",
) -> list[dict]:
    """Write `patients` grade phantoms in the BraTS layout into `out`; returns one manifest case each.

    Case paths are relative to `out.parent` joined under `prefix` (the demo root's layout).
    """
    from core.io.writers import write_nifti

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases, rows = [], []
    for i in range(int(patients)):
        case_id, grade = f"BraTS20_Training_{i + 1:03d}", ("HGG", "LGG")[i % 2]
        phantom = grade_phantom(shape, spacing, seed=patient_seed(seed, i), grade=grade)
        files = {}
        for name in (*SEQUENCES, "seg"):
            array = phantom.seg if name == "seg" else np.rint(phantom.images[name]).astype(np.int16)
            rel = f"{case_id}/{case_id}_{name}.nii.gz"
            write_nifti(array, out / rel, spacing=phantom.spacing)
            files[name] = f"{prefix}{rel}"
        rows.append({"Grade": grade, "BraTS_2020_subject_ID": case_id})
        cases.append(
            {"id": case_id, "kind": "brain_mri", "path": f"{prefix}{case_id}", "label": grade, "files": files}
        )
        progress(f"brain MRI {i + 1}/{patients}: {case_id} ({grade})")
    with open(out / MAPPING, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MAPPING_COLUMNS, restval="NA")
        writer.writeheader()
        writer.writerows(rows)
    return cases


def write_demo(demo_root: Path, seed: int, small: bool, progress: Callable[[str], Any]) -> list[dict]:
    """The spec's demo_data hook: `<demo_root>/brats` (SMALL_DEMO for tests, FULL_DEMO otherwise)."""
    sizes = SMALL_DEMO if small else FULL_DEMO
    return write_brats(
        Path(demo_root) / FOLDER,
        sizes["patients"],
        sizes["shape"],
        seed,
        sizes["spacing"],
        progress,
        prefix=f"{FOLDER}/",
    )
