"""Four-sequence brain MRI phantoms whose two grades differ in local, learnable ways.

Both grades get the same anatomy and tumours of the same size range, at random places, so
neither the tumour's size nor its position tells the grade; what differs is what the tumour
looks like, slice by slice:

- HGG: an enhancing rim (BraTS label 4, very bright on T1ce) around a necrotic core (label 1,
  dark on T1 and T1ce, bright on T2), inside oedema (label 2, bright on FLAIR and T2).
- LGG: a diffuse, ill-defined FLAIR/T2-bright lesion (label 2) with a non-enhancing core
  (label 1, mildly dark on T1, no enhancement on T1ce: it looks as on T1).

Skull-stripped (zero outside the brain), a smooth bias field and Rician noise per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SEQUENCES = ("flair", "t1", "t1ce", "t2")
GRADES = ("LGG", "HGG")
TISSUES = ("background", "csf", "grey", "white", "oedema", "necrosis", "enhancing", "lgg_core")
# Mean signal per tissue (columns as TISSUES) and sequence, arbitrary MR units.
SIGNAL = {
    "flair": (0, 100, 600, 460, 880, 520, 700, 940),
    "t1": (0, 240, 540, 760, 520, 260, 480, 380),
    "t1ce": (0, 250, 550, 770, 540, 270, 1250, 390),
    "t2": (0, 1000, 660, 440, 860, 980, 700, 900),
}


@dataclass(eq=False)
class GradePhantom:
    images: dict[str, np.ndarray]  # sequence -> float32 (z, y, x), zero outside the brain
    seg: np.ndarray  # uint8 BraTS labels 0, 1, 2, 4
    grade: str
    spacing: tuple[float, float, float]


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)  # type: ignore[return-value]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / max(float(noise.std()), 1e-6)


def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Tissue index map of a normal brain and the brain mask."""
    tz, ty, tx = _grid(shape)
    t, v, u = tz[:, None, None], ty[None, :, None], tx[None, None, :]
    r = np.sqrt((u / rng.uniform(0.78, 0.86)) ** 2 + (v / rng.uniform(0.86, 0.94)) ** 2 + (t / 0.95) ** 2)
    r = r + 0.03 * _smooth_noise(rng, shape, 3.0)
    brain = r < 1
    folds = _smooth_noise(rng, shape, 1.2)
    tissue = np.where(brain, 3, 0).astype(np.uint8)
    tissue[brain & (r + 0.05 * folds > 0.8)] = 2
    tissue[brain & (r > 0.87) & (folds > 0.9)] = 1
    tissue[brain & (r > 0.96)] = 1
    for side in (-1, 1):
        vent = ((u - side * 0.1) / 0.07) ** 2 + ((v + 0.02) / 0.36) ** 2 + ((t - 0.1) / 0.25) ** 2 < 1
        tissue[vent & brain] = 1
    return tissue, brain


def _tumour(rng: np.random.Generator, tissue: np.ndarray, brain: np.ndarray, grade: str) -> np.ndarray:
    """Paint the tumour into `tissue` (in place); returns the BraTS label map."""
    tz, ty, tx = _grid(tissue.shape)
    t, v, u = tz[:, None, None], ty[None, :, None], tx[None, None, :]
    centre = (rng.uniform(-0.3, 0.3), rng.uniform(-0.35, 0.35), rng.choice([-1, 1]) * rng.uniform(0.3, 0.45))
    radius = rng.uniform(0.2, 0.28)  # the same range for both grades: size does not tell the grade
    d = np.sqrt((t - centre[0]) ** 2 + (v - centre[1]) ** 2 + (u - centre[2]) ** 2) / radius
    seg = np.zeros(tissue.shape, np.uint8)
    inside = brain & (tissue != 1)
    if grade == "HGG":
        d = d + 0.1 * _smooth_noise(rng, tissue.shape, 2.0)
        oedema = inside & (d < rng.uniform(1.4, 1.7))
        rim = brain & (d < 1.0)
        necrosis = d < rng.uniform(0.5, 0.65)
        seg[oedema], tissue[oedema] = 2, 4
        seg[rim], tissue[rim] = 4, 6
        seg[rim & necrosis], tissue[rim & necrosis] = 1, 5
    else:
        d = d + 0.35 * _smooth_noise(rng, tissue.shape, 1.5)  # diffuse, ill-defined border
        lesion = inside & (d < rng.uniform(1.4, 1.7))
        core = brain & (d < rng.uniform(0.7, 0.9))
        seg[lesion], tissue[lesion] = 2, 4
        seg[core], tissue[core] = 1, 7
    return seg


def grade_phantom(
    shape: tuple[int, int, int] = (32, 64, 64),
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    seed: int = 0,
    grade: str = "HGG",
) -> GradePhantom:
    """FLAIR, T1, T1ce, T2 and the BraTS seg of one brain with a glioma of `grade` ("LGG" | "HGG")."""
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got {grade!r}")
    shape = tuple(int(s) for s in shape)
    if min(shape) < 8:
        raise ValueError(f"brain phantom needs at least 8 voxels per axis, got {shape}")
    rng = np.random.default_rng(seed)
    tissue, brain = _anatomy(rng, shape)
    seg = _tumour(rng, tissue, brain, grade)
    images = {}
    for name in SEQUENCES:
        lut = np.asarray(SIGNAL[name], np.float32) * rng.uniform(0.85, 1.15)
        image = ndimage.gaussian_filter(lut[tissue], 0.6)
        bias = 1 + 0.08 * _smooth_noise(rng, shape, 6.0)
        sigma = 0.03 * float(lut.max())
        real = image * bias + sigma * rng.standard_normal(shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(shape, dtype=np.float32)
        images[name] = (np.sqrt(real**2 + imag**2) * brain).astype(np.float32)
    return GradePhantom(images, seg, grade, tuple(float(s) for s in spacing))
