"""BraTS training data: patients and grades, per-sequence normalisation, tumour slices as [4, H, W].

Layout: `<root>/<id>/<id>_{flair,t1,t1ce,t2,seg}.nii(.gz)` with `<root>/name_mapping.csv`
(the grade column `Grade`; the patient column any of the BraTS ones, e.g.
`BraTS_2020_subject_ID`), or the BraTS 2018/2019 layout `<root>/HGG/<id>/...` and
`<root>/LGG/<id>/...` (the grade from the folder). A demo root whose `brats/` holds such a
folder is accepted too. A patient that cannot be used (a sequence missing, sequences of
different shapes, no mask, not in name_mapping.csv) is skipped with a message naming the file;
the rest of the data set is used. Fewer than two grades left is a TrainingDataError.

Normalisation: per sequence, z-score over the brain (its non-zero voxels, the skull-stripped
BraTS convention), clipped to [-5, 5]; the background stays 0. Slices are resized to
`image_size` squared with bilinear, antialiased interpolation, once per data set: the stacks are
cached as float16 `.npy` files under `<run>/slices/` and memory-mapped by the datasets.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import SlicewiseError, TrainingDataError, VolumeReadError
from core.multi_sequence import SEQUENCES, load_sequences, sequence_files, tumour_slices

log = logging.getLogger("slicewise.train")

CLASSES = ("LGG", "HGG")
MAPPING = "name_mapping.csv"
GRADE_COLUMNS = ("Grade", "grade", "GRADE", "Grade (LGG/HGG)", "label", "Label")
ID_COLUMNS = (
    "BraTS_2021_subject_ID",
    "BraTS_2020_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2018_subject_ID",
    "BraTS_2017_subject_ID",
    "BraTS20ID",
    "BraTS2020_ID",
    "subject_ID",
    "Subject_ID",
    "ID",
    "id",
    "patient",
    "Patient",
)
Z_CLIP = 5.0
PREPARED_VERSION = 1


@dataclass(frozen=True)
class Patient:
    patient_id: str
    folder: Path
    grade: str  # "LGG" | "HGG"

    @property
    def label(self) -> int:
        return CLASSES.index(self.grade)


@dataclass
class BratsIndex:
    root: Path
    patients: list[Patient]
    skipped: list[str]  # one message per patient not used, naming the file


# ------------------------------------------------------------------ finding patients and grades


def brats_root(data: Path) -> Path:
    """`data` itself, or its `brats/` when `data` is a demo root holding one."""
    data = Path(data).expanduser()
    if not data.is_dir():
        raise TrainingDataError(f"{data}: not a folder (expected a BraTS training folder)")
    if not (data / MAPPING).is_file() and (data / "brats" / MAPPING).is_file():
        return data / "brats"
    return data


def _grade(value: str) -> str | None:
    text = str(value).strip().upper()
    return text if text in CLASSES else None


def read_name_mapping(path: Path) -> tuple[dict[str, str], list[str]]:
    """{patient id: grade} from a BraTS name_mapping.csv, and messages about rows it could not use."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            grade_col = next((c for c in GRADE_COLUMNS if c in fields), None)
            id_cols = [c for c in ID_COLUMNS if c in fields] or [
                f for f in fields if "subject_id" in f.lower()
            ]
            if grade_col is None or not id_cols:
                raise TrainingDataError(
                    f"{path}: needs a grade column ({', '.join(GRADE_COLUMNS[:1])}) and a patient id column "
                    f"(e.g. BraTS_2020_subject_ID); found {fields}"
                )
            grades, problems = {}, []
            for line, row in enumerate(reader, start=2):
                grade = _grade(row.get(grade_col) or "")
                ids = [str(row.get(c) or "").strip() for c in id_cols]
                ids = [i for i in ids if i and i.upper() not in ("NA", "NAN", "")]
                if grade is None:
                    problems.append(f"{path} line {line}: grade {row.get(grade_col)!r} is not LGG or HGG")
                    continue
                for patient_id in ids:
                    grades[patient_id] = grade
    except OSError as exc:
        raise TrainingDataError(f"{path}: cannot be read ({exc})") from None
    except csv.Error as exc:
        raise TrainingDataError(f"{path}: not a readable CSV ({exc})") from None
    return grades, problems


def _looks_like_patient(folder: Path) -> bool:
    """A folder holding sequence files (an ambiguous one too: loading it later names the problem)."""
    try:
        return bool(sequence_files(folder))
    except VolumeReadError:
        return True


def _patient_folders(root: Path) -> list[Path]:
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _looks_like_patient(p)
    )


def index_brats(data: Path) -> BratsIndex:
    """Every usable-looking patient of a BraTS folder with its grade (files not opened yet)."""
    root = brats_root(data)
    patients: list[Patient] = []
    skipped: list[str] = []
    if (root / MAPPING).is_file():
        grades, skipped = read_name_mapping(root / MAPPING)
        for folder in _patient_folders(root):
            grade = grades.get(folder.name)
            if grade is None:
                skipped.append(f"{root / MAPPING}: no grade for patient {folder.name} ({folder}); skipped")
                continue
            patients.append(Patient(folder.name, folder, grade))
    else:
        for grade in CLASSES:
            if (root / grade).is_dir():
                patients += [Patient(f.name, f, grade) for f in _patient_folders(root / grade)]
    if not patients:
        raise TrainingDataError(
            f"{root}: no patient folders with a grade (expected <id>/<id>_flair.nii(.gz) ... "
            f"and {MAPPING}, or HGG/ and LGG/ folders of patients)"
        )
    return BratsIndex(root, patients, skipped)


def split_patients(
    patients: list[Patient], val_fraction: float, seed: int
) -> tuple[list[Patient], list[Patient]]:
    """A seeded split by patient, per grade: at least one validation and one training patient per grade."""
    rng = np.random.default_rng(int(seed))
    train, val = [], []
    for grade in CLASSES:
        group = sorted((p for p in patients if p.grade == grade), key=lambda p: p.patient_id)
        order = [group[i] for i in rng.permutation(len(group))]
        n_val = min(max(int(round(len(group) * float(val_fraction))), 1), len(group) - 1)
        val += order[:n_val]
        train += order[n_val:]
    return train, val


# ------------------------------------------------------------------ preprocessing


def normalise_brain(array: np.ndarray) -> np.ndarray:
    """z-score over the non-zero (brain) voxels, clipped to [-Z_CLIP, Z_CLIP]; 0 outside the brain."""
    array = np.asarray(array, np.float32)
    brain = array != 0
    out = np.zeros_like(array)
    if brain.sum() < 2:
        return out
    values = array[brain]
    mean, std = float(values.mean()), float(values.std())
    out[brain] = np.clip((values - mean) / max(std, 1e-6), -Z_CLIP, Z_CLIP)
    return out


def brain_slices(stack: np.ndarray, min_fraction: float = 0.05) -> np.ndarray:
    """Axial indexes showing brain: brain area at least `min_fraction` of the largest slice's."""
    area = (np.abs(stack) > 0).any(axis=0).reshape(stack.shape[1], -1).sum(axis=1)
    if area.max() == 0:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(area >= max(1.0, min_fraction * float(area.max())))


def resize_slices(stack: np.ndarray, z_indexes: np.ndarray, size: int) -> np.ndarray:
    """(4, z, y, x) normalised stack -> float32 (n, 4, size, size) for the given axial slices."""
    chosen = torch.from_numpy(np.ascontiguousarray(stack[:, z_indexes].transpose(1, 0, 2, 3)))
    if tuple(chosen.shape[-2:]) == (size, size):
        return chosen.numpy().astype(np.float32)
    out = torch.nn.functional.interpolate(
        chosen, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.numpy().astype(np.float32)


@dataclass(eq=False)
class PatientInput:
    """A patient's normalised (4, z, y, x) stack, its mask (or None) and the FLAIR Volume (reference)."""

    stack: np.ndarray
    seg: np.ndarray | None
    reference: Any  # core.volume.Volume


def load_patient(folder: Path, need_seg: bool = False) -> PatientInput:
    """Load and normalise the four sequences of a patient folder (errors name the file)."""
    sequences = load_sequences(folder, need_seg=need_seg)
    stack = np.stack([normalise_brain(sequences.volumes[name].array) for name in SEQUENCES])
    return PatientInput(stack, sequences.seg, sequences.reference)


def input_slices(patient: PatientInput, min_tumour_pixels: int = 1) -> np.ndarray:
    """The slices a prediction uses: the tumour slices when there is a mask, else every brain slice."""
    chosen = tumour_slices(patient.seg, min_tumour_pixels)
    return chosen if chosen.size else brain_slices(patient.stack)


# ------------------------------------------------------------------ the prepared (cached) slices


@dataclass(frozen=True)
class PatientSlices:
    patient: Patient
    path: Path  # float16 (n, 4, size, size)
    z: tuple[int, ...]


def _prepared_key(patients: list[Patient], size: int, min_pixels: int) -> str:
    text = json.dumps(
        [
            PREPARED_VERSION,
            size,
            min_pixels,
            [(p.patient_id, str(p.folder.resolve()), p.grade) for p in patients],
        ]
    )
    return hashlib.sha1(text.encode()).hexdigest()


def prepare_slices(
    index: BratsIndex, out: Path, size: int, min_pixels: int, progress: Callable[[str], Any] = log.info
) -> tuple[list[PatientSlices], list[str]]:
    """Tumour slices of every patient, normalised and resized once, as `<out>/<id>.npy` (float16).

    Reused when `<out>/prepared.json` records the same patients and settings (a resumed run).
    Returns the prepared patients and the skip messages (the index's and those found here).
    """
    out = Path(out)
    key = _prepared_key(index.patients, size, min_pixels)
    marker = out / "prepared.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("key") == key:
            by_id = {p.patient_id: p for p in index.patients}
            done = [PatientSlices(by_id[i], out / f"{i}.npy", tuple(z)) for i, z in saved["slices"].items()]
            return done, list(saved["skipped"])
    out.mkdir(parents=True, exist_ok=True)
    prepared, skipped = [], list(index.skipped)
    for n, patient in enumerate(index.patients, start=1):
        try:
            loaded = load_patient(patient.folder, need_seg=True)
        except SlicewiseError as exc:
            skipped.append(f"{exc}; patient {patient.patient_id} skipped")
            continue
        z = tumour_slices(loaded.seg, min_pixels)
        if z.size == 0:
            skipped.append(
                f"{patient.folder}: the mask has no tumour slice (>= {min_pixels} voxels); skipped"
            )
            continue
        np.save(out / f"{patient.patient_id}.npy", resize_slices(loaded.stack, z, size).astype(np.float16))
        prepared.append(PatientSlices(patient, out / f"{patient.patient_id}.npy", tuple(int(i) for i in z)))
        if n % 10 == 0 or n == len(index.patients):
            progress(f"prepared {n}/{len(index.patients)} patients")
    marker.write_text(
        json.dumps(
            {"key": key, "skipped": skipped, "slices": {p.patient.patient_id: list(p.z) for p in prepared}}
        )
    )
    return prepared, skipped


class SliceDataset(Dataset):
    """(x float32 [4, S, S], grade label, patient number) over the prepared slices of some patients.

    Augmentation (flips) happens per batch in the LightningModule, not here.
    """

    def __init__(self, patients: list[PatientSlices]) -> None:
        self.patients = patients
        self.arrays = [np.load(p.path, mmap_mode="r") for p in patients]
        self.items = [(i, j) for i, array in enumerate(self.arrays) for j in range(array.shape[0])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        p, j = self.items[index]
        x = torch.from_numpy(np.array(self.arrays[p][j], dtype=np.float32))
        return x, self.patients[p].patient.label, p

    def labels(self) -> np.ndarray:
        return np.array([self.patients[p].patient.label for p, _ in self.items])
