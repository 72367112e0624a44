"""Volume -> pixels: slice extraction, windowing, montage and overlay compositing (pure NumPy).

Orientation conventions (radiological display):
- axial: `array[z]`, rows = y (anterior at the top), columns = x (patient left on the right);
- coronal: `array[:, y]`, rows = z, columns = x;
- sagittal: `array[:, :, x]`, rows = z, columns = y (anterior on the left).
Coronal and sagittal rows are flipped so that superior is at the top when the z index axis
points to the head (the usual DICOM case, `direction[2, 2] > 0` in LPS). Pixel rows of a
coronal/sagittal slice are `spacing[z]` mm tall, so they are displayed stretched by
`display_aspect` (row mm / column mm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.windowing import apply_window, to_uint8

ORIENTATIONS = ("axial", "coronal", "sagittal")
LAYER_KINDS = ("mask", "boxes", "heatmap")
MASK_STYLES = ("fill", "contour", "both")

Colour = tuple[int, int, int]


@dataclass
class OverlayLayer:
    """One thing drawn over the windowed slice.

    kind "mask": `data` is a (z, y, x) or (y, x) array, non-zero inside; `style` fill/contour/both.
    kind "boxes": `data` maps axial slice index -> (xmin, ymin, xmax, ymax) fractions of width/height,
      or is a (z, 4) array with NaN rows for slices without a box. Drawn on axial slices only.
    kind "heatmap": `data` is a (z, y, x) or (y, x) float array in [0, 1] (CAM), or uint8 holding
      round(value * 255) (as the browser viewer gets it: a quarter of float32's memory), drawn with the
      jet colour map; values below `threshold` stay transparent.
    """

    kind: str
    data: Any
    colour: Colour = (255, 0, 0)
    opacity: float = 0.5
    visible: bool = True
    label: str = ""
    style: str = "fill"
    line_width: int = 2
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"overlay kind must be one of {LAYER_KINDS}, got {self.kind!r}")
        if self.style not in MASK_STYLES:
            raise ValueError(f"mask style must be one of {MASK_STYLES}, got {self.style!r}")
        self.opacity = float(np.clip(self.opacity, 0.0, 1.0))

    def signature(self) -> tuple:
        """What changes the pixels, except the (large) data: for cache keys."""
        return (self.kind, self.label, tuple(self.colour), round(self.opacity, 3), self.visible,
                self.style, self.line_width, self.threshold, id(self.data))


@dataclass(frozen=True)
class Readout:
    """The voxel under a display pixel and its value in modality units (HU for CT)."""

    z: int
    y: int
    x: int
    value: float
    inside: bool = True


def _check_orientation(orientation: str) -> None:
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")


def _as_3d(array: np.ndarray) -> np.ndarray:
    arr = np.asarray(array)
    return arr[np.newaxis] if arr.ndim == 2 else arr


def slice_count(shape: Sequence[int], orientation: str) -> int:
    """How many slices a (z, y, x) shape has in `orientation`."""
    _check_orientation(orientation)
    z, y, x = (tuple(shape)[-3:] if len(shape) >= 3 else (1, *shape))
    return {"axial": z, "coronal": y, "sagittal": x}[orientation]


def _flips_vertically(orientation: str, direction: np.ndarray | None) -> bool:
    if orientation == "axial":
        return False
    z_points_superior = True if direction is None else float(np.asarray(direction)[2, 2]) >= 0
    return z_points_superior


def flips_vertically(orientation: str, direction: np.ndarray | None) -> bool:
    """Whether `extract_slice` shows the rows of this orientation bottom-up (superior at the top)."""
    _check_orientation(orientation)
    return _flips_vertically(orientation, direction)


def extract_slice(array: np.ndarray, orientation: str, index: int,
                  direction: np.ndarray | None = None) -> np.ndarray:
    """The 2D slice `index` of a (z, y, x) array in display order (see module docstring)."""
    arr = _as_3d(array)
    n = slice_count(arr.shape, orientation)
    if not 0 <= index < n:
        raise IndexError(f"{orientation} slice {index} is outside 0..{n - 1}")
    if orientation == "axial":
        plane = arr[index]
    elif orientation == "coronal":
        plane = arr[:, index, :]
    else:
        plane = arr[:, :, index]
    return plane[::-1] if _flips_vertically(orientation, direction) else plane


def display_aspect(spacing: Sequence[float], orientation: str) -> float:
    """Height of one pixel row over the width of one column, in mm (1.0 = square pixels)."""
    _check_orientation(orientation)
    sz, sy, sx = (float(s) for s in spacing)
    rows_cols = {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[orientation]
    return rows_cols[0] / rows_cols[1]


def display_size(shape2d: Sequence[int], aspect: float) -> tuple[int, int]:
    """(rows, cols) of a slice shown with square screen pixels."""
    rows, cols = int(shape2d[0]), int(shape2d[1])
    return max(1, int(round(rows * aspect))), cols


def resample_rows(image: np.ndarray, aspect: float) -> np.ndarray:
    """Stretch rows by `aspect` (linear interpolation) so that pixels display square."""
    rows = image.shape[0]
    new_rows = display_size(image.shape, aspect)[0]
    if new_rows == rows:
        return image
    pos = (np.arange(new_rows) + 0.5) * rows / new_rows - 0.5
    pos = np.clip(pos, 0, rows - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, rows - 1)
    t = (pos - lo).reshape((-1,) + (1,) * (image.ndim - 1))
    out = image[lo].astype(np.float32) * (1 - t) + image[hi].astype(np.float32) * t
    return np.round(out).astype(image.dtype) if image.dtype.kind in "iu" else out.astype(image.dtype)


def window_to_uint8(plane: np.ndarray, center: float, width: float) -> np.ndarray:
    """Modality values -> uint8 grey through the window (center, width)."""
    return to_uint8(apply_window(plane, center, width))


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(grey, dtype=np.uint8)[..., np.newaxis], 3, axis=2)


def _blend(rgb: np.ndarray, where: np.ndarray, colour: np.ndarray, alpha: float | np.ndarray) -> None:
    """In place: rgb[where] = (1 - alpha) * rgb + alpha * colour."""
    if not np.any(where):
        return
    base = rgb[where].astype(np.float32)
    a = alpha[where][:, None] if isinstance(alpha, np.ndarray) else np.float32(alpha)
    col = colour[where] if colour.ndim == 3 else colour
    rgb[where] = np.clip(base * (1 - a) + col * a + 0.5, 0, 255).astype(np.uint8)


def contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Inner boundary of a 2D boolean mask, `width` pixels thick (4-neighbour erosion)."""
    inside = np.asarray(mask, dtype=bool)
    eroded = inside.copy()
    for _ in range(max(1, int(width))):
        padded = np.pad(eroded, 1, mode="constant", constant_values=False)
        eroded = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                  & padded[1:-1, :-2] & padded[1:-1, 2:])
    return inside & ~eroded


def box_to_pixels(box: Sequence[float], shape2d: Sequence[int]) -> tuple[int, int, int, int]:
    """(xmin, ymin, xmax, ymax) fractions -> inclusive pixel (x0, y0, x1, y1), clipped to the image."""
    rows, cols = int(shape2d[0]), int(shape2d[1])
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    x0 = int(np.clip(np.floor(xmin * cols), 0, cols - 1))
    y0 = int(np.clip(np.floor(ymin * rows), 0, rows - 1))
    x1 = int(np.clip(np.ceil(xmax * cols) - 1, x0, cols - 1))
    y1 = int(np.clip(np.ceil(ymax * rows) - 1, y0, rows - 1))
    return x0, y0, x1, y1


def box_outline(box: Sequence[float], shape2d: Sequence[int], line_width: int = 2) -> np.ndarray:
    """Boolean image of a box outline `line_width` pixels thick, drawn inside the box."""
    x0, y0, x1, y1 = box_to_pixels(box, shape2d)
    out = np.zeros((int(shape2d[0]), int(shape2d[1])), dtype=bool)
    w = max(1, int(line_width))
    out[y0:y1 + 1, x0:min(x0 + w, x1 + 1)] = True
    out[y0:y1 + 1, max(x1 - w + 1, x0):x1 + 1] = True
    out[y0:min(y0 + w, y1 + 1), x0:x1 + 1] = True
    out[max(y1 - w + 1, y0):y1 + 1, x0:x1 + 1] = True
    return out


def box_for_slice(boxes: Any, index: int) -> tuple[float, float, float, float] | None:
    """The box of axial slice `index` from a dict or a (z, 4) array with NaN rows; None if none."""
    if boxes is None:
        return None
    if isinstance(boxes, Mapping):
        box = boxes.get(index, boxes.get(str(index)))
    else:
        arr = np.asarray(boxes, dtype=float)
        box = arr[index] if arr.ndim == 2 and 0 <= index < arr.shape[0] else None
    if box is None or not np.all(np.isfinite(np.asarray(box, dtype=float))):
        return None
    return tuple(float(v) for v in box)  # type: ignore[return-value]


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map: [0, 1] -> uint8 RGB (blue -> cyan -> yellow -> red)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0, 1)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255 + 0.5).astype(np.uint8)


def _layer_plane(layer: OverlayLayer, orientation: str, index: int,
                 direction: np.ndarray | None, shape2d: tuple[int, int]) -> np.ndarray | None:
    data = np.asarray(layer.data)
    if data.ndim == 2:
        if orientation != "axial":
            return None
        plane = data
    else:
        if slice_count(data.shape, orientation) <= index:
            return None
        plane = extract_slice(data, orientation, index, direction)
    if plane.shape != tuple(shape2d):
        raise ValueError(
            f"overlay {layer.label or layer.kind!r} has shape {plane.shape}, the slice {tuple(shape2d)}"
        )
    return plane


def heat_values(plane: np.ndarray) -> np.ndarray:
    """A heatmap plane as float32 in [0, 1]: uint8 planes hold round(value * 255)."""
    arr = np.asarray(plane)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255)
    return np.clip(arr.astype(np.float32, copy=False), 0, 1)


def composite(grey: np.ndarray, layers: Sequence[OverlayLayer], orientation: str = "axial",
              index: int = 0, direction: np.ndarray | None = None) -> np.ndarray:
    """Draw the visible layers over a uint8 grey slice -> uint8 RGB (y, x, 3).

    Masks and heatmaps are sliced like the volume; boxes apply to axial slices only.
    A layer with opacity 0 or visible=False leaves the pixels unchanged.
    """
    rgb = grey_to_rgb(grey)
    shape2d = rgb.shape[:2]
    for layer in layers:
        if not layer.visible or layer.opacity <= 0:
            continue
        colour = np.asarray(layer.colour, dtype=np.float32)
        if layer.kind == "boxes":
            box = box_for_slice(layer.data, index) if orientation == "axial" else None
            if box is not None:
                _blend(rgb, box_outline(box, shape2d, layer.line_width), colour, layer.opacity)
            continue
        plane = _layer_plane(layer, orientation, index, direction, shape2d)
        if plane is None:
            continue
        if layer.kind == "mask":
            inside = plane > 0
            if layer.style in ("fill", "both"):
                _blend(rgb, inside, colour, layer.opacity)
            if layer.style in ("contour", "both"):
                edge = contour(inside, layer.line_width)
                _blend(rgb, edge, colour, 1.0 if layer.style == "both" else layer.opacity)
        else:
            heat = heat_values(plane)
            where = heat > layer.threshold
            _blend(rgb, where, jet(heat).astype(np.float32), layer.opacity)
    return rgb


def render_slice(array: np.ndarray, orientation: str, index: int, window: tuple[float, float],
                 layers: Sequence[OverlayLayer] = (), direction: np.ndarray | None = None) -> np.ndarray:
    """Windowed slice with overlays -> uint8 RGB at the native pixel grid (no aspect stretch)."""
    plane = extract_slice(array, orientation, index, direction)
    grey = window_to_uint8(plane, *window)
    if not any(layer.visible and layer.opacity > 0 for layer in layers):
        return grey_to_rgb(grey)
    return composite(grey, layers, orientation, index, direction)


def render_frame(array: np.ndarray, orientation: str, index: int, window: tuple[float, float],
                 layers: Sequence[OverlayLayer] = (), direction: np.ndarray | None = None) -> np.ndarray:
    """Like `render_slice`, but uint8 grey (y, x) when no layer is drawn: a third of the bytes to encode."""
    if any(layer.visible and layer.opacity > 0 for layer in layers):
        return render_slice(array, orientation, index, window, layers, direction)
    return window_to_uint8(extract_slice(array, orientation, index, direction), *window)


def montage_indices(n_slices: int, count: int) -> list[int]:
    """`count` evenly spaced slice indices covering 0..n-1 (fewer when there are fewer slices)."""
    if n_slices <= 0 or count <= 0:
        return []
    if count >= n_slices:
        return list(range(n_slices))
    return [int(round(v)) for v in np.linspace(0, n_slices - 1, count)]


def montage(tiles: Sequence[np.ndarray], rows: int, cols: int, gap: int = 2, fill: int = 0) -> np.ndarray:
    """Tile equally shaped 2D (grey) or 3D (RGB) images into a rows x cols grid, row-major."""
    if not tiles:
        raise ValueError("montage needs at least one tile")
    first = np.asarray(tiles[0])
    th, tw = first.shape[:2]
    out_shape = (rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap) + first.shape[2:]
    out = np.full(out_shape, fill, dtype=first.dtype)
    for i, tile in enumerate(tiles[: rows * cols]):
        r, c = divmod(i, cols)
        out[r * (th + gap): r * (th + gap) + th, c * (tw + gap): c * (tw + gap) + tw] = tile
    return out


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Block-average an image by an integer factor (edges that do not fill a block are cropped)."""
    if factor <= 1:
        return image
    rows, cols = image.shape[0] // factor, image.shape[1] // factor
    total = np.zeros((rows, cols, *image.shape[2:]), np.float32)
    for dy in range(factor):  # strided sums: far faster than a mean over reshaped axes
        for dx in range(factor):
            total += image[dy:rows * factor:factor, dx:cols * factor:factor]
    return (total / factor**2 + 0.5).astype(image.dtype)


def render_montage(array: np.ndarray, orientation: str, window: tuple[float, float], rows: int = 4,
                   cols: int = 10, layers: Sequence[OverlayLayer] = (), spacing: Sequence[float] = (1, 1, 1),
                   direction: np.ndarray | None = None, gap: int = 2,
                   max_tile: int | None = None) -> tuple[np.ndarray, list[int]]:
    """A rows x cols montage of evenly spaced slices (RGB, aspect-corrected) and the indices shown.

    `max_tile` (pixels) block-averages tiles wider than that, so a 4x10 montage of 512x512 slices
    is not a 20-megapixel image.
    """
    n = slice_count(_as_3d(array).shape, orientation)
    indices = montage_indices(n, rows * cols)
    aspect = display_aspect(spacing, orientation)
    tile_width = extract_slice(array, orientation, 0).shape[1]
    factor = int(np.ceil(tile_width / max_tile)) if max_tile else 1
    tiles = [downsample(resample_rows(render_slice(array, orientation, i, window, layers, direction), aspect),
                        factor) for i in indices]
    used_rows = max(1, int(np.ceil(len(tiles) / cols)))
    return montage(tiles, used_rows, cols, gap=gap), indices


def to_voxel(orientation: str, index: int, row: int, col: int, shape: Sequence[int],
             direction: np.ndarray | None = None) -> tuple[int, int, int]:
    """Display (row, col) of slice `index` at the native grid -> voxel (z, y, x)."""
    z_n = int(shape[-3]) if len(shape) >= 3 else 1
    if orientation == "axial":
        return index, row, col
    z = z_n - 1 - row if _flips_vertically(orientation, direction) else row
    if orientation == "coronal":
        return z, index, col
    _check_orientation(orientation)
    return z, col, index


def readout(array: np.ndarray, orientation: str, index: int, row: int, col: int,
            direction: np.ndarray | None = None) -> Readout:
    """The value (HU for CT) at display pixel (row, col) of slice `index` at the native grid."""
    arr = _as_3d(array)
    z, y, x = to_voxel(orientation, index, int(row), int(col), arr.shape, direction)
    inside = 0 <= z < arr.shape[0] and 0 <= y < arr.shape[1] and 0 <= x < arr.shape[2]
    if not inside:
        return Readout(z, y, x, float("nan"), inside=False)
    return Readout(z, y, x, float(arr[z, y, x]))


AUTO_WINDOW = "auto"
CUSTOM_WINDOW = "custom"


def window_choices(modality: str) -> tuple[list[str], str]:
    """Window names offered for a modality and the one it opens with (lung for CT, auto otherwise).

    Reading presets only: the windows models use for their input (core.windowing.MODEL_PRESETS,
    e.g. the CT classifier's) are not offered to a reader."""
    from core.windowing import MODEL_PRESETS, PRESETS

    options = [name for name in PRESETS if name not in MODEL_PRESETS] + [AUTO_WINDOW, CUSTOM_WINDOW]
    return options, ("lung" if modality == "CT" else AUTO_WINDOW)


def resolve_window(choice: str, array: np.ndarray,
                   custom: tuple[float, float] | None = None) -> tuple[float, float]:
    """(center, width) for a window name; `custom` for "custom", percentiles for "auto"."""
    from core.windowing import PRESETS, auto_window

    if choice in PRESETS:
        return PRESETS[choice]
    if choice == CUSTOM_WINDOW and custom is not None:
        return float(custom[0]), float(custom[1])
    return auto_window(array)


def header_table(meta: Mapping[str, Any], max_items: int = 6) -> list[tuple[str, str]]:
    """Header metadata as (name, text) rows; long lists are summarised, not dumped.

    Patient-identifying fields (core.io.phi.PHI_KEYS: name, ID, birth date, accession number,
    study date, institution...) show as hidden unless SLICEWISE_SHOW_PHI=1."""
    from core.io.phi import redact

    meta = redact(meta)
    rows = []
    for name in sorted(meta):
        value = meta[name]
        if isinstance(value, list | tuple) and len(value) > max_items:
            text = f"{len(value)} values: {', '.join(map(str, value[:3]))}, …"
        elif isinstance(value, float):
            text = f"{value:.6g}"
        else:
            text = str(value)
        rows.append((str(name), text))
    return rows
