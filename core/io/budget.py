"""What a reader may open and allocate: regular files only, and a bounded decoded size.

Every reader asks `regular_file(path)` before it opens anything (a FIFO, a device such as
/dev/zero, a socket or a symlink loop is refused by name, never opened, so nothing hangs), and
`check_decoded(path, shape, ...)` with the size its header declares before it allocates: a volume
whose float32 array would exceed `max_volume_bytes()` is refused, and so is one whose uncompressed
data cannot fit in the file's real bytes. Raster images also have a pixel limit.

Settings (environment):
- `SLICEWISE_MAX_VOLUME_BYTES`: the largest decoded float32 volume (default 4 GiB); never more than
  `MEMORY_FRACTION` of the memory available when the check runs.
- `SLICEWISE_MAX_IMAGE_PIXELS`: the most pixels of one PNG/JPEG (default 80 million, ~9000 x 9000).
"""

from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path

from core.errors import VolumeReadError

DEFAULT_MAX_VOLUME_BYTES = 4 * 1024**3
DEFAULT_MAX_IMAGE_PIXELS = 80_000_000
MEMORY_FRACTION = 0.5


class VolumeTooLargeError(VolumeReadError):
    """The header declares more data than the budget allows, or than the file can hold."""


class NotARegularFileError(VolumeReadError):
    """A FIFO, device, socket, dangling link or symlink loop was named as an image."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        return default
    return value if value > 0 else default


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def max_volume_bytes() -> int:
    """The decoded-size limit: the setting, capped at a fraction of the available memory."""
    limit = _env_int("SLICEWISE_MAX_VOLUME_BYTES", DEFAULT_MAX_VOLUME_BYTES)
    free = available_memory()
    if free:
        limit = min(limit, int(free * MEMORY_FRACTION))
    return limit


def max_image_pixels() -> int:
    return _env_int("SLICEWISE_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def check_decoded(path: str | Path, shape, *, bytes_per_value: float | None = None,
                  data_bytes_available: int | None = None, what: str = "volume") -> int:
    """Refuse a declared shape whose float32 array exceeds the budget, or whose raw data
    (`bytes_per_value` each) cannot fit in `data_bytes_available` bytes (uncompressed files).
    Returns the number of values."""
    dims = [int(s) for s in shape]
    if any(d < 0 for d in dims):
        raise VolumeTooLargeError(path, f"the header declares a negative size {tuple(dims)}")
    count = math.prod(dims) if dims else 0
    decoded = count * 4
    limit = max_volume_bytes()
    if decoded > limit:
        raise VolumeTooLargeError(
            path, f"the header declares a {what} of {' x '.join(map(str, dims))} values "
            f"({_gib(decoded)} as float32), over the limit of {_gib(limit)} "
            "(SLICEWISE_MAX_VOLUME_BYTES, capped at half the available memory)")
    if bytes_per_value is not None and data_bytes_available is not None:
        needed = int(math.ceil(count * bytes_per_value))
        if needed > data_bytes_available:
            raise VolumeTooLargeError(
                path, f"the header declares {needed} bytes of {what} data ({' x '.join(map(str, dims))}) "
                f"but the file holds only {max(0, data_bytes_available)}: truncated or a forged header")
    return count


def check_pixels(path: str | Path, width: int, height: int) -> None:
    limit = max_image_pixels()
    if width * height > limit:
        raise VolumeTooLargeError(
            path, f"image of {width} x {height} pixels ({width * height / 1e6:.0f} megapixels) is over the "
            f"limit of {limit / 1e6:.0f} megapixels (SLICEWISE_MAX_IMAGE_PIXELS)")
    check_decoded(path, (height, width), what="image")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def resolve(path: str | Path) -> Path:
    """The path with every symlink resolved; a loop or an unreadable link is a named error."""
    path = Path(path).expanduser()
    try:
        return path.resolve(strict=True)
    except RuntimeError as exc:  # Python 3.11 reports symlink loops this way
        raise NotARegularFileError(path, f"symbolic link loop ({exc})") from exc
    except FileNotFoundError as exc:
        raise VolumeReadError(path, "no such file or folder (or a link to a missing target)") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFileError(path, "symbolic link loop (too many levels of links)") from exc
        raise VolumeReadError(path, f"cannot be opened ({exc.strerror or exc})") from exc


def file_kind(path: str | Path) -> str:
    """'file', 'dir' or the name of what else it is ('a FIFO (named pipe)', ...); never opens it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if isinstance(exc, FileNotFoundError):
            return "a dangling link or missing file"
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return _kind(mode)


def is_regular(path: str | Path) -> bool:
    return file_kind(path) == "file"


def regular_file(path: str | Path) -> Path:
    """Refuse anything but a regular file (after resolving links) without opening it."""
    path = Path(path).expanduser()
    real = resolve(path)
    kind = file_kind(real)
    if kind != "file":
        where = "" if real == path.absolute() else f" (it links to {real})"
        raise NotARegularFileError(path, f"is {kind}{where}, not a regular file; only image files are read")
    return path


def file_size(path: str | Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise VolumeReadError(path, f"cannot be read ({exc.strerror or exc})") from exc


def within(child: Path, folder: Path) -> bool:
    """True when the resolved `child` lies in `folder`'s tree (both resolved, symlinks followed)."""
    try:
        child.resolve().relative_to(folder.resolve())
    except (ValueError, RuntimeError, OSError):
        return False
    return True


def decompressed_at_least(path: str | Path, offset: int, needed: int, kind: str = "gzip") -> bool:
    """True when the compressed stream starting at byte `offset` inflates to at least `needed` bytes.

    Streams in bounded steps (constant memory) and stops as soon as `needed` is reached, so a
    forged header declaring far more data than the file holds is caught before anything is
    allocated, and a decompression bomb costs at most `needed` bytes of work."""
    import bz2
    import zlib

    def new():
        return bz2.BZ2Decompressor() if kind == "bzip2" else zlib.decompressobj(zlib.MAX_WBITS | 32)

    total, step = 0, 1 << 20
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            dec = new()
            pending = b""
            while total < needed:
                if not pending:
                    pending = fh.read(1 << 16)
                    if not pending:
                        return False
                if kind == "bzip2":
                    out = dec.decompress(pending, max_length=step)
                    pending = b""
                    while not dec.needs_input and not dec.eof and total + len(out) < needed:
                        total += len(out)
                        out = dec.decompress(b"", max_length=step)
                    total += len(out)
                    if dec.eof:
                        pending, dec = dec.unused_data, new()
                else:
                    out = dec.decompress(pending, step)
                    total += len(out)
                    pending = dec.unconsumed_tail
                    if dec.eof:
                        pending, dec = dec.unused_data, new()
    except (OSError, EOFError, ValueError, zlib.error):
        return total >= needed
    return True


DEFLATE_MAX_RATIO = 1100  # deflate cannot expand more than ~1032:1 (bzip2 can: it is streamed instead)


def compressed_can_hold(path: str | Path, offset: int, needed: int, kind: str = "gzip") -> bool:
    """Whether the compressed data from `offset` inflates to at least `needed` bytes.

    Cheap first: a gzip stream cannot expand past ~1032:1, so a tiny file declaring a huge size is
    refused at once; when the gzip trailer (ISIZE) already shows enough, it is trusted (a forged
    trailer still cannot exceed the ratio bound); otherwise the stream is counted."""
    size = file_size(path) - offset
    if kind == "gzip":
        if needed > DEFLATE_MAX_RATIO * max(size, 0) + 1024:
            return False
        try:
            with open(path, "rb") as fh:
                if fh.seek(0, 2) >= offset + 18:
                    fh.seek(-4, 2)
                    if int.from_bytes(fh.read(4), "little") >= needed:
                        return True
        except OSError:
            return False
    return decompressed_at_least(path, offset, needed, kind)
