"""Image and volume readers: `load_volume(path)` for any file or DICOM folder, `find_volumes(root)`.

Formats: DICOM series folders and single files (multi-frame, X-ray, compressed), NIfTI, NRRD,
PNG/JPEG. Every failure is a `core.errors.VolumeReadError` whose message names the file.
Readers open only regular files and refuse, before allocating, what the header declares beyond
the input budget or beyond the file's real bytes (`core.io.budget`); detached headers may only
name data files beside them. Patient-identifying fields are hidden for display (`core.io.phi`).
"""

from core.io.discover import find_volumes
from core.io.registry import READERS, load_volume

__all__ = ["READERS", "find_volumes", "load_volume", "slice_files"]


def slice_files(volume) -> dict[str, str]:
    """SOPInstanceUID (slice id) -> DICOM file path, for volumes loaded from DICOM (else {})."""
    files = volume.meta.get("files") or []
    return dict(zip(volume.slice_ids, files, strict=False)) if len(files) == len(volume.slice_ids) else {}
