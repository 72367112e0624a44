"""Co-registered MR sequences of one patient folder (BraTS layout), for display and for models.

A patient folder holds `<id>_flair`, `<id>_t1`, `<id>_t1ce`, `<id>_t2` and optionally
`<id>_seg` as `.nii` or `.nii.gz`. `load_sequences(folder)` reads them through
`core.io.load_volume` (so every sequence is reoriented the same way) and checks that they
share one grid; `sequence_views(sequences, z)` gives, for one axial slice, each sequence as a
uint8 image windowed with its own percentile window (1st-99th percentile of the brain, the
non-zero voxels) and the tumour mask, so that a page can show the four side by side at the
same slice and position. `probability_strip(...)` draws per-slice probabilities as a small
RGB strip (one column block per slice). Pure functions: no Streamlit, no torch.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import VolumeReadError
from core.volume import Volume

SEQUENCES = ("flair", "t1", "t1ce", "t2")
SEG = "seg"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
WINDOW_PERCENTILES = (1.0, 99.0)
_NAME = re.compile(r"^(?P<stem>.+)_(?P<kind>flair|t1ce|t1|t2|seg)\.nii(\.gz)?$", re.IGNORECASE)


def sequence_files(folder: str | Path) -> dict[str, Path]:
    """{"flair" | "t1" | "t1ce" | "t2" | "seg": path} of the NIfTI files found in a patient folder.

    Names end in `_<kind>.nii` or `_<kind>.nii.gz` (any case). Two files of one kind is an error
    naming both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeReadError(folder, "not a folder (expected a patient folder of NIfTI sequences)")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if not match or not path.is_file():
            continue
        kind = match["kind"].lower()
        if kind in found:
            raise VolumeReadError(path, f"a second {kind} file in the folder (also {found[kind].name})")
        found[kind] = path
    return found


def require_sequences(folder: str | Path) -> dict[str, Path]:
    """`sequence_files`, with a VolumeReadError naming the folder and each missing sequence."""
    files = sequence_files(folder)
    missing = [name for name in SEQUENCES if name not in files]
    if missing:
        stem = Path(folder).name
        wanted = ", ".join(f"{stem}_{m}.nii(.gz)" for m in missing)
        raise VolumeReadError(folder, f"missing sequence(s) {', '.join(missing)} (expected {wanted})")
    return files


@dataclass(eq=False)
class SequenceSet:
    """The four sequences of one patient on one grid; `seg` (uint8 labels) when the folder has one."""

    folder: Path
    volumes: dict[str, Volume]
    seg: np.ndarray | None
    files: dict[str, Path]
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (low, high)

    @property
    def reference(self) -> Volume:
        """The FLAIR volume: its id and geometry key predictions and overlays."""
        return self.volumes["flair"]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.reference.shape


def brain_window(
    array: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES
) -> tuple[float, float]:
    """(low, high) percentiles of the non-zero voxels (the skull-stripped brain); (0, 1) when empty."""
    inside = array[array != 0]
    if inside.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(inside, percentiles))
    return (low, high) if high > low else (low, low + 1.0)


def load_sequences(folder: str | Path, need_seg: bool = False) -> SequenceSet:
    """Load FLAIR, T1, T1ce, T2 (and the seg when present) of a patient folder, checked for one grid.

    Errors (VolumeReadError) name the folder for a missing sequence and the file whose shape
    differs from the FLAIR's.
    """
    folder = Path(folder)
    files = require_sequences(folder)
    if need_seg and SEG not in files:
        raise VolumeReadError(folder, f"missing the tumour mask ({folder.name}_seg.nii(.gz))")
    from core.io import load_volume

    volumes = {name: load_volume(files[name]) for name in SEQUENCES}
    seg = load_volume(files[SEG]).array if SEG in files else None
    reference = volumes["flair"]
    others = [(files[n], volumes[n].shape) for n in SEQUENCES[1:]]
    if seg is not None:
        others.append((files[SEG], seg.shape))
    for path, shape in others:
        if tuple(shape) != tuple(reference.shape):
            raise VolumeReadError(
                path,
                f"shape {tuple(shape)} differs from the FLAIR's "
                f"{tuple(reference.shape)} ({files['flair'].name}); sequences "
                "must be co-registered on one grid",
            )
    mask = None if seg is None else np.rint(seg).astype(np.uint8)
    windows = {name: brain_window(volumes[name].array) for name in SEQUENCES}
    return SequenceSet(folder, volumes, mask, files, windows)


def window_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear window [low, high] -> uint8 [0, 255]."""
    scaled = (np.asarray(image, np.float32) - low) / max(high - low, 1e-6)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class SequenceViews:
    """One axial slice of every sequence, windowed: {name: uint8 (y, x)}, the mask (or None), the index."""

    z: int
    images: dict[str, np.ndarray]
    mask: np.ndarray | None
    windows: dict[str, tuple[float, float]]


def sequence_views(
    sequences: SequenceSet, z: int, windows: dict[str, tuple[float, float]] | None = None
) -> SequenceViews:
    """Slice `z` of the four sequences, each windowed on its own (`windows` overrides per name)."""
    depth = sequences.shape[0]
    if not 0 <= int(z) < depth:
        raise IndexError(f"slice {z} outside 0..{depth - 1} of {sequences.folder}")
    chosen = {**sequences.windows, **(windows or {})}
    images = {name: window_uint8(sequences.volumes[name].array[int(z)], *chosen[name]) for name in SEQUENCES}
    mask = None if sequences.seg is None else sequences.seg[int(z)]
    return SequenceViews(int(z), images, mask, {n: chosen[n] for n in SEQUENCES})


def tumour_slices(seg: np.ndarray | None, min_pixels: int = 1) -> np.ndarray:
    """Axial indexes whose mask has at least `min_pixels` tumour voxels (empty without a mask)."""
    if seg is None:
        return np.zeros(0, dtype=int)
    return np.flatnonzero((seg > 0).reshape(seg.shape[0], -1).sum(axis=1) >= max(int(min_pixels), 1))


def largest_tumour_slice(seg: np.ndarray | None) -> int | None:
    """The axial slice with the most tumour voxels (a good first slice to show), else None."""
    if seg is None or not (seg > 0).any():
        return None
    return int(np.argmax((seg > 0).reshape(seg.shape[0], -1).sum(axis=1)))


# ------------------------------------------------------------------ slice probabilities as a strip

_LOW = np.array([49, 130, 189], np.float32)  # blue: probability 0
_HIGH = np.array([222, 45, 38], np.float32)  # red: probability 1
_MISSING = np.array([200, 200, 200], np.uint8)  # grey: slice not used


def probability_strip(
    probabilities: np.ndarray, height: int = 24, slice_width: int = 4, current: int | None = None
) -> np.ndarray:
    """uint8 RGB (height, z * slice_width, 3): one block per slice, blue (p=0) to red (p=1), grey for NaN.

    `probabilities` is (z,) (e.g. one column of `Prediction.slice_probabilities`); `current`
    marks that slice with a black frame.
    """
    p = np.asarray(probabilities, np.float32).reshape(-1)
    colours = np.empty((p.size, 3), np.uint8)
    known = np.isfinite(p)
    t = np.clip(p[known], 0.0, 1.0)[:, None]
    colours[known] = np.rint(_LOW * (1 - t) + _HIGH * t).astype(np.uint8)
    colours[~known] = _MISSING
    strip = np.repeat(colours[None], int(height), axis=0)
    strip = np.repeat(strip, int(slice_width), axis=1)
    if current is not None and 0 <= int(current) < p.size:
        x0, x1 = int(current) * slice_width, (int(current) + 1) * slice_width - 1
        strip[:, [x0, x1]] = 0
        strip[[0, -1], x0 : x1 + 1] = 0
    return strip


def probability_strip_png(
    probabilities: np.ndarray, height: int = 24, slice_width: int = 4, current: int | None = None
) -> bytes:
    """`probability_strip` encoded as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(probability_strip(probabilities, height, slice_width, current), mode="RGB")
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def find_patient_folders(root: str | Path, max_depth: int = 4, limit: int = 500) -> list[Path]:
    """Folders under `root` (breadth first, hidden ones skipped) holding a FLAIR sequence file,
    the patient folders Predict & review and the Viewer offer; at most `limit`."""
    root = Path(root)
    found: list[Path] = []
    queue = [(root, 0)]
    while queue and len(found) < limit:
        folder, depth = queue.pop(0)
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        if any(_NAME.match(p.name) and _NAME.match(p.name)["kind"].lower() == "flair" for p in entries):
            found.append(folder)
            continue
        if depth < max_depth:
            queue.extend((p, depth + 1) for p in entries if p.is_dir() and not p.name.startswith(".")
                         and not p.is_symlink())
    return found


def patient_folder_of(path: str | Path) -> Path | None:
    """The patient folder of a sequence file (`<id>_flair.nii.gz` ...), when it holds all four sequences."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        files = sequence_files(folder)
    except VolumeReadError:
        return None
    return folder if all(name in files for name in SEQUENCES) else None
