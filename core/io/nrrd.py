"""NRRD `.nrrd` / `.nhdr` reader (SimpleITK), reoriented to the canonical LPS+ layout.

Before SimpleITK sees the file, its header is parsed here: the declared size must fit the budget
(`core.io.budget`) and the data it names; a detached header (`.nhdr`) may only name data files in
its own folder tree (never `/etc/passwd`, never `../../x`), and those must be regular files.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import VolumeReadError
from core.io._itk import read_with_sitk
from core.io.budget import (
    check_decoded,
    compressed_can_hold,
    file_size,
    is_regular,
    regular_file,
    within,
)
from core.volume import Volume

SUFFIXES = (".nrrd", ".nhdr")
MAX_HEADER_BYTES = 1 << 20

_BYTES = {}
for _names, _n in (
    (("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    (("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
      "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    (("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"), 4),
    (("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
      "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
      "double"), 8),
):
    for _name in _names:
        _BYTES[_name] = _n


def is_nrrd(path: Path) -> bool:
    if not is_regular(path):
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"NRRD"
    except OSError:
        return False


def parse_header(path: Path) -> tuple[dict[str, str], list[str], int]:
    """(fields with lower-case keys, lines after a `data file: LIST`, byte length of the header)."""
    with open(path, "rb") as fh:
        blob = fh.read(MAX_HEADER_BYTES)
    fields: dict[str, str] = {}
    listed: list[str] = []
    pos, in_list = 0, False
    for raw in blob.split(b"\n"):
        end = pos + len(raw) + 1
        line = raw.decode("latin-1").rstrip("\r")
        if pos == 0:
            pos = end
            continue  # the NRRD000X magic line
        pos = end
        if in_list:
            if not line.strip():
                break
            listed.append(line.strip())
            continue
        if not line.strip():
            break  # end of an attached header
        if line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower().replace(" ", "")
        fields[key] = value.strip()
        if key in ("datafile", "data_file") and value.strip().split()[:1] == ["LIST"]:
            in_list = True
    return fields, listed, min(pos, len(blob))


def _data_files(path: Path, fields: dict[str, str], listed: list[str]) -> list[Path]:
    value = fields.get("datafile") or fields.get("data_file")
    if value is None:
        return []
    parts = value.split()
    if parts and parts[0] == "LIST":
        names = listed
    elif len(parts) >= 4 and "%" in parts[0]:
        try:
            lo, hi, step = int(parts[1]), int(parts[2]), int(parts[3])
            count = (hi - lo) // step + 1 if step else 0
            if count <= 0 or count > 100_000:
                raise ValueError
            names = [parts[0] % (lo + i * step) for i in range(count)]
        except (ValueError, TypeError) as exc:
            raise VolumeReadError(path, f"unreadable 'data file' pattern {value!r}") from exc
    else:
        names = [value]
    folder = path.resolve().parent
    files = []
    for name in names:
        target = Path(name) if Path(name).is_absolute() else folder / name
        if not within(target, folder):
            raise VolumeReadError(
                path, f"the detached header names the data file {name!r}, outside its own folder "
                f"{folder}; only data files beside the header (or below it) are read")
        regular_file(target)
        files.append(target)
    return files


def check_header(path: Path) -> None:
    """Refuse, before any data is read, a header over the budget, short of data, or pointing outside."""
    fields, listed, header_len = parse_header(path)
    try:
        sizes = [int(s) for s in fields.get("sizes", "").split()]
    except ValueError as exc:
        raise VolumeReadError(path, f"unreadable 'sizes' field {fields.get('sizes')!r}") from exc
    if not sizes:
        raise VolumeReadError(path, "NRRD header without a 'sizes' field")
    check_decoded(path, sizes, what="NRRD volume")
    per_value = _BYTES.get(fields.get("type", "").strip().lower())
    encoding = fields.get("encoding", "raw").strip().lower()
    files = _data_files(path, fields, listed)
    count = 1
    for s in sizes:
        count *= s
    try:
        skip = int(fields.get("byteskip", fields.get("byte_skip", "0")) or 0)
    except ValueError:
        skip = 0
    skip = max(skip, 0)
    if files:
        available = sum(file_size(f) for f in files) - skip * len(files)
        offset = skip
        first = files[0]
    else:
        available = file_size(path) - header_len - skip
        offset = header_len + skip
        first = path
    if per_value is None:
        return  # an unknown type: SimpleITK reports it
    needed = count * per_value
    if encoding == "raw":
        check_decoded(path, sizes, bytes_per_value=per_value, data_bytes_available=available,
                      what="NRRD volume")
    elif encoding in ("ascii", "text", "txt"):
        check_decoded(path, sizes, bytes_per_value=1, data_bytes_available=available + 1, what="NRRD volume")
    elif encoding == "hex":
        check_decoded(path, sizes, bytes_per_value=2 * per_value, data_bytes_available=available,
                      what="NRRD volume")
    elif encoding in ("gzip", "gz", "bzip2", "bz2") and len(files) <= 1 and needed:
        kind = "bzip2" if encoding.startswith("bz") else "gzip"
        if not compressed_can_hold(first, offset, needed, kind):
            raise VolumeReadError(
                path, f"the header declares {needed} bytes of {encoding} data "
                f"({' x '.join(map(str, sizes))}) but the file holds fewer: truncated or a forged header")


def read_nrrd(path: str | Path) -> Volume:
    """Load a NRRD file (attached or detached header) as a canonical (z, y, x) float32 Volume."""
    path = Path(path)
    regular_file(path)
    if not is_nrrd(path):
        raise VolumeReadError(path, "not a NRRD file (it does not start with the 'NRRD' magic)")
    try:
        check_header(path)
    except OSError as exc:
        raise VolumeReadError(path, f"cannot be read ({exc.strerror or exc})") from exc
    return read_with_sitk(path, "NRRD")
