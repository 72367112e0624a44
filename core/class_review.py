"""Review of image-classifier predictions (review kind "image_classes"): gallery rows, sorting, heatmap
overlays, exported figures and tables, and the run's test-split evaluation. No Streamlit, no family code.

Rows are plain dicts: path, name, true (class from the parent folder name, or None), predicted,
probability (of the predicted class), correct (None without a true class), and p_<class> columns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
SORT_KEYS = ("confidence", "error", "class", "name")
COLORMAPS = ("jet", "inferno")
MAX_IMAGES = 2000


def list_images(source: Path, limit: int = MAX_IMAGES) -> list[Path]:
    """A file itself, or the PNG/JPEG/DICOM files under a folder (sorted, at most `limit`)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        return []
    found = sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    return found[:limit]


def image_folders(root: Path, limit: int = 200) -> list[Path]:
    """Folders under `root` holding PNG/JPEG images directly or in class folders (e.g. `xray/test`), sorted.

    DICOM files do not make a folder an image folder here: under a data root they are mostly CT/MR
    series (a single X-ray DICOM can still be picked as a file).
    """
    root = Path(root)
    out = set()
    for path in root.rglob("*"):
        raster = path.suffix.lower() in (".png", ".jpg", ".jpeg") and not path.name.startswith(".")
        if raster and path.is_file():
            out.add(path.parent)
            if path.parent != root:
                out.add(path.parent.parent)
        if len(out) > 4 * limit:
            break
    return sorted(p for p in out if p == root or root in p.parents)[:limit]


def true_class(path: Path, classes: Sequence[str]) -> str | None:
    """The class named by the image's parent folder (`.../PNEUMONIA/x.png`), else None."""
    parent = Path(path).parent.name
    return parent if parent in classes else None


def make_row(
    path: Path, label: str, probabilities: dict[str, float], classes: Sequence[str], root: Path | None = None
) -> dict[str, Any]:
    truth = true_class(path, classes)
    name = (
        str(Path(path).relative_to(root))
        if root is not None and Path(root) in Path(path).parents
        else Path(path).name
    )
    row: dict[str, Any] = {
        "path": str(path),
        "name": name,
        "true": truth,
        "predicted": label,
        "probability": float(probabilities.get(label, float("nan"))),
        "correct": None if truth is None else truth == label,
    }
    row.update({f"p_{c}": float(probabilities.get(c, float("nan"))) for c in classes})
    return row


def rows_from_evaluation(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The gallery rows of a run's evaluation.json `cases` (every test image)."""
    rows = []
    for case in evaluation.get("cases") or []:
        if not isinstance(case, dict) or "path" not in case:
            continue
        rows.append(
            {
                "path": case["path"],
                "name": case.get("file", Path(case["path"]).name),
                "true": case.get("true"),
                "predicted": case.get("predicted"),
                "probability": float(case.get("probability", float("nan"))),
                "correct": case.get("correct"),
                **{k: v for k, v in case.items() if k.startswith("p_")},
            }
        )
    return rows


def sort_rows(rows: Iterable[dict[str, Any]], by: str = "confidence") -> list[dict[str, Any]]:
    """confidence: most confident first; error: wrong predictions first (the most confident mistakes
    on top), then those without a true class, then correct ones from the least confident; class:
    grouped by predicted class, most confident first; name: by file name."""
    rows = list(rows)
    p = lambda r: r["probability"] if np.isfinite(r["probability"]) else -1.0  # noqa: E731
    if by == "confidence":
        return sorted(rows, key=lambda r: (-p(r), r["name"]))
    if by == "error":
        rank = {False: 0, None: 1, True: 2}
        return sorted(
            rows, key=lambda r: (rank[r["correct"]], -p(r) if r["correct"] is not True else p(r), r["name"])
        )
    if by == "class":
        return sorted(rows, key=lambda r: (str(r["predicted"]), -p(r), r["name"]))
    if by == "name":
        return sorted(rows, key=lambda r: r["name"])
    raise ValueError(f"unknown sort {by!r}; use one of {SORT_KEYS}")


def caption(row: dict[str, Any]) -> str:
    """`PNEUMONIA 97% · true NORMAL ✗` (true class and mark only when known)."""
    text = f"{row['predicted']} {row['probability']:.0%}"
    if row.get("true") is not None:
        text += f" · true {row['true']} {'✓' if row['correct'] else '✗'}"
    return text


# ---------------------------------------------------------------- pixels


def display_grey(image: np.ndarray) -> np.ndarray:
    """A 2D image (or (1, y, x)) in its own units -> uint8 by its 0.5-99.5 percentiles."""
    arr = np.asarray(image, dtype=np.float32)
    arr = arr[0] if arr.ndim == 3 else arr
    step = max(1, int(np.ceil(np.sqrt(arr.size / 1e6))))
    lo, hi = np.percentile(arr[::step, ::step], (0.5, 99.5)) if arr.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    return (np.clip((arr - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """[0, 1] -> uint8 RGB: jet (SPEC 5B) or inferno (perceptually uniform)."""
    if name == "jet":
        from core.render import jet

        return jet(values)
    if name == "inferno":
        from matplotlib import colormaps

        lut = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
        return lut[(np.clip(np.asarray(values, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)]
    raise ValueError(f"unknown colour map {name!r}; use one of {COLORMAPS}")


def top_region(heatmap: np.ndarray, percent: float) -> np.ndarray:
    """Bool mask of the hottest `percent` % of the pixels."""
    heat = np.asarray(heatmap, np.float32)
    if percent <= 0 or heat.size == 0:
        return np.zeros(heat.shape, bool)
    return heat >= np.percentile(heat, 100 - min(percent, 100))


def overlay(
    image: np.ndarray,
    heatmap: np.ndarray | None,
    opacity: float = 0.5,
    cmap: str = "jet",
    contour_percent: float = 0.0,
    threshold: float = 0.0,
) -> np.ndarray:
    """The image (grey, own units) with the heatmap blended over it -> uint8 RGB (y, x, 3).

    `opacity` scales the blend (SPEC 5B: jet at 0.5); heat at or below `threshold` stays clear;
    `contour_percent` > 0 outlines the top-k % region in white.
    """
    grey = display_grey(image)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if heatmap is not None:
        heat = np.asarray(heatmap, np.float32)
        heat = heat[0] if heat.ndim == 3 else heat
        if heat.shape != grey.shape:
            raise ValueError(f"heatmap shape {heat.shape} differs from the image's {grey.shape}")
        alpha = float(np.clip(opacity, 0, 1)) * (heat > threshold)
        rgb = rgb * (1 - alpha[..., None]) + colormap(heat, cmap).astype(np.float32) * alpha[..., None]
        if contour_percent > 0:
            from core.render import contour

            rgb[contour(top_region(heat, contour_percent), max(1, grey.shape[0] // 256))] = 255
    return (rgb + 0.5).clip(0, 255).astype(np.uint8)


def thumbnail(rgb: np.ndarray, size: int = 192) -> np.ndarray:
    """Shrink an RGB image so that its longer side is at most `size` pixels."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb))
    img.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img)


def figure_png(
    image: np.ndarray,
    heatmap: np.ndarray | None,
    text: str,
    opacity: float = 0.5,
    cmap: str = "jet",
    max_side: int = 1024,
) -> bytes:
    """A figure for a report: the image and the image with its heatmap side by side, caption below."""
    from PIL import Image, ImageDraw

    left = np.repeat(display_grey(image)[..., None], 3, axis=2)
    right = overlay(image, heatmap, opacity, cmap)
    pair = np.concatenate([left, np.full((left.shape[0], 8, 3), 255, np.uint8), right], axis=1)
    img = Image.fromarray(pair)
    img.thumbnail((max_side * 2, max_side), Image.Resampling.BILINEAR)
    band = 28
    canvas = Image.new("RGB", (max(img.width, 320), img.height + band), "white")
    canvas.paste(img, (0, 0))
    ImageDraw.Draw(canvas).text((6, img.height + 8), text, fill=(0, 0, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def rows_csv(rows: Iterable[dict[str, Any]]) -> str:
    """The gallery table as CSV (path, name, true, predicted, probability, correct, p_<class>...)."""
    rows = list(rows)
    base = ["path", "name", "true", "predicted", "probability", "correct"]
    extra = sorted({k for r in rows for k in r if k.startswith("p_")})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=base + extra, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in base + extra})
    return out.getvalue()


def summary_of(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Accuracy over the rows that have a true class (and how many have one)."""
    known = [r for r in rows if r.get("correct") is not None]
    return {
        "images": len(rows),
        "with_truth": len(known),
        "accuracy": float(np.mean([r["correct"] for r in known])) if known else float("nan"),
    }


def evaluation_numbers(evaluation: dict[str, Any]) -> dict[str, Any]:
    """What Predict & review shows of a run's evaluation.json: summary metrics, the confusion matrix as
    rows {true: ..., predicted <class>: n}, and the ROC points ({} parts when absent)."""
    cm = evaluation.get("confusion_matrix") or {}
    classes, matrix = cm.get("classes") or [], cm.get("matrix") or []
    table = [
        {"true \\ predicted": c, **{p: int(n) for p, n in zip(classes, row, strict=False)}}
        for c, row in zip(classes, matrix, strict=False)
    ]
    roc = evaluation.get("roc") or {}
    points = [
        {"false positive rate": f, "true positive rate": t}
        for f, t in zip(roc.get("fpr") or [], roc.get("tpr") or [], strict=False)
    ]
    return {
        "summary": dict(evaluation.get("summary") or {}),
        "split": evaluation.get("split", "test"),
        "confusion": table,
        "roc": points,
        "auc": roc.get("auc"),
    }


def predict_images(
    predictor: Any,
    paths: Sequence[Path],
    checkpoint: Path,
    runs_root: Path | None,
    cam_method: str | None = None,
    batch_size: int = 8,
    root: Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Predict images in batches and store each prediction (core.predictions, as core.infer.predict_and_store
    does: the Viewer then shows the heatmap as a layer).

    Returns (rows, {path: (volume, prediction)}, errors naming the files that could not be read).
    Predictors without `predict_many` are called one image at a time through predict_and_store.
    """
    from core.errors import SlicewiseError
    from core.infer import predict_and_store
    from core.io import load_volume
    from core.predictions import save_prediction

    classes = list(getattr(predictor, "classes", []) or [])
    rows, results, errors = [], {}, []
    volumes = []
    for path in paths:
        try:
            volumes.append((Path(path), load_volume(path)))
        except SlicewiseError as exc:
            errors.append(str(exc))
        except Exception as exc:  # a reader failure that escaped core.io (e.g. PIL's DecompressionBombError)
            errors.append(f"{path}: {type(exc).__name__}: {exc}")
    many = getattr(predictor, "predict_many", None)
    for start in range(0, len(volumes), max(1, batch_size)):
        chunk = volumes[start : start + batch_size]
        try:
            if many is not None:
                kwargs = {"cam_method": cam_method} if cam_method else {}
                preds = many([v for _, v in chunk], batch_size=batch_size, **kwargs)
                for (_, volume), prediction in zip(chunk, preds, strict=True):
                    if runs_root is not None:
                        save_prediction(volume, prediction, [Path(checkpoint)], runs_root=runs_root)
            else:
                preds = [predict_and_store(predictor, v, checkpoint, runs_root)[1] for _, v in chunk]
        except SlicewiseError as exc:
            errors.append(str(exc))
            continue
        for (path, volume), prediction in zip(chunk, preds, strict=True):
            names = classes or list(prediction.probabilities or {})
            rows.append(make_row(path, prediction.label, prediction.probabilities or {}, names, root))
            results[str(path)] = (volume, prediction)
    return rows, results, errors
