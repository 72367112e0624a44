"""What the Annotations (review) page decides, without Streamlit.

- `review_rows(store)`: one `ReviewRow` per annotated slice with its annotator, time, status
  (a person's box is "confirmed"; a row still by annotator `auto` (HU rule) or `model:<run>` (a
  trained localizer) is an "unconfirmed" proposal) and, from the change log, the last proposal of
  that slice, so that the IoU between the proposal and the box a person saved shows how good
  pre-annotation is.
- `filter_rows`, `iou_summary`: the page's filters and the headline numbers.
- `root_slice_counts(root)`: slices per volume over a data root from headers only (DICOM
  headers, NIfTI/NRRD headers, 1 per PNG/JPEG), cached by path and mtime; `ct_progress`.
- `thumbnail_url(locator, row)`: a small windowed PNG of the slice with its box, as a data URL.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.annotate import is_proposal, proposal_annotator
from core.annotations import COORDS, BoxStore
from core.boxes import Box
from core.errors import SlicewiseError, VolumeReadError
from core.export import ImportReport
from core.propose import box_iou

CONFIRMED, UNCONFIRMED = "confirmed", "unconfirmed"
STATUSES = (CONFIRMED, UNCONFIRMED)
UNCHANGED_IOU = 0.999  # a proposal confirmed as it was (rounding to 1e-6 of the width aside)
GOOD_IOU = 0.9
THUMBNAIL_PX = 96
_FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ReviewRow:
    """One annotated slice as the review table shows it."""

    image: str
    volume: str
    slice: int
    annotator: str
    updated: str
    box: Box
    proposal: Box | None = None  # the last proposal (rule or model) this slice had, from the change log

    @property
    def status(self) -> str:
        return UNCONFIRMED if proposal_annotator(self.annotator) else CONFIRMED

    @property
    def source(self) -> str | None:
        """"rule" or "model" while unconfirmed; None for a person's box."""
        return proposal_annotator(self.annotator)

    @property
    def iou(self) -> float | None:
        """IoU of the proposal with the box a person saved; None while unconfirmed or never proposed."""
        if self.status != CONFIRMED or self.proposal is None:
            return None
        return box_iou(self.proposal, self.box)


def _box(row: Mapping) -> Box:
    return tuple(float(row[c]) for c in COORDS)  # type: ignore[return-value]


def latest_proposals(history: Iterable[Mapping]) -> dict[str, Box]:
    """{slice id: box} of the last change-log entry of each slice that wrote a proposal (`auto` or
    `model:<run>`)."""
    proposals: dict[str, Box] = {}
    for entry in history:
        new = entry.get("new")
        if isinstance(new, Mapping) and is_proposal(new):
            try:
                proposals[str(entry.get("image"))] = _box(new)
            except (KeyError, TypeError, ValueError):
                continue  # a hand-edited log line: skip it, the CSV is the truth
    return proposals


def review_rows(store: BoxStore, volume: str | None = None) -> list[ReviewRow]:
    """The store's rows (one volume's, or all) with their proposals, sorted by volume and slice."""
    rows = [r for r in store.rows() if volume is None or r["Volume"] == volume]
    proposals = latest_proposals(store.history()) if rows else {}
    out = [ReviewRow(r["Image"], r["Volume"], int(r["Slice"]), r["Annotator"], r["Updated"], _box(r),
                     proposals.get(r["Image"])) for r in rows]
    return sorted(out, key=lambda r: (r.volume, r.slice))


def annotators(rows: Iterable[ReviewRow]) -> list[str]:
    return sorted({r.annotator for r in rows})


def filter_rows(rows: Iterable[ReviewRow], *, annotators: Iterable[str] | None = None,
                status: str | None = None, volume: str | None = None) -> list[ReviewRow]:
    """Rows by these annotators (None or empty: any), of this status (None: any), of this volume."""
    wanted = set(annotators or ())
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES} or None, got {status!r}")
    return [r for r in rows
            if (not wanted or r.annotator in wanted)
            and (status is None or r.status == status)
            and (volume is None or r.volume == volume)]


@dataclass(frozen=True)
class IouSummary:
    """How far confirmed proposals were from the boxes people saved."""

    n: int
    mean: float
    median: float
    minimum: float
    unchanged: int  # confirmed as proposed
    good: int  # IoU >= GOOD_IOU

    def text(self) -> str:
        return (f"{self.n} confirmed proposal(s): IoU proposal → final mean {self.mean:.3f}, "
                f"median {self.median:.3f}, min {self.minimum:.3f}; {self.unchanged} accepted unchanged, "
                f"{self.good} with IoU ≥ {GOOD_IOU}")


def iou_summary(rows: Iterable[ReviewRow]) -> IouSummary | None:
    """None when no confirmed row had a proposal."""
    values = [r.iou for r in rows if r.iou is not None]
    if not values:
        return None
    return IouSummary(len(values), statistics.fmean(values), statistics.median(values), min(values),
                      sum(v >= UNCHANGED_IOU for v in values), sum(v >= GOOD_IOU for v in values))


TABLE_COLUMNS = ("Thumbnail", "Volume", "Slice", "Annotator", "Status", "Updated", "IoU proposal→final",
                 "Image")


def table_records(rows: Iterable[ReviewRow], thumbnails: Mapping[str, str | None] | None = None,
                  volume_names: Mapping[str, str] | None = None) -> list[dict]:
    """Rows as the page's table records (thumbnail data URL, volume name, slice, annotator, status,
    time, IoU; NaN where there is no IoU). `volume_names` maps volume ids to what to show."""
    thumbnails, volume_names = thumbnails or {}, volume_names or {}
    return [{"Thumbnail": thumbnails.get(r.image), "Volume": volume_names.get(r.volume, r.volume),
             "Slice": r.slice, "Annotator": r.annotator, "Status": r.status, "Updated": r.updated,
             "IoU proposal→final": math.nan if r.iou is None else round(r.iou, 4), "Image": r.image}
            for r in rows]


# --------------------------------------------------------------------------------- data-root progress


@dataclass
class RootCounts:
    """{volume id: number of slices} over a data root, and what could not be counted."""

    slices: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.slices.values())


def _signature(path: Path) -> int:
    """Changes when a folder gains or loses files, or a file is rewritten."""
    stat = path.stat()
    return stat.st_mtime_ns if path.is_dir() else stat.st_mtime_ns ^ stat.st_size


def _dicom_folder_counts(folder: Path) -> list[tuple[str, int]]:
    from core.io.dicom import dicom_files_in, read_header

    per_series: dict[str, int] = defaultdict(int)
    for path in dicom_files_in(folder):
        try:
            ds = read_header(path, tags=("SeriesInstanceUID", "SOPInstanceUID", "NumberOfFrames", "Rows",
                                         "Modality"))
        except VolumeReadError:
            continue  # not DICOM (or broken): the loader reports it when the series is opened
        if "Rows" not in ds or str(ds.get("Modality") or "CT").upper() != "CT":
            continue  # no image, or not CT (an MR or X-ray series is no lung-box work)
        per_series[str(ds.get("SeriesInstanceUID") or folder.name)] += int(ds.get("NumberOfFrames") or 1)
    return sorted(per_series.items())


def _dicom_file_counts(path: Path) -> list[tuple[str, int]]:
    from core.io.dicom import read_header

    ds = read_header(path, tags=("SeriesInstanceUID", "SOPInstanceUID", "NumberOfFrames"))
    volume_id = str(ds.get("SeriesInstanceUID") or ds.get("SOPInstanceUID") or path.name)
    return [(volume_id, int(ds.get("NumberOfFrames") or 1))]


def _axial_count(shape: tuple[int, ...], affine_lps: np.ndarray) -> int:
    """Slices along the voxel axis that the canonical (LPS) layout turns into z (superior)."""
    from nibabel.orientations import io_orientation

    if len(shape) < 3:
        return 1
    ornt = io_orientation(affine_lps)
    axis = int(np.flatnonzero(ornt[:, 0] == 2)[0]) if (ornt[:, 0] == 2).any() else 2
    return int(shape[axis])


def _nifti_count(path: Path) -> int:
    import nibabel as nib

    try:
        img = nib.load(str(path))  # header only: the data stays on disk
    except Exception as exc:  # nibabel raises many types for broken files
        raise VolumeReadError(path, f"cannot read the NIfTI header ({type(exc).__name__}: {exc})") from exc
    return _axial_count(tuple(img.shape[:3]), np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine)


def _nrrd_count(path: Path) -> int:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(path, f"cannot read the NRRD header ({exc})") from exc
    size = tuple(reader.GetSize())
    if len(size) < 3:
        return 1
    spacing, direction = reader.GetSpacing()[:3], np.asarray(reader.GetDirection()).reshape(len(size), -1)
    affine = np.eye(4)
    affine[:3, :3] = direction[:3, :3] * np.asarray(spacing)
    return _axial_count(size[:3], affine)


@functools.lru_cache(maxsize=4096)
def _volume_counts(path_text: str, signature: int) -> tuple[tuple[str, int], ...]:
    from core.io._common import file_volume_id

    path = Path(path_text)
    name = path.name.lower()
    if path.is_dir():
        return tuple(_dicom_folder_counts(path))
    if name.endswith((".nii", ".nii.gz")):
        return ((file_volume_id(path), _nifti_count(path)),)
    if name.endswith((".nrrd", ".nhdr")):
        return ((file_volume_id(path), _nrrd_count(path)),)
    if name.endswith((".png", ".jpg", ".jpeg")):
        return ((file_volume_id(path), 1),)
    return tuple(_dicom_file_counts(path))


_NOT_CHEST_CT = re.compile(r"(^|[_\-.])(seg|label|mask|laendo)([_\-.]|$)", re.IGNORECASE)


def lung_box_candidate(path: Path) -> bool:
    """Whether a volume counts towards lung-box progress: not a 2D image (X-rays), not an MR sequence
    or a label file by its name (brain MRI, segmentation labels), not a segmentation case image."""
    from core.io._common import _MR_NAME

    name = Path(path).name
    stem = name.split(".")[0]
    if name.lower().endswith((".png", ".jpg", ".jpeg")):
        return False
    if _MR_NAME.search(stem) or _NOT_CHEST_CT.search(stem):
        return False
    return not (Path(path).parent / f"label{''.join(Path(path).suffixes)}").exists()


def root_slice_counts(root: str | Path) -> RootCounts:
    """Slices per volume id under `root` from headers only (no pixel data), cached per path and mtime.

    Only lung-box work counts: CT volumes (DICOM series whose Modality is CT; NIfTI / NRRD files
    that `lung_box_candidate` keeps by name), never X-rays, MR sequences or label files.

    Volume ids are the ones the loader gives (SeriesInstanceUID, or the path relative to the data
    root), so annotation rows match them.
    """
    from core.io import find_volumes

    counts = RootCounts()
    for path in find_volumes(Path(root)):
        if not lung_box_candidate(path):
            continue
        try:
            found = _volume_counts(str(path), _signature(path))
        except SlicewiseError as exc:
            counts.problems.append(str(exc))  # names the file already
            continue
        except OSError as exc:
            counts.problems.append(f"{path}: {exc}")
            continue
        for volume_id, n in found:
            counts.slices[volume_id] = counts.slices.get(volume_id, 0) + n
    return counts


# ------------------------------------------------------------------------------------ honest progress
# Confirmed boxes (a person drew or accepted them) and proposals (HU rule `auto`, trained localizer
# `model:<run>`) are counted apart: a proposal nobody looked at is not a done slice.


@dataclass(frozen=True)
class BoxCounts:
    """Slices holding a confirmed box, an HU-rule proposal and a model proposal."""

    confirmed: int = 0
    rule: int = 0
    model: int = 0

    @property
    def proposed(self) -> int:
        return self.rule + self.model

    @property
    def boxed(self) -> int:
        return self.confirmed + self.proposed


def count_boxes(rows: Iterable[Mapping]) -> BoxCounts:
    """BoxCounts of annotation rows (dicts with an `Annotator`)."""
    sources = [proposal_annotator(r.get("Annotator")) for r in rows]
    return BoxCounts(sources.count(None), sources.count("rule"), sources.count("model"))


def confirmed_slices(rows_by_slice: Mapping[int, Mapping]) -> set[int]:
    """The slices of {z: row} whose box a person drew or confirmed."""
    return {int(z) for z, row in rows_by_slice.items() if not is_proposal(row)}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class VolumeProgress:
    """The Annotate page's progress for one volume at slice z (0-based; shown from 1)."""

    z: int
    n_slices: int
    counts: BoxCounts

    @property
    def fraction(self) -> float:
        """Confirmed share of the slices: only a person's boxes move the bar."""
        return self.counts.confirmed / self.n_slices if self.n_slices else 0.0

    @property
    def boxed_fraction(self) -> float:
        """Share of slices with any box (confirmed or proposed)."""
        return self.counts.boxed / self.n_slices if self.n_slices else 0.0

    def text(self) -> str:
        """"Slice 12 of 41 · 9 confirmed · 25 proposed (unconfirmed)"."""
        return (f"Slice {self.z + 1} of {self.n_slices} · {self.counts.confirmed} confirmed · "
                f"{self.counts.proposed} proposed (unconfirmed)")


def volume_progress(rows_by_slice: Mapping[int, Mapping], n_slices: int, z: int) -> VolumeProgress:
    """Progress of one volume from {z: row} (`core.annotate.volume_boxes`); rows outside the volume's
    slice range are not counted."""
    rows = [row for k, row in rows_by_slice.items() if 0 <= int(k) < n_slices]
    return VolumeProgress(int(z), int(n_slices), count_boxes(rows))


@dataclass(frozen=True)
class CtProgress:
    """Confirmed and proposed slices over the CT volumes of a data root (`root_slice_counts`)."""

    counts: BoxCounts
    total: int
    volumes: int
    volumes_started: int  # volumes with at least one confirmed box
    outside: int  # rows whose volume is not a CT volume under this data root

    @property
    def fraction(self) -> float:
        return self.counts.confirmed / self.total if self.total else 0.0

    def text(self) -> str:
        """"CT volumes: 120 confirmed, 300 proposed of 3,946 slices in 12 volumes"."""
        text = (f"CT volumes: {self.counts.confirmed:,} confirmed, {self.counts.proposed:,} proposed "
                f"of {_plural(self.total, 'slice')} in {_plural(self.volumes, 'volume')}")
        return text + (f"; {self.outside:,} box(es) for volumes not under it" if self.outside else "")


def ct_progress(rows: Iterable[Mapping], counts: RootCounts) -> CtProgress:
    """Distinct slices per volume (inside each volume's slice range) holding a confirmed box or a
    proposal, over the CT slices of the data root."""
    by_slice: dict[tuple[str, int], Mapping] = {}
    outside = 0
    for row in rows:
        volume, n = str(row["Volume"]), counts.slices.get(str(row["Volume"]))
        if n is None:
            outside += 1
        elif 0 <= int(row["Slice"]) < n:
            by_slice[(volume, int(row["Slice"]))] = row
    started = {volume for (volume, _), row in by_slice.items() if not is_proposal(row)}
    return CtProgress(count_boxes(by_slice.values()), counts.total, len(counts.slices), len(started), outside)


# -------------------------------------------------------------------------------------------- thumbnails


def slice_pixels(locator, image: str, volume: str, slice_index: int) -> tuple[np.ndarray, str]:
    """(2D modality values, modality) of one annotated slice: a single DICOM file read when the slice
    is a DICOM SOP instance under the root, else the slice of the loaded volume. `locator` is a
    `core.export.VolumeLocator`."""
    ref = locator.dicom_slices().get(image)
    if ref is not None:
        from core.io.dicom import read_dicom_file

        path = Path(ref.path) if Path(ref.path).is_absolute() else locator.root / ref.path
        one = read_dicom_file(path)
        return one.array[0], one.modality
    vol = locator.load(volume)
    return vol.array[locator.slice_index(vol, image, slice_index)], vol.modality


def thumbnail_rgb(plane: np.ndarray, box: Box | None, modality: str, size: int = THUMBNAIL_PX) -> np.ndarray:
    """The slice in its default window (lung for CT), longest side `size` px, box outlined in red."""
    from PIL import Image

    from core import render

    choices, default = render.window_choices(modality)
    grey = render.window_to_uint8(plane, *render.resolve_window(default, plane))
    height, width = grey.shape
    scale = size / max(height, width)
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = np.asarray(Image.fromarray(grey).resize(small, Image.Resampling.BILINEAR))
    layers = [] if box is None else [render.OverlayLayer("boxes", {0: box}, (255, 60, 60), 1.0, line_width=1)]
    return render.composite(grey, layers, "axial", 0)


def png_data_url(rgb: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_url(locator, row: ReviewRow, size: int = THUMBNAIL_PX) -> str | None:
    """Data URL of the row's thumbnail; None when its slice cannot be read."""
    try:
        plane, modality = slice_pixels(locator, row.image, row.volume, row.slice)
    except SlicewiseError:
        return None
    return png_data_url(thumbnail_rgb(plane, row.box, modality, size))


# ------------------------------------------------------------------------------------ page helpers


def default_export_dir(root: str | Path, now: datetime | None = None) -> Path:
    """<data root>/exports/<UTC timestamp>."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return Path(root) / "exports" / stamp


_VOLUME_STEP = re.compile(r"volume (\d+)/(\d+)")


def progress_fraction(message: str) -> float | None:
    """The share done that a `prepare_lung_dataset` progress message reports ("volume k/n: ..")."""
    match = _VOLUME_STEP.search(message)
    if not match or int(match.group(2)) == 0:
        return None
    return min(1.0, int(match.group(1)) / int(match.group(2)))


def known_slices_under(root: str | Path) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """{slice id: (volume id, z)} of the volumes under `root` (for `import_boxes`), and what could
    not be read. DICOM volumes are loaded one at a time (their z order comes from the loader); a
    file volume's slice ids are `<volume id>#<z>`, known from its header alone."""
    from core.export import known_slices
    from core.io import find_volumes, load_volume

    known: dict[str, tuple[str, int]] = {}
    problems = []
    for path in find_volumes(Path(root)):
        try:
            if path.is_dir() or not path.name.lower().endswith(_FILE_SUFFIXES):
                known.update(known_slices([load_volume(path)]))
                continue
            for volume_id, n in _volume_counts(str(path), _signature(path)):
                known.update({f"{volume_id}#{z}": (volume_id, z) for z in range(n)})
        except (SlicewiseError, OSError) as exc:
            problems.append(str(exc))
    return known, problems


def import_csv_bytes(data: bytes, name: str, store: BoxStore, root: str | Path, *,
                     annotator: str = "import") -> tuple[ImportReport, list[str]]:
    """Import an uploaded lung_bbox.csv (its bytes) into `store` against the slices under `root`.

    The bytes go to a temporary file named like the upload, so that the report's line messages
    name it. Returns the report and the volumes under `root` that could not be read.
    Raises AnnotationFormatError when the file lacks the required columns or is not UTF-8.
    """
    import tempfile

    from core.export import import_boxes

    known, problems = known_slices_under(root)
    with tempfile.TemporaryDirectory(prefix="slicewise-import-") as folder:
        src = Path(folder) / (Path(name).name or "upload.csv")
        src.write_bytes(data)
        report = import_boxes(src, store, known, annotator=annotator)
    return report, problems


def prepared_stats(out_dir: str | Path) -> dict | None:
    """The stats.json a finished prepare run left in `out_dir`; None when there is none."""
    import json

    try:
        value = json.loads((Path(out_dir) / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


EXPORT_MIME = {"lung_bbox": "text/csv", "train": "text/csv", "coco": "application/json"}


def exported_files(paths: Mapping[str, str | Path]) -> list[tuple[str, str, bytes, str]]:
    """(key, file name, bytes, MIME type) of the files `export_annotations` wrote that still exist."""
    out = []
    for key, mime in EXPORT_MIME.items():
        path = Path(paths[key]) if key in paths else None
        if path is not None and path.is_file():
            out.append((key, path.name, path.read_bytes(), mime))
    return out
