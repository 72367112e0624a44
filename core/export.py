"""Export and import of lung-box annotations.

- `export_annotations(store, data_root, out_dir)`: `lung_bbox.csv` (the store's rows), the
  reference pipeline's `train.csv` metadata (SOPInstanceUID, StudyInstanceUID,
  SeriesInstanceUID, path) so that `lung_bbox.Image == train.SOPInstanceUID` joins, and a COCO
  JSON with one category "lungs" and boxes in pixels.
- `import_boxes(src_csv, store, known)`: a `lung_bbox.csv` from elsewhere into a BoxStore, with
  a report of rows whose slice is unknown here and rows that are invalid.
- `VolumeLocator(data_root)`: finds and loads the volume behind a `Volume` id (DICOM series
  UID, or a path relative to the data root); `prepare` uses it too.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.annotations import COLUMNS, COORDS, BoxStore, InvalidBoxError, atomic_write_text, normalise_box
from core.errors import AnnotationFormatError, SlicewiseError, VolumeReadError
from core.volume import Volume

METADATA_COLUMNS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "path")
_HEADER_TAGS = ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns"]
_NOT_DICOM = {".json", ".csv", ".txt", ".md", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".nii", ".gz",
              ".nrrd", ".nhdr", ".raw", ".xml", ".html", ".pdf", ".zip", ".py", ".log", ".lock", ".tmp",
              ".jsonl", ".pt", ".ckpt"}


@dataclass(frozen=True)
class SliceRef:
    """Where one annotated slice comes from."""

    image: str
    study: str
    series: str
    path: str  # relative to the data root where possible
    width: int
    height: int


@dataclass
class ImportReport:
    imported: int = 0
    unknown: list[tuple[int, str]] = field(default_factory=list)  # (line, Image)
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (line, why)

    def summary(self) -> str:
        return (f"{self.imported} box(es) imported, {len(self.unknown)} for unknown slices, "
                f"{len(self.invalid)} invalid")


def _candidate_files(root: Path) -> Iterable[Path]:
    """Regular files under `root` that may be DICOM (FIFOs, devices, link loops and links leading out
    of the root are skipped, never opened)."""
    from core.confine import is_within
    from core.io.budget import is_regular

    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "truth")
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() in _NOT_DICOM:
                continue
            path = Path(folder) / name
            if is_regular(path) and (not path.is_symlink() or is_within(path, root)):
                yield path


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


class VolumeLocator:
    """Finds the file or folder behind a `Volume` id under a data root; loads and caches volumes."""

    def __init__(self, data_root: str | Path) -> None:
        self.root = Path(data_root)
        self._dicom: dict[str, SliceRef] | None = None
        self._series_folder: dict[str, Path] = {}
        self._volumes: dict[str, Volume] = {}

    def dicom_slices(self) -> dict[str, SliceRef]:
        """{SOPInstanceUID: SliceRef} of every DICOM file under the root (headers only, cached)."""
        if self._dicom is None:
            import pydicom

            self._dicom = {}
            for path in _candidate_files(self.root):
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS,
                                         force=True)
                    sop, series = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
                    rows, cols = int(ds.Rows), int(ds.Columns)
                except Exception:  # noqa: BLE001 - any unreadable file is simply not a DICOM slice
                    continue
                rel = _relative(path, self.root)
                self._dicom[sop] = SliceRef(sop, str(ds.get("StudyInstanceUID", "")), series, rel, cols, rows)
                self._series_folder.setdefault(series, path.parent)
        return self._dicom

    def volume_path(self, volume_id: str) -> Path:
        self.dicom_slices()
        if volume_id in self._series_folder:
            return self._series_folder[volume_id]
        path = self.root / volume_id
        if path.exists():
            from core.confine import is_within

            if not is_within(path, self.root):  # a Volume id such as ../../etc/passwd from an edited CSV
                raise VolumeReadError(path, f"volume {volume_id!r} lies outside the data root {self.root}")
            return path
        raise VolumeReadError(self.root / volume_id,
                              f"volume {volume_id!r} is neither a DICOM series nor a file under {self.root}")

    def load(self, volume_id: str) -> Volume:
        """The volume behind `volume_id` (cached per locator)."""
        if volume_id not in self._volumes:
            from core.io import load_volume

            path = self.volume_path(volume_id)
            volume = load_volume(path)
            if volume_id in self._series_folder and volume.volume_id != volume_id:
                from core.io.dicom import read_dicom_series  # the folder holds several series

                volume = read_dicom_series(path, series_uid=volume_id)
            self._volumes[volume_id] = volume
        return self._volumes[volume_id]

    def forget(self, volume_id: str) -> None:
        """Drop a loaded volume from the cache (prepare reads one volume at a time)."""
        self._volumes.pop(volume_id, None)

    def slice_index(self, volume: Volume, image: str, slice_hint: int) -> int:
        """z of `image` in `volume`: by slice id when it is there, else the CSV's Slice."""
        if image in volume.slice_ids:
            return volume.slice_ids.index(image)
        if 0 <= slice_hint < volume.shape[0]:
            return slice_hint
        raise VolumeReadError(volume.source or self.root,
                              f"slice {image!r} (Slice {slice_hint}) is not in volume {volume.volume_id!r} "
                              f"of {volume.shape[0]} slices")

    def slice_ref(self, row: Mapping) -> SliceRef:
        """Metadata of one annotation row: from DICOM headers when it is a DICOM slice, else from
        the volume file (SOPInstanceUID = the slice id, SeriesInstanceUID = the volume id)."""
        image = str(row["Image"])
        ref = self.dicom_slices().get(image)
        if ref is not None:
            return ref
        volume_id = str(row["Volume"])
        volume = self.load(volume_id)
        _, height, width = volume.shape
        return SliceRef(image, str(volume.meta.get("StudyInstanceUID", "")), volume_id,
                        _relative(self.volume_path(volume_id), self.root), width, height)


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    from io import StringIO

    buffer = StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(header))
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def resolve_rows(rows: list[dict], locator: VolumeLocator) -> tuple[list[tuple[dict, SliceRef]], list[str]]:
    """Pair each row with its SliceRef; the second list names rows whose slice was not found."""
    found, missing = [], []
    for row in rows:
        try:
            found.append((row, locator.slice_ref(row)))
        except SlicewiseError as exc:
            missing.append(f"{row['Image']}: {exc}")
    return found, missing


def write_train_metadata(pairs: list[tuple[dict, SliceRef]], out_csv: Path) -> Path:
    """The reference pipeline's `train.csv` columns for the annotated slices."""
    return _write_csv(out_csv, METADATA_COLUMNS, ([r.image, r.study, r.series, r.path] for _, r in pairs))


def coco_dict(pairs: list[tuple[dict, SliceRef]]) -> dict:
    """COCO detection JSON: one image per annotated slice, one "lungs" box each, bbox [x, y, w, h] px."""
    images, annotations = [], []
    for n, (row, ref) in enumerate(pairs, start=1):
        images.append({"id": n, "file_name": ref.path, "width": ref.width, "height": ref.height,
                       "slice_id": ref.image, "volume": str(row["Volume"]), "slice": int(row["Slice"])})
        x, y = row["Xmin"] * ref.width, row["Ymin"] * ref.height
        w, h = (row["Xmax"] - row["Xmin"]) * ref.width, (row["Ymax"] - row["Ymin"]) * ref.height
        annotations.append({"id": n, "image_id": n, "category_id": 1, "bbox": [x, y, w, h],
                            "area": w * h, "iscrowd": 0})
    return {"info": {"description": "Slicewise lung boxes", "version": "1"},
            "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "lungs", "supercategory": "anatomy"}]}


def export_annotations(store: BoxStore, data_root: str | Path, out_dir: str | Path, *,
                       roots: Iterable[str | Path] | None = None) -> dict[str, Path | list]:
    """Write `lung_bbox.csv`, `train.csv` and `coco.json` into `out_dir`.

    Returns the paths and, under "missing", the rows whose slice could not be found under the
    data root (they are in lung_bbox.csv but not in train.csv / coco.json). With `roots` (a path
    a user typed), `out_dir` must lie under one of them (core.confine; PathOutsideRootError).
    """
    from core.confine import confine

    out = confine(out_dir, roots) if roots is not None else Path(out_dir)
    rows = store.rows()
    bbox_csv = _write_csv(out / "lung_bbox.csv", COLUMNS,
                          ([r[c] for c in COLUMNS] for r in rows))
    pairs, missing = resolve_rows(rows, VolumeLocator(data_root))
    train_csv = write_train_metadata(pairs, out / "train.csv")
    coco = out / "coco.json"
    atomic_write_text(coco, json.dumps(coco_dict(pairs), indent=1))
    return {"lung_bbox": bbox_csv, "train": train_csv, "coco": coco, "missing": missing}


# ------------------------------------------------------------------------------------------- import

REQUIRED = ("Image", *COORDS)


def _read_source(src: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    try:
        text = src.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationFormatError(f"{src}: cannot read it as UTF-8 text ({exc})") from exc
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    absent = [c for c in REQUIRED if c not in header]
    if absent:
        raise AnnotationFormatError(f"{src}, line 1: missing column(s) {', '.join(absent)} "
                                    f"(need at least {','.join(REQUIRED)})")
    reader.fieldnames = header
    return header, [(reader.line_num, dict(row)) for row in reader]


def _import_row(row: dict, known: Mapping[str, tuple[str, int]] | set[str]) -> tuple[str, dict]:
    """("ok", box) or ("unknown"/"invalid", why)."""
    image = (row.get("Image") or "").strip()
    if not image:
        return "invalid", "empty Image"
    if None in row or any(row.get(c) is None for c in REQUIRED):
        return "invalid", f"{image}: wrong number of fields"
    if image not in known:
        return "unknown", image
    try:
        box = normalise_box(*(row[c] for c in COORDS), where=image)
    except InvalidBoxError as exc:
        return "invalid", str(exc)
    if isinstance(known, Mapping):
        volume, z = known[image]
    else:
        volume, z = (row.get("Volume") or "").strip(), (row.get("Slice") or "").strip()
        if not volume or not z.lstrip("-").isdigit():
            return "invalid", f"{image}: no Volume/Slice in the file and none known for it"
    annotator = (row.get("Annotator") or "").strip()
    out = {"Image": image, **dict(zip(COORDS, box, strict=True)), "Volume": volume, "Slice": int(z)}
    if annotator:
        out["Annotator"] = annotator
    return "ok", out


def import_boxes(src_csv: str | Path, store: BoxStore, known: Mapping[str, tuple[str, int]] | set[str],
                 *, annotator: str = "import") -> ImportReport:
    """Import a lung_bbox.csv (at least Image,Xmin,Ymin,Xmax,Ymax; Volume/Slice/Annotator used when
    present) into `store`, in one undoable step. `known` maps slice id -> (volume id, z) of the
    slices here (or is a set of ids, and then the file must carry Volume and Slice). Rows for
    unknown slices and invalid rows are reported, not imported; a later duplicate of an Image
    wins and the earlier one is reported invalid."""
    src = Path(src_csv)
    _, rows = _read_source(src)
    report = ImportReport()
    accepted: dict[str, tuple[int, dict]] = {}
    for line, row in rows:
        status, value = _import_row(row, known)
        if status == "unknown":
            report.unknown.append((line, value))
        elif status == "invalid":
            report.invalid.append((line, f"{src}, line {line}: {value}"))
        else:
            if value["Image"] in accepted:
                earlier = accepted[value["Image"]][0]
                report.invalid.append((earlier, f"{src}, line {earlier}: duplicate of line {line}"))
            accepted[value["Image"]] = (line, value)
    report.imported = store.upsert_many([v for _, v in accepted.values()], annotator=annotator)
    return report


def known_slices(volumes: Iterable[Volume]) -> dict[str, tuple[str, int]]:
    """{slice id: (volume id, z)} of loaded volumes, for `import_boxes`."""
    return {sid: (v.volume_id, z) for v in volumes for z, sid in enumerate(v.slice_ids)}

