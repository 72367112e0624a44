"""Chest X-ray phantoms: a frontal radiograph drawn from a 2D analogue of the chest anatomy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.phantoms._common import _smooth_noise, _unit_grid
from core.phantoms.chest import ChestPhantom

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
