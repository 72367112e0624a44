"""Synthetic phantoms with known ground truth: chest CT, chest X-ray, four-sequence brain MRI.

Pure NumPy/SciPy, no file I/O, vectorised (no per-voxel Python loops) and deterministic for
a seed. In the spirit of MONAI's `create_test_image_3d` (random shapes with matching labels),
with the intensities a radiologist would expect: Hounsfield units for CT, the usual T1/T2/FLAIR
contrasts for MRI.

Conventions
- Arrays are `(z, y, x)`, the order `core.io.load_volume` returns.
- Chest CT is axial in the radiological display convention: anterior at row 0, the patient's
  right on the image left (column 0), so the heart sits to the image right. The z index
  increases towards the head (DICOM ImagePositionPatient z grows with the index): the lung
  bases are at low z, the apices at high z.
- Anatomy is laid out in coordinates normalised to the field of view (in-plane) and to the
  scanned length (z). Any matrix size gives a plausible image; `spacing` is recorded as
  metadata and only sets the physical size of structures that are specified in mm (discs).
- X-rays: `chest_xray` draws a 2D frontal radiograph directly from a 2D analogue of the same
  anatomy (line integrals of tissue thickness), because projecting a full 3D volume per image
  costs ~1 s and the classifier needs hundreds; `xray_projection` projects a 3D CT phantom
  (or any HU volume) for when the two must match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

TISSUE: dict[str, int] = {
    "air": 0,
    "fat": 1,
    "soft_tissue": 2,
    "lung": 3,
    "heart": 4,
    "cortical_bone": 5,
    "marrow": 6,
    "table": 7,
    "airway": 8,
    "liver": 9,
}

# Mean Hounsfield units per tissue label before texture, partial volume and noise.
_TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "fat": -100.0,
    "soft_tissue": 40.0,
    "lung": -860.0,
    "heart": 40.0,
    "cortical_bone": 900.0,
    "marrow": 250.0,
    "table": 300.0,
    "airway": -990.0,
    "liver": 60.0,
}


def _unit_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Column coordinate u (1, W) and row coordinate v (H, 1), both in [-1, 1]."""
    u = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / (width / 2)
    v = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / (height / 2)
    return u[np.newaxis, :], v[:, np.newaxis]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    noise -= noise.mean()
    noise /= max(float(noise.std()), 1e-6)
    return noise


def _coarse_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """Low-frequency noise: a random grid of `cells` per axis, smoothly interpolated to `shape`.

    Separable Gaussian-kernel interpolation as one small matrix per axis: ~100x faster than
    `ndimage.zoom(order=3)` or a wide `gaussian_filter` on a full volume.
    """
    noise = rng.standard_normal((cells,) * len(shape)).astype(np.float32)
    for axis, size in enumerate(shape):
        x = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
        weights = np.exp(-0.5 * (x[:, None] - (np.arange(cells) + 0.5)[None]) ** 2)
        weights /= weights.sum(axis=1, keepdims=True)
        noise = np.moveaxis(np.tensordot(weights.astype(np.float32), noise, axes=(1, axis)), 0, axis)
    noise -= noise.mean()
    noise /= max(float(noise.std()), 1e-6)
    return noise


def _ellipse(u, v, cu: float, cv: float, ru, rv) -> np.ndarray:
    """Squared normalised radius ((u-cu)/ru)^2 + ((v-cv)/rv)^2 (broadcasts)."""
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2


def boxes_from_mask(mask: np.ndarray) -> np.ndarray:
    """Per-slice tight box of a (z, y, x) mask as (z, 4) float32 Xmin, Ymin, Xmax, Ymax.

    Fractions of the slice width/height at pixel edges: a mask covering columns 10..19 of a
    100-wide slice gives Xmin 0.10, Xmax 0.20. Rows of slices without any mask voxel are NaN.
    """
    mask = np.asarray(mask, dtype=bool)
    depth, height, width = mask.shape
    cols = mask.any(axis=1)  # (z, x)
    rows = mask.any(axis=2)  # (z, y)
    present = cols.any(axis=1)
    boxes = np.full((depth, 4), np.nan, dtype=np.float32)
    xmin = cols.argmax(axis=1)
    xmax = width - cols[:, ::-1].argmax(axis=1)
    ymin = rows.argmax(axis=1)
    ymax = height - rows[:, ::-1].argmax(axis=1)
    stacked = np.stack([xmin / width, ymin / height, xmax / width, ymax / height], axis=1)
    boxes[present] = stacked[present].astype(np.float32)
    return boxes


# ---------------------------------------------------------------------------------------------
# Chest CT
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ChestPhantom:
    """A synthetic chest CT with its ground truth, all `(z, y, x)`."""

    hu: np.ndarray  # float32 Hounsfield units
    lung_mask: np.ndarray  # uint8
    lesion_mask: np.ndarray  # uint8, ground-glass opacities (all zero without lesions)
    body_mask: np.ndarray  # uint8, the patient (table excluded)
    tissue: np.ndarray  # uint8 labels, see TISSUE (before lesions are added)
    boxes: np.ndarray  # float32 (z, 4) Xmin, Ymin, Xmax, Ymax fractions around both lungs, NaN rows
    spacing: tuple[float, float, float]
    seed: int
    has_lesions: bool

    @property
    def label(self) -> str:
        return "lesion" if self.has_lesions else "normal"


@dataclass
class _ChestLayout:
    """Random anatomy of one patient, in normalised coordinates (see module docstring)."""

    body: tuple[float, float, float, float]  # centre u, v and semi-axes
    fat: float  # subcutaneous fat thickness (fraction of the semi-axes)
    muscle: float
    lungs: list[dict] = field(default_factory=list)
    t0: float = 0.1  # lung base (fraction of the scanned length)
    t1: float = 0.9  # lung apex
    heart: dict = field(default_factory=dict)
    spine_v: float = 0.4
    hu_shift: dict = field(default_factory=dict)
    noise_sigma: float = 15.0


def _chest_layout(rng: np.random.Generator, depth: int) -> _ChestLayout:
    bu, bv = rng.normal(0, 0.015), -0.1 + rng.normal(0, 0.015)
    ax, ay = rng.uniform(0.8, 0.9), rng.uniform(0.56, 0.64)
    edge = min(0.2, 2.5 / depth)  # at least ~2 slices without lung at each end
    layout = _ChestLayout(body=(bu, bv, ax, ay), fat=rng.uniform(0.05, 0.1), muscle=rng.uniform(0.04, 0.06))
    layout.t0 = max(edge, rng.uniform(0.05, 0.12))
    layout.t1 = min(1 - edge, rng.uniform(0.86, 0.95))
    size = rng.uniform(0.9, 1.08)
    for side in (-1, 1):  # -1: patient right (image left), +1: patient left
        layout.lungs.append(
            {
                "side": side,
                "cu": bu + side * rng.uniform(0.33, 0.4),
                "cv": bv + rng.uniform(-0.04, 0.03),
                "ru": size * rng.uniform(0.25, 0.3) * (0.92 if side > 0 else 1.0),
                "rv": size * rng.uniform(0.36, 0.43),
                "harmonics": [(k, rng.uniform(0, 0.06), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)],
                "dome": rng.uniform(0.08, 0.14) if side < 0 else rng.uniform(0.04, 0.09),
            }
        )
    span = layout.t1 - layout.t0
    layout.heart = {
        "cu": bu + rng.uniform(0.1, 0.16),
        "cv": bv - rng.uniform(0.02, 0.08),
        "ru": rng.uniform(0.22, 0.28),
        "rv": rng.uniform(0.18, 0.23),
        "angle": np.deg2rad(rng.uniform(20, 40)),
        "tc": layout.t0 + rng.uniform(0.22, 0.3) * span,
        "rt": rng.uniform(0.24, 0.3) * span,
    }
    layout.spine_v = bv + ay - rng.uniform(0.2, 0.24)
    layout.hu_shift = {name: float(rng.normal(0, 8)) for name in _TISSUE_HU}
    layout.noise_sigma = float(rng.uniform(10, 20))
    return layout


def _paint_body(tissue, u, v, lay: _ChestLayout) -> tuple[np.ndarray, tuple]:
    """Table, fat, muscle and thoracic cavity; returns the body mask and cavity ellipse."""
    bu, bv, ax, ay = lay.body
    table_top = bv + ay + 0.015 - 0.1 * u**2
    thickness = max(0.035, 3.5 / (tissue.shape[1] / 2))  # at least ~3 pixels at low resolution
    table = (v > table_top) & (v < table_top + thickness) & (np.abs(u) < 0.92)
    tissue[:, table] = TISSUE["table"]
    body = _ellipse(u, v, bu, bv, ax, ay) < 1
    tissue[:, body] = TISSUE["fat"]
    inner = 1 - lay.fat
    tissue[:, _ellipse(u, v, bu, bv, ax * inner, ay * inner) < 1] = TISSUE["soft_tissue"]
    cav = (bu, bv, ax * (inner - lay.muscle), ay * (inner - lay.muscle))
    return body, cav


def _lung_profile(depth: int, t0: float, t1: float) -> np.ndarray:
    """(z, 1, 1) size factor of the lungs: 1 at the base, tapering to 0 at the apex."""
    t = (np.arange(depth, dtype=np.float32) + 0.5) / depth
    s = (t - t0) / (t1 - t0)
    f = np.sqrt(1 - np.clip(s, 0, 1) ** 2.2) * ((s >= 0) & (s <= 1))
    return f.astype(np.float32)[:, None, None]


def _paint_lungs(tissue, u, v, lay: _ChestLayout, cav) -> None:
    depth = tissue.shape[0]
    t = ((np.arange(depth, dtype=np.float32) + 0.5) / depth)[:, None, None]
    f = np.maximum(_lung_profile(depth, lay.t0, lay.t1), 1e-3)
    cavity_ok = (_ellipse(u, v, cav[0], cav[1], cav[2] * 0.97, cav[3] * 0.97) < 1)[None]
    for lung in lay.lungs:
        theta = np.arctan2(v - lung["cv"], u - lung["cu"])
        bound = 1 + sum(a * np.cos(k * theta + p) for k, a, p in lung["harmonics"])
        r2 = _ellipse(u, v, lung["cu"], lung["cv"], lung["ru"], lung["rv"])  # (H, W)
        inside = r2[None] < (bound[None] * f) ** 2
        # Diaphragm dome: an ellipsoid pushing up into the base (liver on the right).
        dome_top = lay.t0 + lung["dome"] * (lay.t1 - lay.t0)
        rt = 0.22
        dome = _ellipse(u, v, lung["cu"], lung["cv"] + 0.05, 0.34, 0.42)[None]
        dome = dome + ((t - (dome_top - rt)) / rt) ** 2
        inside &= (dome >= 1) & cavity_ok & (np.abs(u - lay.body[0]) > 0.07)
        tissue[inside] = TISSUE["lung"]
        cavity = cavity_ok & (tissue == TISSUE["soft_tissue"]) & (dome < 1)
        if lung["side"] < 0:
            tissue[cavity] = TISSUE["liver"]


def _paint_heart(tissue, u, v, lay: _ChestLayout) -> None:
    h = lay.heart
    depth = tissue.shape[0]
    t = ((np.arange(depth, dtype=np.float32) + 0.5) / depth)[:, None, None]
    cos, sin = np.cos(h["angle"]), np.sin(h["angle"])
    du, dv = u - h["cu"], v - h["cv"]
    ru_, rv_ = du * cos + dv * sin, -du * sin + dv * cos
    r2 = (ru_ / h["ru"]) ** 2 + (rv_ / h["rv"]) ** 2
    heart = (r2[None] + ((t - h["tc"]) / h["rt"]) ** 2) < 1
    # A margin of mediastinal fat around the heart, then the heart itself.
    margin = (r2[None] / 1.12**2 + ((t - h["tc"]) / (h["rt"] * 1.1)) ** 2) < 1
    tissue[margin & ~heart & (tissue == TISSUE["lung"])] = TISSUE["fat"]
    tissue[heart & (tissue != TISSUE["air"])] = TISSUE["heart"]


def _paint_spine(tissue, u, v, lay: _ChestLayout, spacing) -> None:
    depth = tissue.shape[0]
    bu, vs, rb = lay.body[0], lay.spine_v, 0.085
    r = np.sqrt(_ellipse(u, v, bu, vs, 1.0, 1.0))
    z_mm = np.arange(depth) * spacing[0]
    disc = ((z_mm + 7.0) % 26.0) < 5.0  # ~21 mm vertebral body + 5 mm disc
    body = r < rb
    cortex = body & (r >= rb - 0.02)
    marrow = body & ~cortex
    canal_v = vs + rb + 0.045
    rc = np.sqrt(_ellipse(u, v, bu, canal_v, 1.0, 1.0))
    arch = (rc >= 0.04) & (rc < 0.065) & (v > canal_v - 0.02)
    process = (np.abs(u - bu) < 0.018) & (v > canal_v + 0.05) & (v < canal_v + 0.15)
    for z in range(depth):  # per slice, vectorised in-plane: discs differ by slice
        sl = tissue[z]
        sl[(rc < 0.04)] = TISSUE["soft_tissue"]  # spinal canal
        sl[arch | process] = TISSUE["cortical_bone"]
        if disc[z]:
            sl[body] = TISSUE["soft_tissue"]
        else:
            sl[marrow] = TISSUE["marrow"]
            sl[cortex] = TISSUE["cortical_bone"]
    aorta = _ellipse(u, v, bu + 0.08, vs - rb - 0.07, 0.045, 0.045) < 1
    tissue[:, aorta] = TISSUE["soft_tissue"]


def _paint_ribs(tissue, u, v, lay: _ChestLayout, cav, spacing) -> None:
    depth = tissue.shape[0]
    cu, cv, au, av = cav
    e = np.sqrt(_ellipse(u, v, cu, cv, au, av))
    theta = np.arctan2((v - cv) / av, (u - cu) / au)
    band = (e >= 1.0) & (e < 1.07) & (np.abs(theta + np.pi / 2) > 0.2) & (np.abs(theta - np.pi / 2) > 0.35)
    sternum = (e >= 1.0) & (e < 1.1) & (np.abs(u - cu) < 0.05) & (v < cv)
    t = (np.arange(depth) + 0.5) / depth
    phase = 2 * np.pi * np.arange(depth) * spacing[0] / 30.0
    for z in np.flatnonzero((t > lay.t0 - 0.03) & (t < lay.t1 + 0.03)):
        ribs = band & (np.cos(5 * theta + phase[z]) > 0.6)
        tissue[z][ribs | sternum] = TISSUE["cortical_bone"]


def _paint_airways(tissue, u, v, lay: _ChestLayout) -> None:
    depth = tissue.shape[0]
    t = (np.arange(depth, dtype=np.float32) + 0.5) / depth
    span = lay.t1 - lay.t0
    carina = lay.t0 + 0.62 * span
    bu, vt = lay.body[0], lay.spine_v - 0.085 - 0.1
    for z in range(depth):
        if t[z] >= carina:
            centres = [(bu, vt, 0.05)]
        elif t[z] >= carina - 0.14 * span:
            k = (carina - t[z]) / (0.14 * span)
            centres = [(bu + s * 0.16 * k, vt + 0.03 * k, 0.034) for s in (-1, 1)]
        else:
            continue
        for cu, cv, rr in centres:
            wall = _ellipse(u, v, cu, cv, rr * 1.3, rr * 1.3) < 1
            lumen = _ellipse(u, v, cu, cv, rr, rr) < 1
            tissue[z][wall & (tissue[z] != TISSUE["air"])] = TISSUE["soft_tissue"]
            tissue[z][lumen & (tissue[z] != TISSUE["air"])] = TISSUE["airway"]


def _vessel_tree(rng: np.random.Generator, roots, dirs, length, radius, depth: int = 7):
    """Points (n, 3) and radii (n,) along a randomly branching tree, two children per branch."""
    p0s, p1s, rs = [], [], []
    p, d = np.asarray(roots, np.float32), np.asarray(dirs, np.float32)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    lengths, radii = np.full(len(p), length, np.float32), np.full(len(p), radius, np.float32)
    for _ in range(depth):
        end = p + d * lengths[:, None]
        p0s.append(p), p1s.append(end), rs.append(radii)
        p = np.repeat(end, 2, axis=0)
        d = np.repeat(d, 2, axis=0) + rng.normal(0, 0.6, (len(p), 3)).astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        lengths = np.repeat(lengths, 2) * rng.uniform(0.62, 0.82, len(p)).astype(np.float32)
        radii = np.repeat(radii, 2) * 0.74
    p0, p1, r = np.concatenate(p0s), np.concatenate(p1s), np.concatenate(rs)
    n = np.maximum(2, np.ceil(np.linalg.norm(p1 - p0, axis=1) / 0.7).astype(int))
    seg = np.repeat(np.arange(len(p0)), n)
    frac = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n - 1, n)
    return p0[seg] + (p1 - p0)[seg] * frac[:, None].astype(np.float32), r[seg]


def _vessel_fraction(rng, shape, lay: _ChestLayout, spacing) -> np.ndarray:
    """(z, y, x) in [0, 1]: how much of each voxel is pulmonary vessel (partial volume)."""
    depth, height, width = shape
    sz = spacing[0] / spacing[1]  # z index -> in-plane pixel units
    zc = (lay.t0 + 0.5 * (lay.t1 - lay.t0)) * depth * sz
    roots, dirs = [], []
    for lung in lay.lungs:
        yc = (lung["cv"] * height / 2) + (height - 1) / 2
        xc = ((lung["cu"] - lung["side"] * 0.55 * lung["ru"]) * width / 2) + (width - 1) / 2
        d = rng.normal(0, 1, (10, 3))
        d[:, 2] = lung["side"] * np.abs(d[:, 2]) + lung["side"] * 0.3  # away from the mediastinum
        d[:, 0] *= 1.5  # lungs are long in z
        roots += [(zc, yc, xc)] * len(d)
        dirs.append(d)
    scale = width / 256
    dirs = np.concatenate(dirs)
    pts, radii = _vessel_tree(rng, roots, dirs, length=0.11 * width, radius=1.8 * scale, depth=8)
    zi = np.rint(pts[:, 0] / sz).astype(int)
    yi, xi = np.rint(pts[:, 1]).astype(int), np.rint(pts[:, 2]).astype(int)
    ok = (zi >= 0) & (zi < depth) & (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
    splat = np.zeros(shape, np.float32)
    np.maximum.at(splat, (zi[ok], yi[ok], xi[ok]), radii[ok])
    if width < 160:  # low resolution: vessels are at most a pixel wide, no thickening
        spread = splat
    else:
        big = ndimage.grey_dilation(np.where(splat > 1.3, splat, 0), size=(1, 5, 5))
        spread = np.maximum(ndimage.grey_dilation(splat, size=(1, 3, 3)), big)
    return np.clip(ndimage.gaussian_filter(spread, (0.3, 0.6, 0.6)) / 0.9, 0, 1)


def _add_lesions(rng, hu, lung, texture, spacing) -> np.ndarray:
    """Ground-glass opacities (-700..-300 HU, fuzzy) inside the lungs; returns their mask."""
    depth, height, width = hu.shape
    lesion = np.zeros(hu.shape, dtype=bool)
    candidates = np.flatnonzero(lung)
    for _ in range(int(rng.integers(2, 6))):
        zc, yc, xc = np.unravel_index(candidates[rng.integers(len(candidates))], hu.shape)
        r = rng.uniform(0.045, 0.1) * width
        rz = max(1.0, r * spacing[1] / spacing[0])
        lo = np.maximum(0, np.floor([zc - 2 * rz, yc - 2 * r, xc - 2 * r]).astype(int))
        hi = np.minimum(hu.shape, np.ceil([zc + 2 * rz + 1, yc + 2 * r + 1, xc + 2 * r + 1]).astype(int))
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        zz, yy, xx = np.ogrid[box]
        d = np.sqrt(((zz - zc) / rz) ** 2 + ((yy - yc) / r) ** 2 + ((xx - xc) / r) ** 2)
        w = np.clip(1.5 - d + 0.25 * texture[box], 0, 1) * lung[box]
        target = rng.uniform(-620, -380) + 40 * texture[box]
        hu[box] += w * (target - hu[box]) * (hu[box] < target)
        lesion[box] |= w > 0.5
    return lesion & lung


def chest_ct_phantom(
    shape: tuple[int, int, int] = (48, 256, 256),
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.7),
    seed: int = 0,
    lesions: bool = False,
) -> ChestPhantom:
    """A chest CT in HU with lung, lesion and body masks and per-slice lung boxes.

    Air, a patient table, the body with subcutaneous fat, two textured lungs with branching
    vessels that taper to the apex and sit on diaphragm domes, the heart (left-anterior),
    airways, aorta, spine with discs, ribs and sternum, then partial-volume blur and noise.
    With `lesions=True`, 2-5 fuzzy ground-glass opacities inside the lungs.
    """
    depth, height, width = (int(s) for s in shape)
    if depth < 6 or height < 32 or width < 32:
        raise ValueError(f"chest phantom needs at least 6x32x32 voxels, got {shape}")
    rng = np.random.default_rng(seed)
    lay = _chest_layout(rng, depth)
    u, v = _unit_grid(height, width)
    tissue = np.zeros((depth, height, width), np.uint8)
    body, cav = _paint_body(tissue, u, v, lay)
    _paint_lungs(tissue, u, v, lay, cav)
    _paint_heart(tissue, u, v, lay)
    _paint_spine(tissue, u, v, lay, spacing)
    _paint_ribs(tissue, u, v, lay, cav, spacing)
    _paint_airways(tissue, u, v, lay)
    lut = np.array([_TISSUE_HU[n] + lay.hu_shift[n] for n in TISSUE], np.float32)
    hu = lut[tissue]
    lung = tissue == TISSUE["lung"]
    texture = _smooth_noise(rng, tissue.shape, (0.6, 2.0 * width / 256, 2.0 * width / 256))
    gravity = 45 * np.clip((v - lay.lungs[0]["cv"]) / 0.4, -1, 1)  # dependent lung is denser
    vessels = _vessel_fraction(rng, tissue.shape, lay, spacing)
    lung_hu = hu + 28 * texture + gravity
    lung_hu += vessels * (45 - lung_hu)
    hu = np.where(lung, lung_hu, hu)
    marrow = tissue == TISSUE["marrow"]
    hu[marrow] += 40 * texture[marrow]
    lesion = _add_lesions(rng, hu, lung, texture, spacing) if lesions else np.zeros_like(lung)
    hu = ndimage.gaussian_filter(hu, (0, 0.6, 0.6))
    noise = _smooth_noise(rng, tissue.shape, (0, 0.5, 0.5))
    hu += lay.noise_sigma * noise
    np.clip(hu, -1024, 3071, out=hu)
    body3 = np.broadcast_to(body, tissue.shape)
    return ChestPhantom(
        hu=hu.astype(np.float32),
        lung_mask=lung.astype(np.uint8),
        lesion_mask=lesion.astype(np.uint8),
        body_mask=body3.astype(np.uint8),
        tissue=tissue,
        boxes=boxes_from_mask(lung),
        spacing=tuple(float(s) for s in spacing),
        seed=int(seed),
        has_lesions=bool(lesions),
    )


# ---------------------------------------------------------------------------------------------
# X-ray
# ---------------------------------------------------------------------------------------------


def xray_projection(phantom_or_hu: ChestPhantom | np.ndarray, spacing: float | None = None) -> np.ndarray:
    """A frontal radiograph of a CT volume: line integrals along the anterior-posterior axis.

    Attenuation relative to water, max(0, 1 + HU/1000), summed along y (rows) times the row
    spacing; the result is the log-domain detector signal (-log I/I0), so air-filled lungs are
    dark and bone, heart and abdomen bright. Returns float32 (z, x) in [0, 1] with the head at
    row 0 and the patient's right on the image left.
    """
    if isinstance(phantom_or_hu, ChestPhantom):
        hu, dy = phantom_or_hu.hu, phantom_or_hu.spacing[1]
    else:
        hu, dy = np.asarray(phantom_or_hu, np.float32), 1.0
    if hu.ndim != 3:
        raise ValueError(f"xray_projection needs a (z, y, x) volume, got shape {hu.shape}")
    dy = float(spacing) if spacing is not None else dy
    mu = np.clip(1 + hu / 1000.0, 0, None)
    integral = mu.sum(axis=1, dtype=np.float32) * dy
    top = float(np.percentile(integral, 99.9))
    return np.clip(integral[::-1] / max(top, 1e-6), 0, 1).astype(np.float32)


@dataclass(eq=False)
class XrayPhantom:
    """A synthetic frontal chest radiograph, (y, x) with the head at row 0."""

    image: np.ndarray  # float32 [0, 1]
    lung_mask: np.ndarray  # uint8 visible lung fields
    opacity_mask: np.ndarray  # uint8 pneumonic opacities (all zero for NORMAL)
    label: str  # "NORMAL" | "PNEUMONIA"
    seed: int


def _xray_lungs(u, w, rng) -> tuple[np.ndarray, np.ndarray]:
    """Lung fields (bool) and their AP thickness (0..1) on the (w rows, u cols) grid."""
    fields = np.zeros(np.broadcast_shapes(u.shape, w.shape), bool)
    thick = np.zeros(fields.shape, np.float32)
    top, base = rng.uniform(-0.8, -0.7), rng.uniform(0.36, 0.5)
    for side in (-1, 1):
        s = side * u  # distance from the midline, positive on this side
        cs, rs = rng.uniform(0.3, 0.35), rng.uniform(0.22, 0.26) * (0.95 if side > 0 else 1.0)
        cw, rw = (top + base) / 2, (base - top) / 2 + 0.05
        taper = np.clip(0.62 + 0.5 * (w - top) / (base - top), 0.62, 1.1)
        r2 = ((s - cs) / (rs * taper)) ** 2 + ((w - cw) / rw) ** 2
        dome = base - 0.12 * (1 - np.clip(((s - cs) / (rs * 1.1)) ** 2, 0, 1)) + (0.03 if side < 0 else 0)
        inside = (r2 < 1) & (w < dome) & (s > 0.07)
        fields |= inside
        thick = np.maximum(thick, np.sqrt(np.clip(1 - r2, 0, 1)) * inside)
    return fields, thick


def _xray_opacities(rng, shape, lungs, u, w) -> np.ndarray:
    """Patchy airspace opacities (0..1) in 1-3 lung zones, lower zones more often."""
    patches = np.zeros(shape, np.float32)
    rows, cols = np.nonzero(lungs)
    weight = 1 + 2 * (rows / shape[0])  # lower zones favoured
    for _ in range(int(rng.integers(1, 4))):
        i = rng.choice(len(rows), p=weight / weight.sum())
        r = rng.uniform(0.1, 0.22)
        d2 = (u - u[0, cols[i]]) ** 2 + (w - w[rows[i], 0]) ** 2
        patches = np.maximum(patches, np.exp(-d2 / (2 * r**2)))
    mottle = _smooth_noise(rng, shape, shape[0] / 40)
    return np.clip((patches * (1 + 0.45 * mottle) - 0.35) * 2.2, 0, 1) * lungs


def chest_xray(size: int = 256, seed: int = 0, pneumonia: bool = False) -> XrayPhantom:
    """A frontal chest radiograph drawn from a 2D analogue of the chest phantom.

    The log-domain signal is a sum of tissue thicknesses times attenuation: body (a cylinder),
    lungs (air replacing tissue), heart, mediastinum and spine, ribs and clavicles, vessels,
    and with `pneumonia=True` patchy opacities. Position, size, exposure and noise vary
    by seed so that the NORMAL/PNEUMONIA task is learnable but not trivial.
    """
    if size < 32:
        raise ValueError(f"chest_xray needs size >= 32, got {size}")
    rng = np.random.default_rng(seed)
    u, w = _unit_grid(size, size)
    scale, angle = rng.uniform(0.9, 1.08), np.deg2rad(rng.uniform(-5, 5))
    du, dw = rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06)
    cos, sin = np.cos(angle), np.sin(angle)
    u, w = (u * cos - w * sin - du) / scale, (u * sin + w * cos - dw) / scale
    half = np.clip(0.72 + 0.2 * np.clip(w + 0.6, 0, 0.4) / 0.4, 0, 1)  # torso, wider below the shoulders
    body = np.sqrt(np.clip(1 - (u / half) ** 2, 0, 1)) * (w > -0.95)
    lungs, lung_thick = _xray_lungs(u, w, rng)
    heart_e = ((u - rng.uniform(0.1, 0.16)) / rng.uniform(0.3, 0.36)) ** 2 + ((w - 0.26) / 0.25) ** 2
    heart = np.clip(1 - heart_e, 0, 1) ** 0.3
    spine = (np.abs(u) < 0.075) * 1.0 + (np.abs(u) < 0.14) * (w < 0.1) * 0.6
    s = np.abs(u)
    ribs = (np.cos(2 * np.pi * (w - 0.55 * s**2) / 0.16) > 0.7) * (s < half * 0.92) * (w < 0.55) * (s > 0.08)
    clav = (np.abs(w - (-0.62 + 0.18 * s)) < 0.022) * (s > 0.05) * (s < 0.5)
    vessels = _smooth_noise(rng, u.shape if u.shape == w.shape else body.shape, size / 128)
    hilum = np.exp(-((s - 0.22) ** 2 + (w + 0.05) ** 2) / 0.06)
    signal = (
        1.0 * body
        - 0.8 * lung_thick * body
        + 0.35 * heart
        + 0.2 * spine * body
        + 0.07 * ribs
        + 0.15 * clav
        + lungs * (0.05 * np.clip(vessels, 0, None) * (0.5 + hilum))
    )
    opacity = _xray_opacities(rng, body.shape, lungs, u, w) if pneumonia else np.zeros(body.shape, np.float32)
    signal = signal + rng.uniform(0.3, 0.55) * opacity * lung_thick.clip(0.35, 1)
    signal = ndimage.gaussian_filter(signal.astype(np.float32), size / 256)
    gamma, gain = rng.uniform(0.8, 1.25), rng.uniform(0.85, 1.0)
    image = np.clip(signal / max(float(signal.max()), 1e-6), 0, 1) ** gamma * gain
    image += rng.uniform(0.01, 0.03) * rng.standard_normal(image.shape).astype(np.float32)
    return XrayPhantom(
        image=np.clip(image, 0, 1).astype(np.float32),
        lung_mask=(lungs & (heart_e >= 1)).astype(np.uint8),
        opacity_mask=(opacity > 0.3).astype(np.uint8),
        label="PNEUMONIA" if pneumonia else "NORMAL",
        seed=int(seed),
    )


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
