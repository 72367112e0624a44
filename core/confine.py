"""Data-root confinement: a path a user typed or uploaded is used only when it lies under an allowed root.

`confine(path, roots)` resolves the path (symlinks followed, `..` collapsed, `~` expanded) and
returns it when it lies in one of the (resolved) roots, else raises `PathOutsideRootError`, whose
message names the path and the allowed roots. A symlink inside the data root that points outside
it is therefore refused too.

The allowed roots are the data root and the runs root (`allowed_roots`). The data root itself
is chosen by `SLICEWISE_DATA` or on the Home page; when the server is shared (it listens beyond
loopback, or `SLICEWISE_SHARED=1`) only the administrator's setting (`SLICEWISE_DATA` at start)
counts and a page cannot move it (`choose_data_root`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from core import settings
from core.errors import SlicewiseError

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class PathOutsideRootError(SlicewiseError, ValueError):
    """A path lies outside every folder the app may read or write."""

    def __init__(self, path: str | Path, roots: Iterable[Path], why: str = "") -> None:
        self.path = str(path)
        self.roots = [str(r) for r in roots]
        shown = ", ".join(self.roots) or "(none)"
        super().__init__(f"{self.path}: outside the folders this app may use ({shown}){why}; "
                         "choose a path under one of them")


def resolve(path: str | Path) -> Path:
    """Absolute path with `~` expanded, `..` collapsed and every existing symlink followed."""
    p = Path(str(path).strip()).expanduser()
    try:
        return p.resolve(strict=False)
    except (RuntimeError, OSError) as exc:  # a symlink loop
        raise SlicewiseError(f"{p}: cannot be resolved ({exc})") from exc


def is_within(path: str | Path, root: str | Path) -> bool:
    try:
        resolve(path).relative_to(resolve(root))
    except (ValueError, SlicewiseError):
        return False
    return True


def confine(path: str | Path, roots: Iterable[str | Path]) -> Path:
    """The resolved `path` when it lies under one of `roots`; else PathOutsideRootError."""
    roots = [resolve(r) for r in roots]
    if not str(path).strip():
        raise PathOutsideRootError(path, roots, " (empty path)")
    real = resolve(path)
    for root in roots:
        try:
            real.relative_to(root)
        except ValueError:
            continue
        return real
    typed = Path(str(path).strip()).expanduser().absolute()
    shown = "" if str(real) == str(typed) else f" (it resolves to {real})"
    raise PathOutsideRootError(path, roots, shown)


def allowed_roots(data_root: str | Path | None = None) -> list[Path]:
    """Where the app may read and write: the data root and the runs root."""
    data = Path(data_root) if data_root is not None else settings.data_root()
    return [data, settings.runs_root()]


def confine_to_data(path: str | Path, data_root: str | Path | None = None) -> Path:
    """`confine(path, allowed_roots(data_root))`."""
    return confine(path, allowed_roots(data_root))


def server_is_shared(address: str | None) -> bool:
    """True when the server listens beyond loopback (an empty address means every interface),
    or when `SLICEWISE_SHARED=1` says so."""
    if os.environ.get("SLICEWISE_SHARED", "").strip().lower() in ("1", "true", "yes"):
        return True
    return (address or "").strip() not in LOOPBACK


def choose_data_root(path: str | Path, *, shared: bool) -> Path:
    """The data root a page asked for. On loopback (the user's own machine) any existing folder,
    or one that can be created, is accepted; when shared, only the administrator's data root
    (`SLICEWISE_DATA`, or data/ in the checkout) and folders under it."""
    text = str(path).strip()
    if not text:
        return settings.data_root()
    if shared:
        admin = settings.data_root()
        real = confine(text, [admin])
        return real
    real = resolve(text)
    if real.exists() and not real.is_dir():
        raise SlicewiseError(f"{text}: not a folder; the data root must be a folder")
    return real
