"""Lung-box training data: the prepare step's output (SPEC 4) as torch datasets.

Reads `<prepared>/stats.json`, `boxes.csv` and the float16 `.npy` slices; `--data` may
also be a data root (or an annotation CSV), which is prepared into `<run>/prepared` first.
Augmentation moves image and box together (the box of a rotated box is its enclosing box,
clipped). `augment` is the reference, torchvision.transforms.v2 with tv_tensors.BoundingBoxes
one slice at a time; training uses `augment_batch`, which draws the same parameters and gives
the same pixels and boxes (tests compare them) for a whole batch in a few tensor operations:
per slice, v2 costs about 1.5 ms of small-tensor work on the CPU, which was the data-loader wait.
Every random draw is a function of (seed, epoch, index), so a resumed run sees the same
batches and augmentations as an uninterrupted one, whatever the number of workers.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from core.errors import TrainingDataError

BOX_COLUMNS = ("Xmin", "Ymin", "Xmax", "Ymax")
REQUIRED_COLUMNS = ("Image", *BOX_COLUMNS, "split", "file")


@dataclass(frozen=True)
class BoxItem:
    """One prepared slice: its .npy path and its box as fractions."""

    image_id: str
    path: Path
    box: tuple[float, float, float, float]
    volume: str = ""
    weight: float = 1.0  # loss weight: 1 for annotated boxes, `pseudo_label_weight` for HU-rule pseudo-labels


@dataclass(frozen=True)
class PreparedLungData:
    root: Path
    mean: float
    std: float
    size: int
    train: list[BoxItem]
    val: list[BoxItem]


# ---------------------------------------------------------------- reading and checking


def _read_stats(root: Path) -> dict[str, Any]:
    path = root / "stats.json"
    try:
        stats = json.loads(path.read_text())
        mean, std = float(stats["mean"]), float(stats["std"])
    except FileNotFoundError:
        raise TrainingDataError(f"{path}: missing (run `python -m core prepare` first)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainingDataError(f"{path}: needs numeric 'mean' and 'std' ({exc})") from None
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise TrainingDataError(f"{path}: mean {mean} / std {std} unusable (std must be > 0)")
    return stats


def _parse_box(row: dict[str, str], where: str) -> tuple[float, float, float, float]:
    try:
        box = tuple(float(row[c]) for c in BOX_COLUMNS)
    except (TypeError, ValueError):
        raise TrainingDataError(
            f"{where}: box values must be numbers, got {[row.get(c) for c in BOX_COLUMNS]}"
        ) from None
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) and -1e-6 <= v <= 1 + 1e-6 for v in box) or x0 >= x1 or y0 >= y1:
        raise TrainingDataError(
            f"{where}: box {box} must be fractions in [0, 1] with Xmin < Xmax and Ymin < Ymax"
        )
    return box  # type: ignore[return-value]


def _read_boxes(root: Path) -> list[tuple[str, BoxItem]]:
    path = root / "boxes.csv"
    if not path.is_file():
        raise TrainingDataError(f"{path}: missing (the prepare step writes it)")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TrainingDataError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            where = f"{path} line {line}"
            item = BoxItem(row["Image"], root / row["file"], _parse_box(row, where), row.get("Volume") or "")
            rows.append((row["split"].strip(), item))
    return rows


def _check_slice_file(item: BoxItem) -> None:
    try:
        arr = np.load(item.path, mmap_mode="r")
    except FileNotFoundError:
        raise TrainingDataError(f"{item.path}: missing (listed in boxes.csv for {item.image_id})") from None
    except (ValueError, OSError) as exc:
        raise TrainingDataError(f"{item.path}: not a readable .npy file ({exc})") from None
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise TrainingDataError(f"{item.path}: expected a 2D slice, got shape {arr.shape}")


def read_prepared(root: Path, pseudo_weight: float = 0.3) -> PreparedLungData:
    """The prepared data set, checked: stats, both splits non-empty, every listed file a 2D slice.

    Rows of split "pseudo" (HU-rule boxes on unannotated slices) train with loss weight
    `pseudo_weight` (0 leaves them out).
    """
    root = Path(root)
    if not root.is_dir():
        raise TrainingDataError(f"{root}: not a folder")
    stats = _read_stats(root)
    rows = _read_boxes(root)
    train = [item for split, item in rows if split == "train"]
    if pseudo_weight > 0:
        train += [replace(item, weight=float(pseudo_weight)) for split, item in rows if split == "pseudo"]
    val = [item for split, item in rows if split == "val"]
    for name, items in (("train", train), ("val", val)):
        if not items:
            raise TrainingDataError(
                f"{root / 'boxes.csv'}: no '{name}' rows (need both train and val slices)"
            )
    for item in train + val:
        _check_slice_file(item)
    size = int(stats.get("size") or np.load(train[0].path, mmap_mode="r").shape[0])
    return PreparedLungData(root, float(stats["mean"]), float(stats["std"]), size, train, val)


def demo_truth_csv(demo_root: Path, csv_path: Path, progress: Callable[[str], Any] = print) -> Path:
    """An annotation CSV of the demo's ground-truth lung boxes (every chest CT slice showing lung)."""
    from core.annotations import BoxStore
    from core.demo import load_manifest
    from core.io import load_volume

    boxes = []
    for case in load_manifest(demo_root)["cases"]:
        if case.get("kind") != "chest_ct" or not case.get("truth"):
            continue
        volume = load_volume(demo_root / case["path"])
        with np.load(demo_root / case["truth"]) as truth:
            truth_boxes = truth["boxes"]
        for z in np.flatnonzero(np.isfinite(truth_boxes).all(axis=1)):
            x0, y0, x1, y1 = (float(v) for v in truth_boxes[z])
            boxes.append(
                {
                    "Image": volume.slice_ids[z],
                    "Xmin": x0,
                    "Ymin": y0,
                    "Xmax": x1,
                    "Ymax": y1,
                    "Volume": volume.volume_id,
                    "Slice": int(z),
                }
            )
    if not boxes:
        raise TrainingDataError(f"{demo_root}: the demo manifest lists no chest CT with ground-truth boxes")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    BoxStore(csv_path).upsert_many(boxes, annotator="demo-truth")
    progress(f"{len(boxes)} ground-truth lung boxes of the demo written to {csv_path}")
    return csv_path


def _annotation_source(
    data: Path, run_dir: Path, settings: dict[str, Any], progress: Callable[[str], Any]
) -> tuple[Path, Path]:
    """(annotation CSV, data root) for a `--data` that is not prepared yet."""
    from core.settings import annotations_path, data_root

    if data.is_file() and data.suffix.lower() == ".csv":
        return data, data_root()
    if not data.is_dir():
        raise TrainingDataError(
            f"{data}: neither a prepared folder (with stats.json), an annotation CSV nor a data root"
        )
    if settings.get("annotations_csv"):
        return Path(str(settings["annotations_csv"])).expanduser(), data
    if (data / "manifest.json").is_file():  # the demo data set: train on its ground-truth boxes
        return demo_truth_csv(data, run_dir / "demo_truth_boxes.csv", progress), data
    return annotations_path(), data


def resolve_lung_data(
    data: Path, run_dir: Path, settings: dict[str, Any], progress: Callable[[str], Any] = print
) -> Path:
    """The prepared folder for `--data`: itself when it has stats.json, else prepared into `<run>/prepared`.

    `--data` can be a prepared folder, an annotation CSV (volumes under the configured data
    root), a data root (the CSV from the `annotations_csv` setting, else the configured
    annotation file) or the demo data folder (its ground-truth boxes, unless `annotations_csv`).
    """
    data = Path(data).expanduser()
    if data.is_dir() and (data / "stats.json").is_file():
        return data
    out = run_dir / "prepared"
    if (out / "stats.json").is_file():  # prepared by an earlier start of this run (resume)
        return out
    csv_path, root = _annotation_source(data, run_dir, settings, progress)
    if not csv_path.is_file():
        raise TrainingDataError(
            f"{csv_path}: annotation CSV not found (set annotations_csv or annotate slices first)"
        )
    from core.models.lung_localizer.prepare import prepare_lung_dataset

    progress(f"preparing {csv_path} over {root} into {out}")
    prepared = prepare_lung_dataset(
        csv_path,
        root,
        out,
        val_fraction=float(settings.get("val_fraction", 0.2)),
        size=int(settings.get("prepare_size", 512)),
        seed=int(settings["seed"]),
        progress=progress,
        split=str(settings.get("split", "auto")),
        include_proposals=bool(settings.get("include_proposals", False)),
        pseudo_labels=str(settings.get("pseudo_labels", "off")),
        exclude_volumes=excluded_volumes(settings),
    )
    return Path(prepared)


def excluded_volumes(settings: dict[str, Any]) -> list[str]:
    """The `exclude_volumes` setting (comma-separated volume ids) as a list."""
    return [v.strip() for v in str(settings.get("exclude_volumes", "") or "").split(",") if v.strip()]


# ---------------------------------------------------------------- datasets


def item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochShuffleSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch); yields `epoch * n + index` so the dataset knows the epoch.

    The epoch comes from `epoch_fn` (the trainer's current epoch), read in the main
    process when an epoch's iteration starts, so it is right after a resume too.
    """

    def __init__(self, n: int, seed: int, epoch_fn: Callable[[], int]) -> None:
        self.n, self.seed, self.epoch_fn = n, seed, epoch_fn

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        epoch = int(self.epoch_fn())
        generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, 2**31) % (2**63))
        for index in torch.randperm(self.n, generator=generator).tolist():
            yield epoch * self.n + index


@dataclass(frozen=True)
class Augmentation:
    """Gamma, then the affine (rotate, shift, scale), then a left-right flip (`flip`), window jitter
    (contrast 1 ± `window`, brightness ± `window` / 2) and Gaussian noise (sigma up to `noise`)."""

    gamma: float = 0.3
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.08
    flip: bool = False
    window: float = 0.0
    noise: float = 0.0

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Augmentation:
        return cls(
            float(settings["aug_gamma"]),
            float(settings["aug_rotate_deg"]),
            float(settings["aug_scale"]),
            float(settings["aug_translate"]),
            bool(settings.get("aug_flip", False)),
            float(settings.get("aug_window", 0.0)),
            float(settings.get("aug_noise", 0.0)),
        )


@dataclass(frozen=True)
class PixelDraw:
    """The draws after the affine: flip, contrast, brightness, noise sigma and the noise's seed."""

    flip: bool = False
    contrast: float = 1.0
    brightness: float = 0.0
    sigma: float = 0.0
    noise_seed: int = 0


def draw_pixels(aug: Augmentation, seed: int) -> PixelDraw:
    """Flip / window / noise draws, from their own generator (the affine's draws stay as they were)."""
    if not (aug.flip or aug.window > 0 or aug.noise > 0):
        return PixelDraw()
    rng = np.random.default_rng([int(seed), 1])
    flip, contrast, brightness, sigma = rng.random(4)
    return PixelDraw(
        bool(aug.flip and flip < 0.5),
        1.0 + aug.window * (2.0 * contrast - 1.0),
        0.5 * aug.window * (2.0 * brightness - 1.0),
        float(aug.noise * sigma),
        int(rng.integers(0, 2**62)),
    )


def apply_pixels(
    image: torch.Tensor, box_px: torch.Tensor, draw: PixelDraw
) -> tuple[torch.Tensor, torch.Tensor]:
    """One slice (c, h, w) and its box (4,) after the affine: flip (box mirrored), window, noise."""
    if draw.flip:
        width = image.shape[-1]
        image = image.flip(-1)
        box_px = torch.stack([width - box_px[2], box_px[1], width - box_px[0], box_px[3]])
    if draw.contrast != 1.0 or draw.brightness != 0.0:
        image = ((image - 0.5) * draw.contrast + 0.5 + draw.brightness).clamp(0.0, 1.0)
    if draw.sigma > 0:
        generator = torch.Generator().manual_seed(draw.noise_seed)
        image = image + draw.sigma * torch.randn(image.shape, generator=generator)
    return image, box_px


def build_transform(aug: Augmentation) -> Callable[..., Any]:
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomAffine(
                degrees=aug.rotate_deg,
                translate=(aug.translate, aug.translate),
                scale=(1.0 - aug.scale, 1.0 + aug.scale),
                fill=0.0,
            ),
            v2.ClampBoundingBoxes(),
        ]
    )


def augment(
    image: torch.Tensor, box_px: torch.Tensor, aug: Augmentation, transform: Callable[..., Any], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gamma contrast then an affine moving image and box together, all drawn from `seed`.

    The reference definition, one slice through torchvision v2; training runs `augment_batch`.
    """
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    size = image.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gamma = 1.0 + aug.gamma * (2.0 * torch.rand(()).item() - 1.0)
        image = F.adjust_gamma(image.clamp(0.0, 1.0), gamma)
        boxes = tv_tensors.BoundingBoxes(box_px[None], format="XYXY", canvas_size=(size, size))
        image, boxes = transform(tv_tensors.Image(image), boxes)
    return apply_pixels(image.as_subclass(torch.Tensor), boxes.as_subclass(torch.Tensor)[0],
                        draw_pixels(aug, seed))


@dataclass(frozen=True)
class AffineDraw:
    """One slice's augmentation: gamma exponent, then rotation (degrees), integer shift (pixels), scale;
    then flip / window / noise (`pixels`)."""

    gamma: float
    angle: float
    shift: tuple[int, int]
    scale: float
    pixels: PixelDraw = PixelDraw()


def draw_augmentation(aug: Augmentation, seed: int, size: int) -> AffineDraw:
    """The draws `augment` makes from `seed`, in the same order from the same generator.

    (A local generator: no global RNG state to fork and restore for every slice.)
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> float:
        return torch.empty(1).uniform_(low, high, generator=generator).item()

    gamma = 1.0 + aug.gamma * (2.0 * torch.rand((), generator=generator).item() - 1.0)
    angle = uniform(-float(aug.rotate_deg), float(aug.rotate_deg))  # v2.RandomAffine.make_params
    max_shift = float(aug.translate * size)
    shift = (int(round(uniform(-max_shift, max_shift))), int(round(uniform(-max_shift, max_shift))))
    scale = uniform(1.0 - aug.scale, 1.0 + aug.scale)
    return AffineDraw(gamma, angle, shift, scale, draw_pixels(aug, seed))


def affine_matrix(draw: AffineDraw, center: tuple[float, float], inverse: bool) -> list[float]:
    """Row-major 2x3 matrix of rotation + scale about `center`, then the shift (no shear).

    torchvision's `_get_inverse_affine_matrix` with shear 0, operation for operation, so the
    float32 matrices (and the pixels sampled through them) come out bit-identical.
    """
    rot = math.radians(draw.angle)
    a, b, c, d = math.cos(rot), -math.sin(rot), math.sin(rot), math.cos(rot)
    (cx, cy), (tx, ty), s = center, draw.shift, draw.scale
    if inverse:
        m = [d / s, -b / s, 0.0, -c / s, a / s, 0.0]
        m[2] += cx - m[0] * (cx + tx) - m[1] * (cy + ty)
        m[5] += cy - m[3] * (cx + tx) - m[4] * (cy + ty)
    else:
        m = [a * s, b * s, 0.0, c * s, d * s, 0.0]
        m[2] += cx + tx - m[0] * cx - m[1] * cy
        m[5] += cy + ty - m[3] * cx - m[4] * cy
    return m


def _sampling_grid(draws: list[AffineDraw], height: int, width: int) -> torch.Tensor:
    """(n, h, w, 2) grid_sample coordinates: output pixel centres through each inverse matrix."""
    theta = torch.tensor([affine_matrix(d, (0.0, 0.0), inverse=True) for d in draws], dtype=torch.float32)
    base = torch.empty(1, height, width, 3)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width))
    base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height)[:, None])
    base[..., 2].fill_(1.0)
    theta = theta.view(-1, 2, 3).transpose(1, 2).div_(torch.tensor([0.5 * width, 0.5 * height]))
    n = len(draws)
    return base.view(1, height * width, 3).expand(n, -1, -1).bmm(theta).view(n, height, width, 2)


def _enclosing_boxes(
    boxes_px: torch.Tensor, draws: list[AffineDraw], height: int, width: int
) -> torch.Tensor:
    """Each box's four corners through its forward matrix; their enclosing box, clipped to the image."""
    center = (width * 0.5, height * 0.5)
    forward = torch.tensor([affine_matrix(d, center, inverse=False) for d in draws], dtype=torch.float32)
    corners = boxes_px[:, [[0, 1], [2, 1], [2, 3], [0, 3]]]
    corners = torch.cat([corners, torch.ones(*corners.shape[:2], 1)], dim=-1)
    moved = torch.matmul(corners, forward.view(-1, 2, 3).transpose(1, 2))
    low, high = torch.aminmax(moved, dim=1)
    out = torch.cat([low, high], dim=1)
    out[:, 0::2].clamp_(0, width)
    out[:, 1::2].clamp_(0, height)
    return out


def augment_batch(
    images: torch.Tensor, boxes_px: torch.Tensor, draws: list[AffineDraw]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`augment` for a batch: (n, 1, S, S) in [0, 1] and (n, 4) pixel boxes, one draw per slice.

    Gamma per slice (the same kernel call as `augment`, so the same rounding), then one
    nearest-neighbour grid_sample for all slices (zeros outside = v2's fill 0).
    """
    if images.ndim != 4 or boxes_px.shape != (images.shape[0], 4) or len(draws) != images.shape[0]:
        raise ValueError(
            f"augment_batch: images {tuple(images.shape)}, boxes {tuple(boxes_px.shape)} and "
            f"{len(draws)} draws do not match (want (n, 1, S, S), (n, 4), n)"
        )
    height, width = images.shape[-2:]
    images = images.clamp(0.0, 1.0)
    images = torch.stack([image.pow(d.gamma) for image, d in zip(images, draws, strict=True)])
    grid = _sampling_grid(draws, height, width)
    images = torch.nn.functional.grid_sample(
        images, grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    boxes = _enclosing_boxes(boxes_px.float(), draws, height, width)
    if any(d.pixels != PixelDraw() for d in draws):
        pairs = [apply_pixels(i, b, d.pixels) for i, b, d in zip(images, boxes, draws, strict=True)]
        images, boxes = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    return images, boxes


def load_slice(path: Path, size: int) -> torch.Tensor:
    """(1, size, size) float32 in [0, 1] from a prepared float16 .npy."""
    from core.models.lung_localizer.net import resize_slices

    try:
        array = np.load(path).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise TrainingDataError(f"{path}: cannot read slice ({exc})") from None
    if not np.isfinite(array).all():
        raise TrainingDataError(f"{path}: slice holds NaN or infinite values")
    return resize_slices(torch.from_numpy(array)[None, None], size)[0]


class LungBoxDataset(Dataset):
    """(image (1, S, S) normalised, box (4,) in pixels of S) per prepared slice.

    Keys are `epoch * n + index` (see EpochShuffleSampler). A DataLoader fetches whole
    batches through `__getitems__`, which augments them together (`augment_batch`).
    """

    def __init__(
        self,
        items: list[BoxItem],
        size: int,
        mean: float,
        std: float,
        aug: Augmentation | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        self.items, self.size, self.mean, self.std = items, size, mean, std
        self.aug, self.seed = aug, seed
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None
        self._stack: torch.Tensor | None = None
        # (image, box, weight) triples only when some slice weighs less (pseudo-labels)
        self.weighted = any(item.weight != 1.0 for item in items)

    def __len__(self) -> int:
        return len(self.items)

    def preload(self) -> None:
        """Decode every slice now, into one tensor (when caching): worker processes forked
        afterwards share it instead of each decoding its own copy."""
        if self._cache is not None and self._stack is None and self.items:
            self._stack = torch.stack([self._image(i) for i in range(len(self.items))])
            self._cache.clear()

    def _image(self, index: int) -> torch.Tensor:
        if self._stack is not None:
            return self._stack[index]
        if self._cache is None:
            return load_slice(self.items[index].path, self.size)
        if index not in self._cache:
            self._cache[index] = load_slice(self.items[index].path, self.size)
        return self._cache[index]

    def _images(self, indices: list[int]) -> torch.Tensor:
        if self._stack is not None:
            return self._stack[torch.tensor(indices, dtype=torch.long)]
        return torch.stack([self._image(i) for i in indices])

    def __getitems__(self, keys: list[int]) -> list[tuple[torch.Tensor, ...]]:
        epochs, indices = zip(*(divmod(int(key), len(self.items)) for key in keys), strict=True)
        images = self._images(list(indices))
        boxes = torch.tensor([self.items[i].box for i in indices], dtype=torch.float32) * self.size
        if self.aug is not None:
            draws = [
                draw_augmentation(self.aug, item_seed(self.seed, e, i), self.size)
                for e, i in zip(epochs, indices, strict=True)
            ]
            images, boxes = augment_batch(images, boxes, draws)
        images = (images - self.mean) / self.std
        if self.weighted:
            weights = torch.tensor([self.items[i].weight for i in indices], dtype=torch.float32)
            return list(zip(images, boxes, weights, strict=True))
        return list(zip(images, boxes, strict=True))

    def __getitem__(self, key: int) -> tuple[torch.Tensor, ...]:
        return self.__getitems__([key])[0]


def cache_fits(items: list[BoxItem], size: int, budget_bytes: int = 2 * 1024**3) -> bool:
    """Keep decoded slices in memory when they fit a modest budget (per worker)."""
    return len(items) * size * size * 4 <= budget_bytes
