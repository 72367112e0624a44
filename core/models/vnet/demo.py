"""The family's demo data: small LGE-MRI-like volumes with a left-atrium-like structure and its label.

`write_demo(demo_root, seed, small, progress)` writes `<demo_root>/segmentation/case_NNN/image.nrrd +
label.nrrd` (the last case as `.nii.gz`, the other format the family reads); cases differ in shape and
spacing, as real ones do. The target is a lobed blood pool (mid grey) inside a thin bright wall (the
enhanced atrial wall of LGE-MRI); distractors of similar grey without that wall (a ventricle, the aorta,
the spine) sit beside it, so a model has to find it before segmenting it, which is what the two stages do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

FOLDER = "segmentation"


@dataclass(eq=False)
class AtriumPhantom:
    image: np.ndarray  # float32 (z, y, x), intensities 0-255
    label: np.ndarray  # uint8 0/1
    spacing: tuple[float, float, float]


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.linspace(-1, 1, n, dtype=np.float32) for n in shape)  # type: ignore[return-value]


def _blob(shape, centre, radii, rng: np.random.Generator, lobes: float = 0.0) -> np.ndarray:
    """Normalised radius field (< 1 inside) of an ellipsoid, optionally with lobed (harmonic) edges."""
    z, y, x = _grid(shape)
    dz, dy, dx = z[:, None, None] - centre[0], y[None, :, None] - centre[1], x[None, None, :] - centre[2]
    r = np.sqrt((dz / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dx / radii[2]) ** 2)
    if lobes:
        theta = np.arctan2(dy, dx)
        phi = np.arctan2(dz, np.sqrt(dy**2 + dx**2))
        wobble = 1 + lobes * (
            np.cos(3 * theta + rng.uniform(0, 6.3)) * 0.6 + np.sin(2 * phi + rng.uniform(0, 6.3))
        )
        r = r / wobble
    return r


def atrium_phantom(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int
) -> AtriumPhantom:
    rng = np.random.default_rng(seed)
    z, y, x = _grid(shape)
    body = (y[:, None] / rng.uniform(0.78, 0.86)) ** 2 + (x[None, :] / rng.uniform(0.86, 0.94)) ** 2 < 1
    image = np.where(body[None], np.float32(rng.uniform(45, 60)), np.float32(4.0)).astype(np.float32)
    image = np.broadcast_to(image, shape).copy()
    centre = (rng.uniform(-0.15, 0.15), rng.uniform(-0.2, 0.1), rng.uniform(-0.2, 0.2))
    radii = (rng.uniform(0.32, 0.42), rng.uniform(0.2, 0.25), rng.uniform(0.23, 0.29))
    r_atrium = _blob(shape, centre, radii, rng, lobes=0.08)
    pool_grey = rng.uniform(105, 125)
    # distractors: a ventricle (anterior, larger), the aorta (a tube along z), the spine (bright, posterior)
    vent = _blob(
        shape,
        (centre[0] - rng.uniform(0.25, 0.4), centre[1] - 0.42, centre[2] + rng.uniform(-0.1, 0.1)),
        (0.35, 0.2, 0.26),
        rng,
        lobes=0.05,
    )
    aorta = np.broadcast_to(
        (((y[:, None] - centre[1] - 0.05) / 0.09) ** 2 + ((x[None, :] - centre[2] - 0.42) / 0.09) ** 2)[None],
        shape,
    )
    spine = np.broadcast_to(((y[:, None] - 0.6) / 0.11) ** 2 + (x[None, :] / 0.13) ** 2 < 1, shape)
    image[spine] = rng.uniform(150, 175)
    image[vent < 1] = rng.uniform(110, 140)
    image[aorta < 1] = rng.uniform(115, 140)
    wall = (r_atrium < 1.22) & (r_atrium >= 1.0)
    image[wall] = rng.uniform(195, 225)
    pool = r_atrium < 1.0
    image[pool] = pool_grey
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), (1.0, 2.0, 2.0))
    image += 40 * texture
    image = ndimage.gaussian_filter(image, (0.5, 0.8, 0.8))
    image += rng.normal(0, 6, shape).astype(np.float32)
    return AtriumPhantom(np.clip(image, 0, 255).astype(np.float32), pool.astype(np.uint8), spacing)


def _case_shape(rng: np.random.Generator, small: bool) -> tuple[int, int, int]:
    if small:
        return int(rng.integers(20, 25)), 48, 48
    side = int(rng.choice([64, 72, 80]))
    return int(rng.integers(32, 45)), side, side


def write_demo(
    demo_root: Path, seed: int = 0, small: bool = False, progress: Callable[[str], Any] = print
) -> list[dict]:
    """Write the demo cases; returns their manifest rows."""
    from core.demo import case_seed
    from core.io.writers import write_nifti, write_nrrd

    root = Path(demo_root) / FOLDER
    count = 4 if small else 10
    cases = []
    for i in range(count):
        s = case_seed(seed, "vnet", i)
        rng = np.random.default_rng(s)
        shape = _case_shape(rng, small)
        spacing = (float(rng.choice([1.25, 1.5, 2.0])), float(rng.choice([0.9, 1.0, 1.1])))
        ph = atrium_phantom(shape, (spacing[0], spacing[1], spacing[1]), s)
        case_id = f"case_{i:03d}"
        suffix = ".nii.gz" if i == count - 1 else ".nrrd"
        write = write_nifti if suffix == ".nii.gz" else write_nrrd
        files = {"image": f"{FOLDER}/{case_id}/image{suffix}", "label": f"{FOLDER}/{case_id}/label{suffix}"}
        write(np.rint(ph.image).astype(np.uint8), Path(demo_root) / files["image"], spacing=ph.spacing)
        write((ph.label * 255).astype(np.uint8), Path(demo_root) / files["label"], spacing=ph.spacing)
        cases.append(
            {
                "id": f"seg_{case_id}",
                "kind": "segmentation",
                "path": files["image"],
                "files": files,
                "shape": list(shape),
                "spacing": list(ph.spacing),
            }
        )
    progress(f"segmentation: {count} image/label cases in {root}")
    return cases
