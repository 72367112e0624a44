"""VNet data: image + label cases found on disk, checked, normalised; bad cases named and skipped.

Layouts (SPEC 5D): one folder per case holding an image and a label volume (`.nrrd`, `.nii.gz`, `.nii`,
`.nhdr`), the label being the file named `label*`, `seg*`, `mask*` or `laendo*` and the image the other
one; or flat pairs `<case>_image.<ext>` + `<case>_label.<ext>` (also `_seg`, `_mask`). Labels 0/255 or
0/1: any non-zero voxel is foreground. Cases may differ in shape and spacing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import SlicewiseError, TrainingDataError
from core.mask_review import FLAT_PAIR as _FLAT
from core.mask_review import is_label_name, volume_stem

log = logging.getLogger("slicewise.train")

IMAGE_PREFIXES = ("image", "lgemri", "img")
DEMO_SUBFOLDER = "segmentation"
GEOMETRY_TOLERANCE = 1e-3  # relative spacing / mm origin difference allowed between image and label


@dataclass(frozen=True)
class CasePaths:
    case_id: str
    image: Path
    label: Path


@dataclass
class CaseList:
    cases: list[CasePaths] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one readable reason per skipped file or folder


@dataclass(eq=False)
class Case:
    """One loaded case: the normalised image (float32) and the binary label (uint8), (z, y, x)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def _case_folder(folder: Path, names: list[str]) -> tuple[CasePaths | None, str | None]:
    """(case, None), (None, reason) or (None, None) when the folder holds no volume at all."""
    volumes = sorted(n for n in names if volume_stem(n) is not None and not n.startswith("."))
    if not volumes:
        return None, None
    labels = [n for n in volumes if is_label_name(volume_stem(n))]
    images = [n for n in volumes if n not in labels]
    if len(images) > 1:
        preferred = [n for n in images if volume_stem(n).lower().startswith(IMAGE_PREFIXES)]
        images = preferred if len(preferred) == 1 else images
    if not labels:
        return None, f"{folder}: image without label (no file named label*, seg*, mask* or laendo*); skipped"
    if not images:
        return None, f"{folder}: label without image; skipped"
    if len(labels) > 1 or len(images) > 1:
        return None, f"{folder}: several candidate images or labels ({', '.join(volumes)}); skipped"
    return CasePaths(folder.name, folder / images[0], folder / labels[0]), None


def _flat_pairs(folder: Path, names: list[str]) -> CaseList:
    found: dict[str, dict[str, str]] = {}
    for name in sorted(names):
        stem = volume_stem(name)
        match = _FLAT.match(stem) if stem else None
        if match:
            role = "image" if match["role"].lower() in ("image", "img") else "label"
            found.setdefault(match["case"], {})[role] = name
    out = CaseList()
    for case, roles in sorted(found.items()):
        if set(roles) == {"image", "label"}:
            out.cases.append(CasePaths(case, folder / roles["image"], folder / roles["label"]))
        else:
            have = next(iter(roles.values()))
            missing = "label" if "image" in roles else "image"
            out.skipped.append(f"{folder / have}: no matching {missing} file ({case}_{missing}...); skipped")
    return out


def find_cases(folder: Path) -> CaseList:
    """Every case under `folder` (case sub-folders and flat pairs), with the reasons for what was skipped.

    A demo root (with a `segmentation/` sub-folder and no cases of its own) stands for that sub-folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"{folder}: not a folder of segmentation cases")
    names = sorted(p.name for p in folder.iterdir())
    result = _flat_pairs(folder, names)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        case, reason = _case_folder(sub, [p.name for p in sub.iterdir() if p.is_file()])
        if case is not None:
            result.cases.append(case)
        elif reason is not None:
            result.skipped.append(reason)
    if not result.cases and (folder / DEMO_SUBFOLDER).is_dir():
        return find_cases(folder / DEMO_SUBFOLDER)
    return result


def looks_like_dataset(folder: Path, names: set) -> bool:
    """The Train page's data-set rule: at least two flat pairs, or two case folders (a few looked at)."""
    flat = _flat_pairs(folder, sorted(names))
    if len(flat.cases) >= 2:
        return True
    found = 0
    for name in sorted(names)[:12]:
        sub = folder / name
        if name.startswith(".") or not sub.is_dir():
            continue
        case, _ = _case_folder(sub, [p.name for p in sub.iterdir() if p.is_file()])
        found += case is not None
        if found >= 2:
            return True
    return False


def normalise(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Percentiles (low, high) of the volume -> [0, 1], clipped; one recipe for MR (0-255) and CT (HU)."""
    arr = np.asarray(array, dtype=np.float32)
    sample = arr[:: max(1, arr.shape[0] // 16)].ravel()[::7]  # percentiles of a subsample: fast, stable
    lo, hi = np.percentile(sample, [low, high]) if sample.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    out = (arr - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def _geometry_mismatch(image, label) -> str | None:
    if image.shape != label.shape:
        return f"label shape {label.shape} differs from the image's {image.shape}"
    spacing_i, spacing_l = np.asarray(image.spacing), np.asarray(label.spacing)
    if np.any(np.abs(spacing_i - spacing_l) > GEOMETRY_TOLERANCE * spacing_i):
        return f"label spacing {tuple(label.spacing)} differs from the image's {tuple(image.spacing)}"
    if np.any(np.abs(np.asarray(image.origin) - np.asarray(label.origin)) > max(spacing_i) * 0.5):
        return f"label origin {tuple(label.origin)} differs from the image's {tuple(image.origin)}"
    return None


def load_case(paths: CasePaths) -> Case:
    """Load, check and normalise one case; TrainingDataError naming the files when it cannot be used."""
    from core.io import load_volume

    try:
        image, label = load_volume(paths.image), load_volume(paths.label)
    except SlicewiseError as exc:
        raise TrainingDataError(f"{paths.case_id}: {exc}") from None
    if image.shape[0] < 2:
        raise TrainingDataError(
            f"{paths.image}: a 2D image in a 3D set ({image.shape[1]}x{image.shape[2]} pixels)"
        )
    mismatch = _geometry_mismatch(image, label)
    if mismatch:
        raise TrainingDataError(f"{paths.label}: {mismatch} ({paths.image})")
    mask = (label.array != 0).astype(np.uint8)
    if not mask.any():
        raise TrainingDataError(f"{paths.label}: label has no foreground voxel")
    return Case(paths.case_id, normalise(image.array), mask, tuple(image.spacing))


def load_cases(folder: Path) -> tuple[list[Case], list[str]]:
    """Every usable case under `folder` and the reasons for each skipped one (also logged)."""
    listing = find_cases(folder)
    cases, skipped = [], list(listing.skipped)
    for paths in listing.cases:
        try:
            cases.append(load_case(paths))
        except TrainingDataError as exc:
            skipped.append(f"{exc}; skipped")
    for reason in skipped:
        log.warning(reason)
    if len(cases) < 2:
        detail = "; ".join(skipped[:5]) or "no image/label pairs found"
        raise TrainingDataError(
            f"{folder}: need at least 2 usable image/label cases, found {len(cases)} ({detail})"
        )
    return cases, skipped


def split_cases(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split of sorted case ids; at least one case on each side."""
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_val = min(max(1, int(round(len(ordered) * val_fraction))), len(ordered) - 1)
    val = sorted(ordered[i] for i in order[:n_val])
    return [i for i in ordered if i not in val], val
