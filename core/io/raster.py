"""PNG / JPEG reader for 2D X-ray images: one grey channel, 16-bit kept, modality OT."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from core.errors import VolumeReadError
from core.io._common import file_volume_id, to_grey
from core.io.budget import VolumeTooLargeError, check_pixels, is_regular, regular_file
from core.volume import Volume

SUFFIXES = (".png", ".jpg", ".jpeg")
_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def is_raster(path: Path) -> bool:
    if not is_regular(path):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return any(head.startswith(m) for m in _MAGICS)


def _grey(img) -> tuple[np.ndarray, list[str]]:
    """PIL image -> 2D array in its own units: 8/16-bit grey kept, colour -> BT.601 luminance."""
    mode = img.mode
    if mode in ("L", "I;16", "I;16B", "I;16L", "I", "F", "1"):
        return np.asarray(img).astype(np.float32), []
    if mode == "LA":
        return np.asarray(img.getchannel("L")).astype(np.float32), []
    rgb = np.asarray(img.convert("RGB"))
    note = [] if mode == "P" else [f"{mode} colour image converted to grey (luminance)"]
    return to_grey(rgb), note


def read_raster(path: str | Path) -> Volume:
    """Load a PNG/JPEG as a one-slice Volume (1, y, x) float32 in the file's grey levels."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    regular_file(path)
    try:
        with warnings.catch_warnings():
            # the pixel limit is checked below from the header; PIL's own warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img_cm = Image.open(path)
        with img_cm as img:
            check_pixels(path, *img.size)  # from the header, before any pixel is decoded
            img = ImageOps.exif_transpose(img)
            img.load()
            mode, size = img.mode, img.size
            arr, notes = _grey(img)
    except Image.DecompressionBombError as exc:
        raise VolumeTooLargeError(path, f"image too large to decode safely ({exc})") from exc
    except MemoryError as exc:
        raise VolumeTooLargeError(path, "not enough memory to decode it") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise VolumeReadError(path, f"not a readable PNG/JPEG image ({type(exc).__name__}: {exc})") from exc
    meta = {"format": "PNG" if path.suffix.lower() == ".png" else "JPEG", "mode": mode,
            "Columns": size[0], "Rows": size[1]}
    if notes:
        meta["converted"] = notes[0]
    return Volume(array=arr, modality="OT", volume_id=file_volume_id(path), meta=meta,
                  source=str(path.resolve()))
