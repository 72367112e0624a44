"""The built-in demo data set: synthetic phantoms written as real DICOM, NIfTI and PNG files.

`write_demo_data(out)` writes, under `out`:

    ct/<id>/IM00001.dcm ...        chest CT series (half with ground-glass lesions)
    truth/<id>.npz                 lung_mask, lesion_mask, body_mask (uint8 z,y,x), boxes (z,4) float32
    ct_nifti/CT-0|CT-23/*.nii.gz   small CT volumes per class for the 3D classifier
    xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.png
    brats/<id>/<id>_{flair,t1,t1ce,t2,seg}.nii.gz, brats/name_mapping.csv
    manifest.json                  every case, written last

`truth_for(volume)` finds the ground truth of a loaded volume through that manifest.
An interrupted run never leaves a manifest that points at missing files: the old manifest is
removed first and the new one written last (atomic rename).
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import SlicewiseError
from core.phantoms import SEQUENCES, brain_mri_phantom, chest_ct_phantom, chest_xray

MANIFEST = "manifest.json"
MARKER = ".slicewise-demo"  # written first: marks a folder this module may clear and rewrite
_OWNED = ("ct", "truth", "ct_nifti", "xray", "brats")
BRATS_COLUMNS = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)


class DemoDataError(SlicewiseError):
    """The demo folder cannot be written, or its manifest is malformed."""


@dataclass(frozen=True)
class DemoSizes:
    """How much the demo holds. `SMALL` is for tests: the same layout in a second or two."""

    chest_cases: int = 8
    chest_matrix: int = 256
    chest_slices: tuple[int, int] = (40, 60)
    nifti_per_class: int = 10
    nifti_shape: tuple[int, int, int] = (32, 128, 128)
    xray_per_class: tuple[tuple[str, int], ...] = (("train", 80), ("val", 20), ("test", 8))
    xray_size: int = 256
    brain_patients: int = 8
    brain_shape: tuple[int, int, int] = (64, 96, 96)


FULL = DemoSizes()
SMALL = DemoSizes(
    chest_cases=2,
    chest_matrix=64,
    chest_slices=(12, 14),
    nifti_per_class=1,
    nifti_shape=(12, 64, 64),
    xray_per_class=(("train", 3), ("val", 1), ("test", 1)),
    xray_size=64,
    brain_patients=2,
    brain_shape=(16, 32, 32),
)


@dataclass(eq=False)
class Truth:
    """Known ground truth of one demo volume, in the `(z, y, x)` order of the loaded volume."""

    lung_mask: np.ndarray | None
    lesion_mask: np.ndarray | None
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    body_mask: np.ndarray | None = None
    seg: np.ndarray | None = None  # BraTS labels for brain MRI
    case_id: str = ""
    kind: str = ""
    label: str = ""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def case_seed(seed: int, kind: str, index: int) -> int:
    """A stable per-case seed (crc32, not `hash()`, which changes between interpreter runs)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(kind.encode()), index]).generate_state(1)[0])


def _prepare_folder(out: Path) -> None:
    """Accept an empty/new folder or an earlier demo; clear what an earlier demo wrote."""
    if out.exists() and not out.is_dir():
        raise DemoDataError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    ours = (out / MARKER).exists() or (out / MANIFEST).exists()
    if any(out.iterdir()) and not ours:
        raise DemoDataError(f"{out}: folder is not empty and holds no demo data; choose an empty folder")
    (out / MANIFEST).unlink(missing_ok=True)
    (out / MARKER).write_text("written by core.demo.write_demo_data\n")
    for name in _OWNED:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def save_truth(path: Path, phantom) -> None:
    """A chest phantom's masks and lung boxes as `truth/<case>.npz` (what `truth_for` reads)."""
    from core.atomic import atomic_save_npz

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(path, lung_mask=phantom.lung_mask, lesion_mask=phantom.lesion_mask,
                    body_mask=np.ascontiguousarray(phantom.body_mask), boxes=phantom.boxes)


def _write_chest_ct(out: Path, seed: int, sizes: DemoSizes, progress) -> list[dict]:
    from pydicom.uid import generate_uid

    from core.io.writers import write_dicom_series

    cases = []
    for i in range(sizes.chest_cases):
        case_id, lesions = f"chest_{i:03d}", i % 2 == 1
        rng = np.random.default_rng(case_seed(seed, "chest_ct", i))
        depth = int(rng.integers(sizes.chest_slices[0], sizes.chest_slices[1] + 1))
        spacing = (float(rng.choice([2.0, 2.5, 3.0])), round(float(rng.uniform(0.65, 0.8)), 3))
        spacing = (spacing[0], spacing[1], spacing[1])
        n = sizes.chest_matrix
        ph = chest_ct_phantom((depth, n, n), spacing, seed=case_seed(seed, "chest_ct", i), lesions=lesions)
        entropy = ["slicewise-demo", str(seed), case_id]
        origin = (-(n - 1) / 2 * spacing[2], -(n - 1) / 2 * spacing[1], -round(depth * spacing[0] / 2, 1))
        write_dicom_series(
            np.rint(ph.hu).astype(np.int16),
            out / "ct" / case_id,
            spacing=spacing,
            origin=origin,
            modality="CT",
            series_uid=generate_uid(entropy_srcs=[*entropy, "series"]),
            study_uid=generate_uid(entropy_srcs=[*entropy, "study"]),
            patient_id=f"DEMO-{i:03d}",
            series_description=f"Synthetic chest CT ({ph.label})",
            window=(-600.0, 1500.0),
        )
        save_truth(out / "truth" / f"{case_id}.npz", ph)
        cases.append(
            {"id": case_id, "kind": "chest_ct", "path": f"ct/{case_id}", "label": ph.label,
             "truth": f"truth/{case_id}.npz", "shape": list(ph.hu.shape), "spacing": list(spacing)}
        )
        progress(f"chest CT {i + 1}/{sizes.chest_cases}: {case_id} ({ph.label}, {depth}x{n}x{n})")
    return cases


def _write_ct_nifti(out: Path, seed: int, sizes: DemoSizes, progress) -> list[dict]:
    from core.io.writers import write_nifti

    cases = []
    for cls, lesions in (("CT-0", False), ("CT-23", True)):
        for i in range(sizes.nifti_per_class):
            case_id = f"{cls.replace('-', '').lower()}_{i:03d}"
            s = case_seed(seed, f"ct_nifti/{cls}", i)
            spacing = (5.0, 1.4, 1.4)
            ph = chest_ct_phantom(sizes.nifti_shape, spacing, seed=s, lesions=lesions)
            path = f"ct_nifti/{cls}/{case_id}.nii.gz"
            write_nifti(np.rint(ph.hu).astype(np.int16), out / path, spacing=spacing)
            save_truth(out / "truth" / f"{case_id}.npz", ph)
            cases.append({"id": case_id, "kind": "ct_nifti", "path": path, "label": cls,
                          "truth": f"truth/{case_id}.npz"})
        progress(f"NIfTI CT {cls}: {sizes.nifti_per_class} volumes {sizes.nifti_shape}")
    return cases


def _write_xray(out: Path, seed: int, sizes: DemoSizes, progress) -> list[dict]:
    from core.io.writers import write_png

    cases = []
    for split, count in sizes.xray_per_class:
        for label in ("NORMAL", "PNEUMONIA"):
            for i in range(count):
                s = case_seed(seed, f"xray/{split}/{label}", i)
                xr = chest_xray(sizes.xray_size, seed=s, pneumonia=label == "PNEUMONIA")
                path = f"xray/{split}/{label}/{label.lower()}_{i:03d}.png"
                write_png(np.rint(xr.image * 255).astype(np.uint8), out / path)
                cases.append({"id": f"xray_{split}_{label.lower()}_{i:03d}", "kind": "xray", "path": path,
                              "label": label, "split": split})
        progress(f"X-ray {split}: {count} NORMAL + {count} PNEUMONIA")
    return cases


def _write_brats(out: Path, seed: int, sizes: DemoSizes, progress) -> list[dict]:
    from core.io.writers import write_nifti

    cases, rows = [], []
    for i in range(sizes.brain_patients):
        case_id, grade = f"BraTS20_Training_{i + 1:03d}", ("HGG", "LGG")[i % 2]
        s = case_seed(seed, "brats", i)
        ph = brain_mri_phantom(sizes.brain_shape, (2.0, 2.0, 2.0), seed=s, grade=grade)
        files = {}
        for name in (*SEQUENCES, "seg"):
            array = ph.seg if name == "seg" else np.rint(ph.images[name]).astype(np.int16)
            files[name] = f"brats/{case_id}/{case_id}_{name}.nii.gz"
            write_nifti(array, out / files[name], spacing=ph.spacing)
        rows.append({"Grade": grade, "BraTS_2020_subject_ID": case_id})
        cases.append({"id": case_id, "kind": "brain_mri", "path": f"brats/{case_id}", "label": grade,
                      "files": files})
        progress(f"brain MRI {i + 1}/{sizes.brain_patients}: {case_id} ({grade})")
    with open(out / "brats" / "name_mapping.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=BRATS_COLUMNS, restval="NA")
        writer.writeheader()
        writer.writerows(rows)
    return cases


def _write_manifest(out: Path, manifest: dict) -> None:
    from core.atomic import atomic_write_json

    atomic_write_json(out / MANIFEST, manifest)


def _family_demo_hooks() -> dict[str, Callable]:
    """{demo folder: writer} of the families that write their own part of the demo data
    (`ModelSpec.demo_folder` / `demo_data`); each writer returns its manifest cases."""
    from core.models import list_specs

    return {spec.demo_folder: spec.demo_data for spec in list_specs() if spec.demo_data and spec.demo_folder}


def _disk_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_demo_data(
    out: str | Path,
    seed: int = 0,
    progress: Callable[[str], object] = print,
    small: bool = False,
    roots: Iterable[str | Path] | None = None,
) -> Path:
    """Write the demo data set under `out` (see module docstring); returns `out`.

    With `roots` (a target a user chose), `out` must lie under one of them (core.confine:
    symlinks resolved; PathOutsideRootError otherwise) before anything is created or cleared.

    Deterministic for a seed (pixels and masks; DICOM SOPInstanceUIDs and dates are new each
    run). `small=True` writes the same layout at toy sizes for tests. `out` must be empty, new,
    or an earlier demo folder (whose files are replaced).
    """
    from core.confine import confine

    out = confine(out, roots) if roots is not None else Path(out)
    sizes = SMALL if small else FULL
    started = time.perf_counter()
    _prepare_folder(out)
    cases = []
    hooks = _family_demo_hooks()  # a family that writes its own demo folder replaces the base step
    base = {"ct": _write_chest_ct, "ct_nifti": _write_ct_nifti, "xray": _write_xray, "brats": _write_brats}
    for folder, step in base.items():
        if folder not in hooks:
            cases += step(out, seed, sizes, progress)
    for folder, hook in hooks.items():
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)
        cases += list(hook(out, seed, small, progress))
    _write_manifest(out, {"version": 1, "seed": int(seed), "small": bool(small), "cases": cases})
    megabytes = _disk_size(out) / 1e6
    seconds = time.perf_counter() - started
    progress(f"demo data: {len(cases)} cases, {megabytes:.1f} MB in {out} ({seconds:.1f} s)")
    return out


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _read_manifest(path: str, mtime_ns: int) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DemoDataError(f"{path}: cannot read the demo manifest ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), list):
        raise DemoDataError(f"{path}: not a demo manifest (no 'cases' list)")
    for i, case in enumerate(manifest["cases"]):
        if not isinstance(case, dict) or not {"id", "kind", "path"} <= set(case):
            raise DemoDataError(f"{path}: case {i} lacks one of 'id', 'kind', 'path'")
    return manifest


def load_manifest(root: str | Path) -> dict:
    """The manifest of a demo folder; DemoDataError when missing or malformed."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DemoDataError(f"{path}: no demo manifest here")
    return _read_manifest(str(path.resolve()), path.stat().st_mtime_ns)


def _find_case(source: Path) -> tuple[Path, dict] | None:
    """The nearest manifest above `source` and the case whose path holds it."""
    for root in source.parents:
        if (root / MANIFEST).is_file():
            rel = source.relative_to(root).as_posix()
            for case in load_manifest(root)["cases"]:
                paths = [case["path"], *case.get("files", {}).values()]
                if rel in paths or (case["kind"] == "chest_ct" and rel.startswith(case["path"] + "/")):
                    return root, case
            return None
    return None


def _boxes_dict(boxes: np.ndarray) -> dict[int, tuple[float, float, float, float]]:
    return {int(z): tuple(float(v) for v in row) for z, row in enumerate(boxes) if np.isfinite(row).all()}


def truth_for(volume) -> Truth | None:
    """Ground truth of a volume loaded from a demo folder, or None.

    Matches `volume.source` against the paths in the nearest manifest.json above it. Truth whose
    shape does not fit the volume (e.g. a single slice loaded out of a series) is not returned.
    """
    if not getattr(volume, "source", ""):
        return None
    source = Path(volume.source).resolve()
    found = _find_case(source)
    if found is None:
        return None
    root, case = found
    shape = tuple(volume.array.shape)
    if case.get("truth"):
        with np.load(root / case["truth"]) as npz:
            if tuple(npz["lung_mask"].shape) != shape:
                return None
            return Truth(
                lung_mask=npz["lung_mask"], lesion_mask=npz["lesion_mask"],
                boxes=_boxes_dict(npz["boxes"]), body_mask=npz["body_mask"],
                case_id=case["id"], kind=case["kind"], label=case.get("label", ""),
            )
    seg_path = case.get("files", {}).get("seg")
    if seg_path:
        from core.io import load_volume

        seg = load_volume(root / seg_path).array.astype(np.uint8)
        if seg.shape != shape:
            return None
        return Truth(lung_mask=None, lesion_mask=(seg > 0).astype(np.uint8), seg=seg,
                     case_id=case["id"], kind=case["kind"], label=case.get("label", ""))
    return None
