"""Four-sequence brain MRI phantoms (FLAIR, T1, T1ce, T2) with BraTS-style tumour labels and a grade."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.phantoms._common import _coarse_noise, _smooth_noise, _unit_grid

# ---------------------------------------------------------------------------------------------
# Brain MRI (BraTS-style)
# ---------------------------------------------------------------------------------------------

SEQUENCES = ("flair", "t1", "t1ce", "t2")
BRATS_LABELS = {"necrotic_core": 1, "oedema": 2, "enhancing": 4}

# Mean signal per tissue and sequence (arbitrary MR units). CSF dark on T1 and FLAIR, bright
# on T2; oedema bright on FLAIR/T2; only the enhancing rim lights up on T1ce.
BRAIN_TISSUES = ("background", "csf", "grey", "white", "necrosis", "enhancing", "oedema", "tumour")
_BRAIN_SIGNAL = {
    "flair": (0, 120, 620, 470, 430, 720, 900, 820),
    "t1": (0, 250, 550, 760, 300, 470, 500, 430),
    "t1ce": (0, 260, 560, 770, 320, 1150, 510, 450),
    "t2": (0, 1000, 660, 440, 950, 720, 830, 870),
}


@dataclass(eq=False)
class BrainPhantom:
    """Co-registered, skull-stripped MR sequences with a BraTS tumour mask, all `(z, y, x)`."""

    images: dict[str, np.ndarray]  # sequence name -> float32, zero outside the brain
    seg: np.ndarray  # uint8 BraTS labels: 0, 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing
    brain_mask: np.ndarray  # uint8
    tissue: np.ndarray  # uint8 index into BRAIN_TISSUES
    grade: str  # "LGG" | "HGG"
    spacing: tuple[float, float, float]
    seed: int


def _brain_anatomy(rng, shape) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Tissue index map (see BRAIN_TISSUES) of a normal brain, the brain mask, the grid."""
    depth, height, width = shape
    t = ((np.arange(depth, dtype=np.float32) - (depth - 1) / 2) / (depth / 2))[:, None, None]
    u, v = _unit_grid(height, width)
    u, v = u[None], v[None]
    wobble = _coarse_noise(rng, shape, 6)
    r = np.sqrt((u / rng.uniform(0.74, 0.82)) ** 2 + (v / rng.uniform(0.86, 0.93)) ** 2 + (t / 0.9) ** 2)
    r = r + 0.025 * wobble
    brain = r < 1
    folds = _smooth_noise(rng, shape, (1.0, 1.4, 1.4))
    tissue = np.where(brain, 3, 0).astype(np.uint8)  # white matter
    tissue[brain & (r + 0.05 * folds > 0.8)] = 2  # cortex with a folded inner border
    tissue[brain & (r > 0.86) & (folds > 1.0)] = 1  # sulcal CSF
    tissue[brain & (r > 0.96)] = 1  # subarachnoid space
    tissue[brain & (np.abs(u) < 0.015) & (r > 0.45) & (t > -0.3)] = 1  # interhemispheric fissure
    for side in (-1, 1):
        deep = ((u - side * 0.2) / 0.12) ** 2 + ((v - 0.05) / 0.16) ** 2 + ((t + 0.05) / 0.2) ** 2 < 1
        tissue[deep & brain] = 2  # basal ganglia / thalamus
        vent = ((u - side * 0.09) / 0.06) ** 2 + ((v + 0.02) / 0.38) ** 2 + ((t - 0.15) / 0.22) ** 2 < 1
        tissue[vent & brain] = 1  # lateral ventricles
    return tissue, brain, (t, v, u)


def _paint_tumour(rng, tissue, brain, grid, grade: str) -> np.ndarray:
    """Add a tumour to the tissue map; returns the BraTS label map."""
    t, v, u = grid
    hgg = grade == "HGG"
    centre = (rng.uniform(-0.2, 0.35), rng.uniform(-0.4, 0.4), rng.choice([-1, 1]) * rng.uniform(0.28, 0.45))
    radius = rng.uniform(0.18, 0.26) if hgg else rng.uniform(0.13, 0.2)
    shape_noise = _coarse_noise(rng, tissue.shape, 8)
    d = np.sqrt((t - centre[0]) ** 2 + (v - centre[1]) ** 2 + (u - centre[2]) ** 2) / radius
    d = d + 0.18 * shape_noise
    seg = np.zeros(tissue.shape, np.uint8)
    not_csf = brain & (tissue != 1)
    oedema = not_csf & (d < (rng.uniform(1.8, 2.4) if hgg else rng.uniform(1.3, 1.7)))
    core = brain & (d < 1)
    seg[oedema], tissue[oedema] = 2, 6
    if hgg:
        necrosis = d < rng.uniform(0.55, 0.7)
        seg[core], tissue[core] = 4, 5
        seg[core & necrosis], tissue[core & necrosis] = 1, 4
    else:
        seg[core], tissue[core] = 1, 7
        if rng.random() < 0.3:  # a faint enhancing focus now and then
            focus = core & (d < 0.25)
            seg[focus] = 4
    return seg


def brain_mri_phantom(
    shape: tuple[int, int, int] = (64, 96, 96),
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    seed: int = 0,
    grade: str = "HGG",
) -> BrainPhantom:
    """FLAIR, T1, T1ce and T2 of one brain with a glioma of the given grade.

    HGG: a large tumour with a necrotic centre (label 1) inside an enhancing rim (label 4,
    bright on T1ce) and wide oedema (label 2). LGG: a smaller, homogeneous non-enhancing core
    (label 1) with little oedema and at most a small faint focus labelled enhancing.
    Partial-volume blur, a smooth bias field and Rician noise per sequence.
    """
    if grade not in ("LGG", "HGG"):
        raise ValueError(f"grade must be 'LGG' or 'HGG', got {grade!r}")
    shape = tuple(int(s) for s in shape)
    if min(shape) < 8:
        raise ValueError(f"brain phantom needs at least 8 voxels per axis, got {shape}")
    rng = np.random.default_rng(seed)
    tissue, brain, grid = _brain_anatomy(rng, shape)
    seg = _paint_tumour(rng, tissue, brain, grid, grade)
    faint = (seg == 4) & (tissue == 7)  # LGG focus: halfway to enhancing on T1ce
    images = {}
    for name in SEQUENCES:
        lut = np.array(_BRAIN_SIGNAL[name], np.float32) * rng.uniform(0.85, 1.15)
        img = lut[tissue]
        if name == "t1ce":
            img[faint] = 0.5 * (lut[7] + lut[5])
        img = ndimage.gaussian_filter(img, 0.6)
        bias = 1 + 0.08 * _coarse_noise(rng, shape, 3)
        sigma = 0.025 * float(lut.max())
        real = img * bias + sigma * rng.standard_normal(shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(shape, dtype=np.float32)
        images[name] = (np.sqrt(real**2 + imag**2) * brain).astype(np.float32)
    return BrainPhantom(
        images=images,
        seg=seg,
        brain_mask=brain.astype(np.uint8),
        tissue=tissue,
        grade=grade,
        spacing=tuple(float(s) for s in spacing),
        seed=int(seed),
    )
