"""Lung bounding-box annotations: `annotations/lung_bbox.csv` (SPEC section 3).

One row per annotated slice, keyed by `Image` (the slice id). Every write is a
read-modify-write done under a file lock (`<csv>.lock`), written to a temporary file in
the same folder, flushed, fsynced and renamed over the CSV, then the folder is fsynced:
concurrent writers in several processes never lose rows and a writer killed at any moment
leaves the previous valid file. A CSV that someone broke by hand raises
`AnnotationFormatError` naming the file and line, and the store then refuses to write.

Every change is appended to a change log beside the CSV (`<stem>.changes.jsonl`), written
under the same lock; `undo()` / `redo()` replay it.

The CSV and its log commit as one unit. A write (under the lock) first appends its log entries
marked `"pending": true` and fsyncs them, then replaces the CSV (the commit point), then appends a
commit marker `{"commit": <batch>}`. A pending batch without a marker can only be the last one in
the log (every write repairs the tail first): it counts as done exactly when the CSV shows its
change. Repair (on open when the lock is free, and before every write) confirms such a batch by
appending its marker, or drops it (truncates the log back) when the CSV does not show it, and cuts a
torn last line. `history()` applies the same rule read-only, so it sees every change the CSV shows
even before a repair. Any OSError while writing (a full disk, a read-only folder) raises
`AnnotationIOError` naming the file, after the log was truncated back: a failed call changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from core.atomic import atomic_write_bytes, atomic_write_text, fsync_dir  # noqa: F401 (re-exported)
from core.errors import AnnotationFormatError, SlicewiseError

COLUMNS = ("Image", "Xmin", "Ymin", "Xmax", "Ymax", "Volume", "Slice", "Annotator", "Updated")
COORDS = ("Xmin", "Ymin", "Xmax", "Ymax")
DECIMALS = 6  # 1e-6 of the width: ~0.0005 px at 512 px
LOCK_TIMEOUT_S = 60.0
ORIGINAL_ACTIONS = ("upsert", "delete")


class InvalidBoxError(SlicewiseError, ValueError):
    """A box that cannot be stored: non-finite, or empty after clipping to [0, 1]."""


class AnnotationLockError(SlicewiseError):
    """The annotation file stayed locked by another writer for too long."""


class AnnotationIOError(SlicewiseError):
    """The annotation CSV or its change log could not be read or written (disk full, permissions)."""


def _io_error(path: Path, exc: OSError, doing: str) -> AnnotationIOError:
    why = exc.strerror or exc.__class__.__name__
    return AnnotationIOError(f"{path}: could not {doing} ({why}); nothing was changed")


def _is_marker(entry: object) -> bool:
    return isinstance(entry, dict) and "commit" in entry and "action" not in entry


def _same(a: Mapping | None, b: Mapping | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return _format_row(a) == _format_row(b)
    except (KeyError, TypeError, ValueError):
        return False


def _shows(rows: Mapping[str, Mapping], batch: list[dict]) -> bool:
    """True when the CSV rows show every change of the batch (the last change of each slice)."""
    final: dict[str, Mapping | None] = {}
    for entry in batch:
        final[str(entry.get("image"))] = entry.get("new")
    return bool(final) and all(_same(rows.get(image), new) for image, new in final.items())


def utc_now() -> str:
    """ISO-8601 UTC time with seconds precision and a `Z`-free `+00:00` offset."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def normalise_box(
    xmin: float, ymin: float, xmax: float, ymax: float, *, where: str = "box"
) -> tuple[float, float, float, float]:
    """Finite check, clip to [0, 1], round, then require Xmin < Xmax and Ymin < Ymax."""
    values = []
    for name, value in zip(COORDS, (xmin, ymin, xmax, ymax), strict=True):
        if isinstance(value, bool):
            raise InvalidBoxError(f"{where}: {name} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise InvalidBoxError(f"{where}: {name} must be a number, got {value!r}") from exc
        if not math.isfinite(number):
            raise InvalidBoxError(f"{where}: {name} must be finite, got {value!r}")
        values.append(round(min(1.0, max(0.0, number)), DECIMALS))
    x0, y0, x1, y1 = values
    if not (x0 < x1 and y0 < y1):
        raise InvalidBoxError(
            f"{where}: box is empty after clipping to [0, 1] (need Xmin < Xmax and Ymin < Ymax): "
            f"Xmin={x0}, Ymin={y0}, Xmax={x1}, Ymax={y1}"
        )
    return x0, y0, x1, y1


def _format_row(row: Mapping) -> list[str]:
    out = [str(row["Image"])]
    out += [f"{float(row[c]):.{DECIMALS}f}" for c in COORDS]
    out += [str(row["Volume"]), str(int(row["Slice"])), str(row["Annotator"]), str(row["Updated"])]
    return out


def _parse_row(fields: list[str], path: Path, line: int) -> dict:
    where = f"{path}, line {line}"
    if len(fields) != len(COLUMNS):
        raise AnnotationFormatError(
            f"{where}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), got {len(fields)}"
        )
    image = fields[0].strip()
    if not image:
        raise AnnotationFormatError(f"{where}: empty Image id")
    try:
        coords = [float(v) for v in fields[1:5]]
    except ValueError as exc:
        raise AnnotationFormatError(f"{where}: non-numeric box coordinate ({exc})") from exc
    try:
        box = normalise_box(*coords, where=where)
    except InvalidBoxError as exc:
        raise AnnotationFormatError(str(exc)) from exc
    if box != tuple(round(c, DECIMALS) for c in coords):
        raise AnnotationFormatError(f"{where}: box coordinates must lie in [0, 1], got {coords}")
    try:
        slice_index = int(fields[6])
    except ValueError as exc:
        raise AnnotationFormatError(f"{where}: Slice must be an integer, got {fields[6]!r}") from exc
    return dict(zip(COLUMNS, [image, *box, fields[5], slice_index, fields[7], fields[8]], strict=True))


def parse_csv_text(text: str, path: Path) -> dict[str, dict]:
    """Parse the CSV text into {Image: row}; any defect raises AnnotationFormatError with the line."""
    if not text.strip():
        return {}
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        if [h.strip() for h in header] != list(COLUMNS):
            raise AnnotationFormatError(
                f"{path}, line 1: header must be {','.join(COLUMNS)}, got {','.join(header)}"
            )
        rows: dict[str, dict] = {}
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            row = _parse_row(fields, path, reader.line_num)
            if row["Image"] in rows:
                raise AnnotationFormatError(
                    f"{path}, line {reader.line_num}: duplicate Image {row['Image']!r} "
                    "(one box per slice)"
                )
            rows[row["Image"]] = row
    except csv.Error as exc:
        raise AnnotationFormatError(f"{path}, line {reader.line_num}: {exc}") from exc
    return rows


class BoxStore:
    """The lung-box CSV: `rows()`, `get()`, `upsert()`, `delete()`, `history()`, `undo()`, `redo()`."""

    def __init__(self, csv_path: str | Path, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(csv_path).expanduser()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.log_path = self.path.with_name(self.path.stem + ".changes.jsonl")
        self._lock = FileLock(str(self.lock_path), timeout=lock_timeout)
        self._cache_key: tuple | None = None
        self._cache: dict[str, dict] = {}
        self._repair_if_free()

    # ----------------------------------------------------------------- reading
    def _stat_key(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AnnotationIOError(f"{self.path}: cannot be read ({exc.strerror or exc})") from exc
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> dict[str, dict]:
        """Current rows, cached by (inode, mtime, size): every write replaces the inode."""
        key = self._stat_key()
        if key is None:
            self._cache_key, self._cache = None, {}
            return self._cache
        if key != self._cache_key:
            try:
                text = self.path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise AnnotationFormatError(f"{self.path}: not UTF-8 text ({exc})") from exc
            except FileNotFoundError:
                return {}
            except OSError as exc:
                raise AnnotationIOError(f"{self.path}: cannot be read ({exc.strerror or exc})") from exc
            self._cache = parse_csv_text(text, self.path)
            self._cache_key = key
        return self._cache

    def rows(self) -> list[dict]:
        """All rows as dicts in column order (copies; mutate freely)."""
        return [dict(row) for row in self._load().values()]

    def get(self, image_id: str) -> dict | None:
        row = self._load().get(str(image_id))
        return dict(row) if row else None

    def for_volume(self, volume_id: str) -> dict[int, dict]:
        """{slice index: row} of one volume."""
        return {r["Slice"]: dict(r) for r in self._load().values() if r["Volume"] == str(volume_id)}

    def __len__(self) -> int:
        return len(self._load())

    def check(self) -> None:
        """Raise AnnotationFormatError if the CSV on disk is broken; do nothing otherwise."""
        self._load()

    # ----------------------------------------------------------------- writing
    def _locked(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self._lock

    def _acquire(self):
        try:
            return self._locked().acquire()
        except Timeout as exc:
            raise AnnotationLockError(
                f"{self.path}: locked by another writer for more than {self._lock.timeout:.0f} s "
                f"(lock file {self.lock_path})"
            ) from exc
        except OSError as exc:
            raise _io_error(self.lock_path, exc, "take the write lock") from exc

    # ------------------------------------------------------- log consistency
    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_tail(self) -> tuple[int, int, list[dict]]:
        """Read the log backwards from its end. Returns (end of the last complete line, start of
        the trailing pending batch that has no commit marker, that batch's entries)."""
        try:
            handle = open(self.log_path, "rb")
        except FileNotFoundError:
            return 0, 0, []
        with handle:
            size = handle.seek(0, os.SEEK_END)
            block, start, buf = 1 << 16, size, b""
            while True:
                new_start = max(0, start - block)
                handle.seek(new_start)
                buf = handle.read(start - new_start) + buf
                start = new_start
                complete_end = start + buf.rfind(b"\n") + 1 if b"\n" in buf else start
                if start > 0 and b"\n" not in buf:
                    block *= 2
                    continue
                # complete lines inside buf (the first one is partial unless buf starts the file)
                body = buf[: complete_end - start]
                lines, offsets, pos = [], [], 0
                for line in body.split(b"\n")[:-1]:
                    offsets.append(start + pos)
                    lines.append(line)
                    pos += len(line) + 1
                first = 0 if start == 0 else 1
                group: list[dict] = []
                group_start = complete_end
                boundary = False
                for i in range(len(lines) - 1, first - 1, -1):
                    try:
                        entry = json.loads(lines[i])
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        entry = None
                    if (isinstance(entry, dict) and entry.get("pending") is True
                            and (not group or entry.get("batch") == group[0].get("batch"))):
                        group.insert(0, entry)
                        group_start = offsets[i]
                        continue
                    boundary = True
                    break
                if boundary or start == 0:
                    return complete_end, group_start, group
                block *= 2

    def _repair_locked(self, rows: Mapping[str, Mapping] | None = None) -> None:
        """Under the lock: confirm or drop a trailing pending batch, cut a torn last line."""
        try:
            size = self._log_size()
            if size == 0:
                return
            complete_end, group_start, group = self._log_tail()
            if not group and complete_end == size:
                return
            if group:
                if rows is None:
                    rows = self._load()
                if _shows(rows, group):
                    if complete_end != size:
                        os.truncate(self.log_path, complete_end)
                    self._append_log([{"commit": group[0].get("batch"), "time": utc_now()}])
                    return
                os.truncate(self.log_path, group_start)
            else:
                os.truncate(self.log_path, complete_end)
        except OSError as exc:
            raise _io_error(self.log_path, exc, "repair the change log") from exc

    def _repair_if_free(self) -> None:
        """On open: repair the log if it needs it and no writer holds the lock (else leave it:
        `history()` resolves a pending batch read-only and the next write repairs it)."""
        try:
            size = self._log_size()
            if size == 0:
                return
            complete_end, _, group = self._log_tail()
            if not group and complete_end == size:
                return
            self._lock.acquire(timeout=0)
        except (OSError, Timeout):
            return
        try:
            self._repair_locked()
        except SlicewiseError:
            pass  # a broken CSV or a full disk: reported by the next read or write
        finally:
            self._lock.release()

    def repair(self) -> None:
        """Bring the CSV and its change log into agreement (see the module docstring)."""
        with self._acquire():
            self._repair_locked()

    def _write_rows(self, rows: dict[str, dict]) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            try:
                stale.unlink(missing_ok=True)  # left by a writer killed mid-write; we hold the lock
            except OSError:
                pass
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(_format_row(r) for r in rows.values())
        atomic_write_text(self.path, buffer.getvalue())
        self._cache_key, self._cache = self._stat_key(), rows

    def _append_log(self, entries: list[dict], sync: bool = True) -> None:
        if not entries:
            return
        text = "".join(json.dumps(e, sort_keys=False) + "\n" for e in entries)
        with open(self.log_path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    text = "\n" + text  # a writer was killed mid-line: keep ours parseable
            handle.write(text.encode("utf-8"))
            handle.flush()
            if sync:
                os.fsync(handle.fileno())

    def _apply(self, changes: list[tuple[str, dict | None]], action: str, annotator: str,
               extra: dict | None = None, replace: Callable[[dict], bool] | None = None) -> list[dict]:
        """Under the lock: read, apply {image: new row or None}, write, log. Returns log entries.
        `replace` (upserts only): an existing row is overwritten only where it returns true."""
        with self._acquire():
            self._repair_locked()
            # The cache is keyed by (inode, mtime_ns, size) and every write replaces the inode, so
            # a cache hit here means no other process wrote since we last read.
            rows = dict(self._load())
            entries, batch, now = [], uuid.uuid4().hex[:12], utc_now()
            for image, new in changes:
                old = rows.get(image)
                if replace is not None and old is not None and new is not None and not replace(old):
                    continue  # stored meanwhile and not to be replaced (see upsert_many)
                if new is None and old is None and action in ORIGINAL_ACTIONS:
                    continue  # deleting nothing is no change; undo/redo always log
                if new is None:
                    rows.pop(image, None)
                else:
                    rows[image] = new
                entries.append({"time": now, "batch": batch, "annotator": annotator, "action": action,
                                "image": image, "old": old, "new": new, **(extra or {})})
            if entries:
                self._commit(rows, entries)
            return entries

    def _commit(self, rows: dict[str, dict], entries: list[dict]) -> None:
        """Pending log entries, then the CSV (the commit point), then the commit marker."""
        try:
            existed = os.path.lexists(self.log_path)
            size0 = self._log_size()
        except OSError as exc:
            raise _io_error(self.log_path, exc, "read the change log") from exc
        try:
            self._append_log([{**e, "pending": True} for e in entries])
            self._write_rows(rows)
        except OSError as exc:
            try:
                if existed:
                    os.truncate(self.log_path, size0)
                else:
                    self.log_path.unlink(missing_ok=True)
            except OSError:
                pass  # the entries stay pending; the CSV does not show them, so repair drops them
            self._cache_key = None
            raise _io_error(self.path, exc, "save the annotation change") from exc
        try:
            # no fsync: a marker lost in a crash is re-derived from the CSV by the next repair
            self._append_log([{"commit": entries[0]["batch"], "time": utc_now()}], sync=False)
        except OSError:
            pass  # the CSV is the commit point: the next repair confirms the batch from it

    def _make_row(self, image_id: str, box: Mapping | tuple, volume: str, slice: int,
                  annotator: str) -> dict:
        image = str(image_id).strip()
        if not image:
            raise InvalidBoxError(f"{self.path}: empty Image id")
        if isinstance(box, Mapping):
            box = tuple(box[c] for c in COORDS)
        coords = normalise_box(*box, where=f"{self.path}: {image}")
        try:
            slice_index = int(slice)
        except (TypeError, ValueError) as exc:
            raise InvalidBoxError(f"{self.path}: {image}: Slice must be an integer, got {slice!r}") from exc
        if slice_index < 0:
            raise InvalidBoxError(f"{self.path}: {image}: Slice must be >= 0, got {slice_index}")
        return dict(zip(COLUMNS, [image, *coords, str(volume), slice_index,
                                  str(annotator or "unknown").strip(), utc_now()], strict=True))

    def upsert(self, image_id: str, xmin: float, ymin: float, xmax: float, ymax: float, *,
               volume: str, slice: int, annotator: str) -> dict:
        """Insert or replace the box of one slice; returns the stored row."""
        row = self._make_row(image_id, (xmin, ymin, xmax, ymax), volume, slice, annotator)
        self._apply([(row["Image"], row)], "upsert", row["Annotator"])
        return dict(row)

    def upsert_many(self, boxes: Iterable[Mapping], *, annotator: str,
                    replace: Callable[[dict], bool] | None = None) -> int:
        """Several boxes in one locked write (one undo step). Each mapping holds Image, Xmin, Ymin,
        Xmax, Ymax, Volume, Slice and optionally its own Annotator. All are validated before
        anything is written. With `replace`, a slice that already has a row keeps it unless
        `replace(row)` is true -- decided under the lock, so a box another writer stored while the
        caller was computing its boxes (a person's drag during "Propose for all slices") is never
        overwritten. Returns the number of rows written."""
        rows = [self._make_row(b["Image"], b, b["Volume"], b["Slice"], b.get("Annotator") or annotator)
                for b in boxes]
        return len(self._apply([(r["Image"], r) for r in rows], "upsert", str(annotator or "unknown"),
                               replace=replace))

    def delete(self, image_id: str, *, annotator: str = "unknown") -> bool:
        """Remove the box of one slice; False if it had none."""
        return bool(self._apply([(str(image_id), None)], "delete", annotator))

    # ----------------------------------------------------------------- history
    def history(self, image_id: str | None = None) -> list[dict]:
        """Change-log entries (oldest first), optionally of one slice. A torn last line is skipped."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                lines = handle.readlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise AnnotationIOError(f"{self.log_path}: cannot be read ({exc.strerror or exc})") from exc
        parsed = []
        for line in lines:
            if not line.endswith("\n"):
                continue  # torn last line of a killed writer
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                parsed.append(entry)
        committed = {e["commit"] for e in parsed if _is_marker(e)}
        parsed = [e for e in parsed if not _is_marker(e)]
        # A pending batch without a marker counts only at the end of the log, when the CSV shows it.
        tail: list[dict] = []
        for entry in reversed(parsed):
            if entry.get("pending") is True and entry.get("batch") not in committed and (
                    not tail or entry.get("batch") == tail[0].get("batch")):
                tail.insert(0, entry)
            else:
                break
        tail_ok = False
        if tail:
            try:
                tail_ok = _shows(self._load(), tail)
            except SlicewiseError:
                tail_ok = False
        tail_batch = tail[0].get("batch") if tail else None
        entries = []
        for entry in parsed:
            if entry.get("pending") is True and entry.get("batch") not in committed:
                if not (tail_ok and entry.get("batch") == tail_batch):
                    continue
            entry = {k: v for k, v in entry.items() if k != "pending"}
            if image_id is None or entry.get("image") == image_id:
                entries.append(entry)
        return entries

    def _stacks(self) -> tuple[list[list[dict]], list[list[dict]]]:
        """Replay the log into (undo stack, redo stack) of original change batches."""
        batches: list[list[dict]] = []
        for entry in self.history():
            if batches and batches[-1][0].get("batch") == entry.get("batch"):
                batches[-1].append(entry)
            else:
                batches.append([entry])
        undo_stack: list[list[dict]] = []
        redo_stack: list[list[dict]] = []
        for batch in batches:
            action = batch[0].get("action")
            if action in ORIGINAL_ACTIONS:
                undo_stack.append(batch)
                redo_stack.clear()
            elif action == "undo" and undo_stack:
                if undo_stack[-1][0].get("batch") == batch[0].get("undo_of"):
                    redo_stack.append(undo_stack.pop())
            elif action == "redo" and redo_stack:
                if redo_stack[-1][0].get("batch") == batch[0].get("redo_of"):
                    undo_stack.append(redo_stack.pop())
        return undo_stack, redo_stack

    def _replay(self, which: str, annotator: str) -> list[str]:
        with self._acquire():
            self._load()  # a broken CSV raises here, before anything is decided
            self._repair_locked()
            undo_stack, redo_stack = self._stacks()
            stack = undo_stack if which == "undo" else redo_stack
            if not stack:
                return []
            batch = stack[-1]
            now = utc_now()
            if which == "undo":
                changes = [(e["image"], self._restamp(e["old"], now)) for e in reversed(batch)]
            else:
                changes = [(e["image"], self._restamp(e["new"], now)) for e in batch]
            key = "undo_of" if which == "undo" else "redo_of"
            # FileLock is re-entrant within one thread, so _apply takes it again safely.
            entries = self._apply(changes, which, annotator, {key: batch[0]["batch"]})
            return [e["image"] for e in entries]

    @staticmethod
    def _restamp(row: dict | None, now: str) -> dict | None:
        return None if row is None else {**row, "Updated": now}

    def undo(self, *, annotator: str = "unknown") -> list[str]:
        """Undo the last change batch (one upsert/delete, or one upsert_many). Returns the slice
        ids it touched; empty when there is nothing to undo. The undo is itself logged."""
        return self._replay("undo", annotator)

    def redo(self, *, annotator: str = "unknown") -> list[str]:
        """Redo the last undone batch, if no new change came after it."""
        return self._replay("redo", annotator)

    def can_undo(self) -> bool:
        return bool(self._stacks()[0])

    def can_redo(self) -> bool:
        return bool(self._stacks()[1])
