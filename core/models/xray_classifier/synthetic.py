"""Demo chest X-rays for the classifier: NORMAL, or PNEUMONIA with one localized opacity at a known box.

The anatomy comes from `core.phantoms.chest_xray` (no opacities); a PNEUMONIA image gets one
patchy airspace opacity centred at a seeded position inside a lung field (upper, middle or
lower zone, either side), so the class depends on a finding whose place is known: the CAM test
checks that the heatmap's peak falls inside it. The finding's box (fractions xmin, ymin, xmax,
ymax of the image) is written to `xray/findings.json` and to each case of the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from core.phantoms import chest_xray

FINDINGS_FILE = "findings.json"
CLASSES = ("NORMAL", "PNEUMONIA")

# (split, images per class): 216 PNGs in all, as the demo had before.
FULL_COUNTS = (("train", 70), ("val", 15), ("test", 23))
FULL_SIZE = 256


@dataclass(eq=False)
class FindingXray:
    image: np.ndarray  # float32 (y, x) in [0, 1]
    label: str
    box: tuple[float, float, float, float] | None  # fractions (xmin, ymin, xmax, ymax); None for NORMAL
    seed: int


def finding_xray(
    size: int = 256, seed: int = 0, pneumonia: bool = False, width: int | None = None
) -> FindingXray:
    """One demo radiograph (size rows x `width` columns, default square)."""
    base = chest_xray(size, seed=seed, pneumonia=False)
    image = base.image
    rng = np.random.default_rng([seed, 7])
    box = None
    if pneumonia:
        image, box = _add_opacity(image, base.lung_mask.astype(bool), rng)
    if width is not None and width != size:
        image = ndimage.zoom(image, (1.0, width / size), order=1)
    return FindingXray(
        np.clip(image, 0, 1).astype(np.float32), "PNEUMONIA" if pneumonia else "NORMAL", box, int(seed)
    )


def _add_opacity(image: np.ndarray, lungs: np.ndarray, rng: np.random.Generator):
    h, w = image.shape
    rows, cols = np.nonzero(lungs)
    # keep the centre inside the lung fields and away from the midline: the two sides differ clearly
    lateral = np.abs(cols - (w - 1) / 2) > 0.18 * w
    pick = np.flatnonzero(lateral) if lateral.any() else np.arange(len(rows))
    i = int(rng.choice(pick))
    cy, cx = rows[i], cols[i]
    radius = rng.uniform(0.05, 0.07) * h
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    mottle = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), h / 60)
    mottle /= max(float(np.abs(mottle).max()), 1e-6)
    patch = np.clip(blob * (1 + 0.35 * mottle) - 0.1, 0, 1) / 0.9
    amplitude = rng.uniform(0.45, 0.6)
    out = image + amplitude * patch * (1 - 0.5 * image)
    region = np.nonzero(patch > 0.3)
    box = (
        float(region[1].min() / w),
        float(region[0].min() / h),
        float((region[1].max() + 1) / w),
        float((region[0].max() + 1) / h),
    )
    return out.astype(np.float32), box


def write_xray_folder(
    root: Path,
    seed: int = 0,
    counts=FULL_COUNTS,
    size: int = FULL_SIZE,
    progress: Callable[[str], object] = print,
    prefix: str = "",
) -> list[dict]:
    """`root/{split}/{NORMAL,PNEUMONIA}/*.png` and `root/findings.json`; returns one case dict per image
    (paths relative to root's parent when `prefix` is its name, e.g. "xray/")."""
    from core.demo import case_seed
    from core.io.writers import write_png

    root = Path(root)
    cases, findings = [], {}
    for split, count in counts:
        for label in CLASSES:
            for i in range(count):
                s = case_seed(seed, f"xray/{split}/{label}", i)
                xr = finding_xray(size, seed=s, pneumonia=label == "PNEUMONIA")
                rel = f"{split}/{label}/{label.lower()}_{i:03d}.png"
                write_png(np.rint(xr.image * 255).astype(np.uint8), root / rel)
                case = {
                    "id": f"xray_{split}_{label.lower()}_{i:03d}",
                    "kind": "xray",
                    "path": prefix + rel,
                    "label": label,
                    "split": split,
                }
                if xr.box is not None:
                    case["finding_box"] = [round(v, 5) for v in xr.box]
                    findings[rel] = case["finding_box"]
                cases.append(case)
        progress(f"X-ray {split}: {count} NORMAL + {count} PNEUMONIA (one localized opacity each)")
    (root / FINDINGS_FILE).write_text(
        json.dumps(
            {"box": "xmin, ymin, xmax, ymax as fractions of the image", "findings": findings}, indent=1
        )
    )
    return cases


def read_findings(root: Path) -> dict[str, tuple[float, float, float, float]]:
    """{path relative to root: finding box} from `root/findings.json` ({} when there is none)."""
    path = Path(root) / FINDINGS_FILE
    if not path.is_file():
        return {}
    return {k: tuple(v) for k, v in json.loads(path.read_text()).get("findings", {}).items()}


def write_demo(demo_root: Path, seed: int, small: bool, progress: Callable[[str], object]) -> list[dict]:
    """The family's demo hook (ModelSpec.demo_data): writes `<demo root>/xray` (the test-size layout of
    core.demo.SMALL when `small`)."""
    from core.demo import SMALL

    counts, size = (SMALL.xray_per_class, SMALL.xray_size) if small else (FULL_COUNTS, FULL_SIZE)
    return write_xray_folder(Path(demo_root) / "xray", seed, counts, size, progress, prefix="xray/")
