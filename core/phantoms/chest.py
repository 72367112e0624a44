"""Chest CT phantom: body, textured lungs with vessels, heart, airways, spine, ribs, table, lesions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from core.phantoms._common import _TISSUE_HU, TISSUE, _ellipse, _smooth_noise, _unit_grid, boxes_from_mask

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
