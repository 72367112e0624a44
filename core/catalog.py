"""What is in a data root: volumes, annotation rows, training runs and checkpoints.

Every part is optional: a missing folder or an unreadable file becomes a line in
`Catalog.problems`, never an exception, so the Home page can always show something.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from core import settings
from core.errors import SlicewiseError
from core.runs import best_metric as run_best_metric
from core.runs import checkpoint_files, is_run, read_json_dict


@dataclass(frozen=True)
class VolumeEntry:
    path: Path
    name: str  # relative to the data root
    kind: str  # "DICOM series", "NIfTI", "NRRD", "image", "DICOM file"


@dataclass(frozen=True)
class RunEntry:
    path: Path
    name: str
    status: str
    family: str
    checkpoints: int
    best_metric: float | None = None
    best_metric_name: str = ""


@dataclass
class Catalog:
    root: Path
    exists: bool
    volumes: list[VolumeEntry] = field(default_factory=list)
    annotation_file: Path | None = None
    annotation_rows: int = 0
    runs: list[RunEntry] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    has_demo: bool = False
    has_lidc: bool = False
    problems: list[str] = field(default_factory=list)
    # links under the root (volume folders or files) that lead outside it: skipped (confinement)
    outside_links: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Headline numbers for the Home page."""
        return {
            "volumes": len(self.volumes),
            "annotated boxes": self.annotation_rows,
            "training runs": len(self.runs),
            "checkpoints": len(self.checkpoints),
        }

    def outside_links_note(self) -> str:
        """One sentence for the Home page about `outside_links` ("" when there is none)."""
        return outside_links_note(self.outside_links)


SHOWN_LINKS = 3


def outside_links_note(links: list[str]) -> str:
    """"2 links leading outside the data root were skipped (ct/a, ct/b): copy the files in, or make
    the linked folder the data root." -- naming the first SHOWN_LINKS links; "" without links."""
    if not links:
        return ""
    names = ", ".join(links[:SHOWN_LINKS]) + (", …" if len(links) > SHOWN_LINKS else "")
    many = len(links) > 1
    return (f"{len(links)} link{'s' if many else ''} leading outside the data root "
            f"{'were' if many else 'was'} skipped ({names}): copy the files in, or make the linked folder "
            "the data root.")


def volume_kind(path: Path) -> str:
    """A human name for what `find_volumes` found at `path`."""
    name = path.name.lower()
    if path.is_dir():
        return "DICOM series"
    if name.endswith((".nii", ".nii.gz")):
        return "NIfTI"
    if name.endswith((".nrrd", ".nhdr")):
        return "NRRD"
    if name.endswith((".png", ".jpg", ".jpeg")):
        return "image"
    return "DICOM file"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or path.name
    except ValueError:
        return str(path)


def list_volumes(root: Path, problems: list[str] | None = None,
                 outside: list[str] | None = None) -> list[VolumeEntry]:
    """The loadable things under `root` (core.io.find_volumes), with a kind and a relative name.

    Only what resolves under `root` (symlinks followed) is listed. A volume file that links outside
    goes to `outside` (its name relative to `root`) when given, else to `problems`; with `outside`,
    the folder links leading outside (never walked into) are added too, so that nothing is skipped
    unsaid. DICOM series come first (what a reader opens most), the rest keep `find_volumes` order.
    """
    from core.confine import is_within
    from core.io import find_volumes

    entries, links = [], []
    for p in find_volumes(root, problems):
        # a link inside the data root pointing elsewhere, or a series folder with such a link in it
        if not is_within(p, root) or _holds_links_outside(p, root):
            if outside is not None:
                links.append(_relative(p, root))
            elif problems is not None:
                problems.append(f"{p}: skipped, it links outside the data root {root}")
            continue
        entries.append(VolumeEntry(p, _relative(p, root), volume_kind(p)))
    if outside is not None:
        outside.extend(sorted(links + [_relative(p, root) for p in folder_links_outside(root)]))
    return sorted(entries, key=lambda e: e.kind != "DICOM series")


def _holds_links_outside(path: Path, root: Path) -> bool:
    """A folder (a DICOM series: its reader opens the files in it) holding a link that resolves
    outside `root`: listed, its slices would be read from outside the data root."""
    from core.confine import is_within

    if not path.is_dir():
        return False
    try:
        with os.scandir(path) as entries:
            return any(e.is_symlink() and not is_within(Path(e.path), root) for e in entries)
    except OSError:
        return False


def folder_links_outside(root: Path) -> list[Path]:
    """Links to folders under `root` that resolve outside it. `find_volumes` walks the folders it
    would list volumes from (hidden and `truth/` ones pruned) and never follows a folder link."""
    from core.confine import is_within
    from core.io.discover import SKIP_DIRS

    found = []
    for current, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        found += [Path(current, d) for d in dirs
                  if os.path.islink(os.path.join(current, d)) and not is_within(Path(current, d), root)]
    return found


def count_annotation_rows(csv_path: Path) -> int:
    """Data rows in an annotation CSV (0 when the file does not exist)."""
    if not csv_path.is_file():
        return 0
    with open(csv_path, newline="", encoding="utf-8") as handle:
        return max(0, sum(1 for row in csv.reader(handle) if row) - 1)


_read_json = read_json_dict


def _run_status(run: Path) -> str:
    for name in ("status.json", "job.json"):
        info = _read_json(run / name)
        for key in ("state", "status"):
            if isinstance(info.get(key), str):
                return info[key]
    if (run / "result.json").is_file():
        return "DONE"
    progress = _read_json(run / "progress.json")
    if progress:
        return f"epoch {progress.get('epoch', '?')}/{progress.get('max_epochs', '?')}"
    return "unknown"


find_checkpoints = checkpoint_files
_is_run = is_run


def list_runs(runs_root: Path) -> list[RunEntry]:
    """Training runs: folders under `runs_root` holding a config, metrics, progress or checkpoints."""
    if not runs_root.is_dir():
        return []
    runs = []
    for folder in sorted(p for p in runs_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _is_run(folder):
            continue
        config = _read_json(folder / "config.json")
        best = run_best_metric(folder)
        runs.append(RunEntry(
            path=folder, name=folder.name, status=_run_status(folder),
            family=str(config.get("family", "")), checkpoints=len(find_checkpoints(folder)),
            best_metric=best[1] if best else None, best_metric_name=best[0] if best else "",
        ))
    return runs


def summarise(root: Path | str | None = None, runs_root: Path | None = None,
              annotations: Path | None = None) -> Catalog:
    """Summarise a data root (default: core.settings.data_root()); never raises for missing parts."""
    root = Path(root) if root is not None else settings.data_root()
    runs_root = runs_root if runs_root is not None else settings.runs_root()
    annotations = annotations if annotations is not None else settings.annotations_path()
    catalog = Catalog(root=root, exists=root.is_dir(), annotation_file=annotations)
    if not catalog.exists:
        catalog.problems.append(f"{root}: the data root does not exist yet")
    else:
        _fill_volumes(catalog)
        catalog.has_demo = (root / "demo" / "manifest.json").is_file()
        catalog.has_lidc = any(v.name.startswith("lidc") for v in catalog.volumes)
    try:
        catalog.annotation_rows = count_annotation_rows(annotations)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        catalog.problems.append(f"{annotations}: cannot read the annotation file ({exc})")
    try:
        catalog.runs = list_runs(runs_root)
        catalog.checkpoints = find_checkpoints(runs_root)
    except OSError as exc:
        catalog.problems.append(f"{runs_root}: cannot list training runs ({exc.strerror or exc})")
    return catalog


def _fill_volumes(catalog: Catalog) -> None:
    try:
        catalog.volumes = list_volumes(catalog.root, catalog.problems, catalog.outside_links)
    except (SlicewiseError, OSError) as exc:
        catalog.problems.append(f"{catalog.root}: cannot list volumes ({exc})")
