"""Files a user uploads in the browser: kept per session under `<runs root>/uploads/`, removed after a day.

The app writes only under its data root and runs root (SPEC 10); an upload is no exception, and
a folder per browser session keeps one user's files from another's.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from core.atomic import atomic_write_bytes

UPLOADS = "uploads"
MAX_AGE_S = 24 * 3600


def upload_path(runs_root: Path, session_id: str, upload_id: str, file_name: str) -> Path:
    """Where an uploaded file goes: `<runs>/uploads/<session>/<upload>/<name>` (names reduced to safe
    characters; a name never leaves its folder)."""
    safe = lambda text: re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x"  # noqa: E731
    return Path(runs_root) / UPLOADS / safe(session_id) / safe(upload_id) / safe(Path(file_name).name)


def save_upload(runs_root: Path, session_id: str, upload_id: str, file_name: str, data: bytes) -> Path:
    """Write an upload (atomically) and prune uploads older than a day; returns its path."""
    prune(runs_root)
    path = upload_path(runs_root, session_id, upload_id, file_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def prune(runs_root: Path, max_age_s: float = MAX_AGE_S, now: float | None = None) -> int:
    """Remove session folders untouched for `max_age_s`; returns how many went."""
    root = Path(runs_root) / UPLOADS
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for folder in root.iterdir():
        try:
            newest = max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.rglob("*"))])
        except OSError:
            continue
        if now - newest > max_age_s and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def remove_session(runs_root: Path, session_id: str) -> None:
    """Remove one session's uploads (when it ends)."""
    folder = upload_path(runs_root, session_id, "x", "x").parent.parent
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)
