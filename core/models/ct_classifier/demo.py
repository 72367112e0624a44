"""The family's demo folder `ct_nifti/`: chest CT phantoms with and without ground-glass lesions.

    ct_nifti/CT-0/ct0_000.nii.gz ...     normal
    ct_nifti/CT-23/ct23_000.nii.gz ...   2-5 ground-glass opacities in the lungs
    truth/ct0_000.npz ...                lung, lesion and body masks and lung boxes (core.demo.truth_for)

More volumes than the base step wrote (20 per class instead of 10), so that a 70/30 split leaves a
validation set of 12 volumes that can show an accuracy above 0.85.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.demo import save_truth

FOLDER = "ct_nifti"
CLASSES = (("CT-0", False), ("CT-23", True))
FULL_PER_CLASS, FULL_SHAPE = 20, (32, 128, 128)
SMALL_PER_CLASS, SMALL_SHAPE = 2, (12, 64, 64)
# The small (test-layout) demo: one small opacity, so its short lungs still read as lungs on average.
SMALL_LESIONS = {"count": (1, 1), "radius": (0.05, 0.07)}


def write_ct_volumes(root: Path, seed: int = 0, per_class: int = FULL_PER_CLASS,
                     shape: tuple[int, int, int] = FULL_SHAPE, folder: str = FOLDER,
                     progress: Callable[[str], Any] = print, lesions: dict | None = None) -> list[dict]:
    """Write `per_class` phantoms per class under `root/folder` and their truth under `root/truth`;
    returns manifest cases. The in-plane spacing keeps a ~180 mm field of view at any matrix size."""
    from core.demo import case_seed
    from core.io.writers import write_nifti
    from core.models.ct_classifier.phantom import lesion_chest

    root = Path(root)
    spacing = (5.0, 180.0 / shape[1], 180.0 / shape[2])
    cases = []
    for cls, positive in CLASSES:
        for i in range(per_class):
            case_id = f"{cls.replace('-', '').lower()}_{i:03d}"
            case = case_seed(seed, f"ct_nifti/{cls}", i)
            ph = lesion_chest(shape, spacing, case, positive, **(lesions or {}))
            path = f"{folder}/{cls}/{case_id}.nii.gz"
            write_nifti(np.rint(ph.hu).astype(np.int16), root / path, spacing=spacing)
            save_truth(root / "truth" / f"{case_id}.npz", ph)
            cases.append({"id": case_id, "kind": "ct_nifti", "path": path, "label": cls,
                          "truth": f"truth/{case_id}.npz"})
        progress(f"NIfTI CT {cls}: {per_class} volumes {shape}")
    return cases


def write_demo(demo_root: Path, seed: int, small: bool, progress: Callable[[str], Any]) -> list[dict]:
    """The `ModelSpec.demo_data` hook (core.demo.write_demo_data)."""
    if small:
        return write_ct_volumes(demo_root, seed, SMALL_PER_CLASS, SMALL_SHAPE, progress=progress,
                                lesions=SMALL_LESIONS)
    return write_ct_volumes(demo_root, seed, FULL_PER_CLASS, FULL_SHAPE, progress=progress)
