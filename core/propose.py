"""Pre-annotation: a lung box proposed from the CT slice itself (no model).

Classic threshold segmentation, per axial slice:
1. body = the largest connected region above -500 HU (lungs, at about -850 HU, are holes in it);
2. lung candidates = air below -400 HU inside the body's holes (air that reaches the image border
   is outside air and is dropped), cleaned with a small in-plane opening;
3. keep the lungs: on one slice the largest one or two regions; over a volume the large 3D
   connected regions (which drops bowel and stomach gas, separate from the lungs in 3D);
4. the tight box around what is kept, as fractions of the width / height, the way the
   annotation CSV stores it (Xmax = (last column + 1) / width).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from core.boxes import Box, box_iou  # noqa: F401  (box_iou re-exported for callers)
from core.errors import VolumeError
from core.volume import Volume

BODY_HU = -500.0
AIR_HU = -400.0
MIN_AREA_FRACTION = 5e-4  # a lung region smaller than this share of the slice is noise
SECOND_LUNG_FRACTION = 0.1  # 2D: the second region is kept when at least this share of the first
LUNG_3D_FRACTION = 0.2  # 3D: regions at least this share of the largest are lungs
AIRWAY_HU = -950.0  # trachea, main bronchi and bowel gas are pure air; lung parenchyma is ~-850
AIRWAY_PURE_SHARE = 0.4  # a region with at least this share of pure-air pixels...
AIRWAY_MAX_FRACTION = 0.005  # ... that is small on its slice is airway (or gas), not lung

_PLANE = np.zeros((3, 3, 3), dtype=bool)
_PLANE[1] = True  # connectivity within each slice only (8-connected in-plane)
_PLANE4 = ndimage.generate_binary_structure(3, 1) & _PLANE  # 4-connected in-plane


def _largest_per_slice(labels: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of the largest label on each slice (labels never span slices)."""
    if n == 0:
        return np.zeros(labels.shape, dtype=bool)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    objects = ndimage.find_objects(labels)
    z_of = np.array([sl[0].start if sl else -1 for sl in objects])
    best = np.zeros(labels.shape[0], dtype=np.int64)
    best_count = np.zeros(labels.shape[0], dtype=np.int64)
    for label_id, z in enumerate(z_of, start=1):
        if z >= 0 and counts[label_id] > best_count[z]:
            best[z], best_count[z] = label_id, counts[label_id]
    keep = np.zeros(n + 1, dtype=bool)
    keep[best[best > 0]] = True
    return keep[labels]


def lung_candidates(hu: np.ndarray) -> np.ndarray:
    """(z, y, x) bool: air inside each slice's body (steps 1 and 2 of the module docstring)."""
    hu = np.asarray(hu, dtype=np.float32)
    dense_labels, n = ndimage.label(hu > BODY_HU, structure=_PLANE)
    body = _largest_per_slice(dense_labels, n)
    outside_labels, n_outside = ndimage.label(~body, structure=_PLANE4)
    edges = np.concatenate([outside_labels[:, 0, :], outside_labels[:, -1, :],
                            outside_labels[:, :, 0], outside_labels[:, :, -1]], axis=1)
    is_hole = np.ones(n_outside + 1, dtype=bool)
    is_hole[np.unique(edges)] = False  # label 0 (the body) is on the border list or dropped below
    is_hole[0] = False
    holes = is_hole[outside_labels]
    air = ndimage.binary_opening(holes & (hu < AIR_HU), structure=_PLANE4)
    return _drop_airways(air, hu)


def _drop_airways(air: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Remove small in-plane regions of pure air (trachea, bronchi, gas): lung is denser than air."""
    labels, n = ndimage.label(air, structure=_PLANE)
    if n == 0:
        return air
    inside = labels[air]  # only the air voxels: a fraction of the volume
    sizes = np.bincount(inside, minlength=n + 1)
    pure = np.bincount(inside[hu[air] < AIRWAY_HU], minlength=n + 1)
    small = sizes < AIRWAY_MAX_FRACTION * hu.shape[1] * hu.shape[2]
    airway = small & (pure >= AIRWAY_PURE_SHARE * sizes)
    airway[0] = True  # background
    return ~airway[labels]


def _boxes_from_mask(mask: np.ndarray) -> dict[int, Box]:
    """{z: (xmin, ymin, xmax, ymax)} fractions of the tight box of each non-empty slice."""
    _, height, width = mask.shape
    rows = mask.any(axis=2)
    cols = mask.any(axis=1)
    present = np.flatnonzero(rows.any(axis=1))
    y0 = rows.argmax(axis=1)
    y1 = height - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = width - cols[:, ::-1].argmax(axis=1)
    return {int(z): (float(x0[z] / width), float(y0[z] / height), float(x1[z] / width), float(y1[z] / height))
            for z in present}


def _keep_lungs_2d(candidates: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(candidates)
    if n == 0:
        return candidates
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:2]
    min_area = max(8, MIN_AREA_FRACTION * candidates.size)
    floor = max(min_area, SECOND_LUNG_FRACTION * sizes[order[0]])
    keep = [i + 1 for i in order if sizes[i] >= floor]
    return np.isin(labels, keep)


def propose_lung_box(hu_slice: np.ndarray) -> Box | None:
    """Lung box (fractions) of one axial CT slice in HU; None when no lung is found."""
    hu = np.asarray(hu_slice, dtype=np.float32)
    if hu.ndim != 2:
        raise VolumeError(f"propose_lung_box needs a 2D slice (y, x), got shape {hu.shape}")
    lungs = _keep_lungs_2d(lung_candidates(hu[np.newaxis])[0])
    return _boxes_from_mask(lungs[np.newaxis]).get(0)


def lung_mask_3d(hu: np.ndarray) -> np.ndarray:
    """(z, y, x) bool lung mask of a CT volume: candidates kept by 3D connected size."""
    candidates = lung_candidates(hu)
    labels, n = ndimage.label(candidates)
    if n == 0:
        return candidates
    sizes = np.bincount(labels.ravel())[1:]
    min_voxels = max(8, MIN_AREA_FRACTION * hu.shape[1] * hu.shape[2])
    keep = np.concatenate([[False], (sizes >= LUNG_3D_FRACTION * sizes.max()) & (sizes >= min_voxels)])
    return keep[labels]


def propose_volume(volume: Volume | np.ndarray) -> dict[int, Box]:
    """{z: box} for every slice of a CT volume (HU, (z, y, x)) where lung is found.

    A single slice falls back to the 2D rule; a volume uses 3D connectivity to drop gas
    outside the lungs.
    """
    hu = volume.array if isinstance(volume, Volume) else np.asarray(volume, dtype=np.float32)
    if hu.ndim == 2:
        hu = hu[np.newaxis]
    if hu.ndim != 3:
        raise VolumeError(f"propose_volume needs (z, y, x), got shape {hu.shape}")
    if hu.shape[0] == 1:
        box = propose_lung_box(hu[0])
        return {0: box} if box else {}
    return _boxes_from_mask(lung_mask_3d(hu))
