"""What Predict & review shows for a volume classifier (review kind "volume_classes"), as plain data.

The page (pages/_ui/review_volume_classes.py) stays thin: it calls these and draws the results.

- `confidence_text(prediction)`: "93 % confident abnormal".
- `network_view(predictor, volume)`: the volume as the network saw it (preprocessed) and the
  Grad-CAM on that grid, when the family's predictor offers `input_heatmap` (else None).
- `montage_rgb(...)` / `montage_png(...)`: a 4 x 10 montage of a (z, y, x) array in [0, 1], with the
  heatmap over it (jet, as in the Viewer).
- `learning_curves(run)`: loss and accuracy per epoch, training vs validation (metrics.jsonl).
- `evaluation_tables(run)`: evaluation.json as a summary, a confusion-matrix table and the per-volume
  rows (least confident first), for `st.dataframe`.
Imports no torch and no streamlit.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from core import runs
from core.render import OverlayLayer, render_montage

MONTAGE_ROWS, MONTAGE_COLS = 4, 10
UNIT_WINDOW = (0.5, 1.0)  # (centre, width): [0, 1] -> full grey range


def confidence_text(prediction: Any) -> str:
    """The family's own wording when it gave one, else "<p> % confident <label>"."""
    text = (prediction.extras or {}).get("confidence_text")
    if text:
        return str(text)
    if prediction.label is None or not prediction.probabilities:
        return ""
    p = float(prediction.probabilities.get(prediction.label, max(prediction.probabilities.values())))
    return f"{100 * p:.0f} % confident {prediction.label}"


def network_view(predictor: Any, volume: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(network input (z, y, x) in [0, 1], heatmap on that grid or None); None when the predictor
    cannot say what its network sees."""
    both = getattr(predictor, "input_heatmap", None)
    if callable(both):
        array, heat = both(volume)
        return np.asarray(array, np.float32), None if heat is None else np.asarray(heat, np.float32)
    only = getattr(predictor, "network_input", None)
    if callable(only):
        return np.asarray(only(volume), np.float32), None
    return None


def montage_rgb(array: np.ndarray, heatmap: np.ndarray | None = None, rows: int = MONTAGE_ROWS,
                cols: int = MONTAGE_COLS, opacity: float = 0.4, threshold: float = 0.1,
                spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), max_tile: int | None = 128,
                ) -> tuple[np.ndarray, list[int]]:
    """(uint8 RGB montage of `rows` x `cols` evenly spaced axial slices, the slice indices shown).

    `array` (z, y, x) in [0, 1] (a preprocessed volume); `heatmap` (same shape, [0, 1]) drawn in jet
    where above `threshold`.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"montage needs a (z, y, x) array, got shape {array.shape}")
    layers = []
    if heatmap is not None:
        heatmap = np.asarray(heatmap, dtype=np.float32)
        if heatmap.shape != array.shape:
            raise ValueError(f"heatmap shape {heatmap.shape} differs from the volume's {array.shape}")
        layers.append(OverlayLayer("heatmap", heatmap, opacity=opacity, threshold=threshold,
                                   label="Grad-CAM"))
    return render_montage(array, "axial", UNIT_WINDOW, rows, cols, layers, spacing=spacing, max_tile=max_tile)


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def montage_png(array: np.ndarray, heatmap: np.ndarray | None = None, **kwargs: Any) -> bytes:
    """`montage_rgb` encoded as PNG (for st.image and the download button)."""
    return png_bytes(montage_rgb(array, heatmap, **kwargs)[0])


def learning_curves(run: Path) -> dict[str, list]:
    """{"epoch": [...], "train_loss", "val_loss", "train_acc", "val_acc": [... or None]} per epoch."""
    rows = runs.metrics(Path(run))
    keys = ("train_loss", "val_loss", "train_acc", "val_acc")
    curves: dict[str, list] = {"epoch": [int(r.get("epoch", i)) + 1 for i, r in enumerate(rows)]}
    for key in keys:
        curves[key] = [r.get(key) if isinstance(r.get(key), int | float) else None for r in rows]
    return curves


def evaluation_tables(run: Path) -> dict[str, Any]:
    """evaluation.json for display: {"summary": {name: value}, "confusion": [row dicts],
    "cases": [row dicts, least confident first], "left_out": [messages], "split", "checkpoint"}; {}
    when the run has no evaluation."""
    found = runs.evaluation(Path(run))
    if not found:
        return {}
    confusion = []
    matrix = found.get("confusion_matrix") or {}
    classes = list(matrix.get("classes") or [])
    for name, row in zip(classes, matrix.get("matrix") or [], strict=False):
        counts = {f"predicted {c}": int(v) for c, v in zip(classes, row, strict=False)}
        confusion.append({"truth": name, **counts})
    cases = list(found.get("cases") or [])
    p_keys = [k for k in (cases[0] if cases else {}) if k.startswith("p(")]
    if p_keys:
        cases.sort(key=lambda row: abs(float(row.get(p_keys[0], 0.5)) - 0.5))
    return {"summary": dict(found.get("summary") or {}), "confusion": confusion, "cases": cases,
            "left_out": list(found.get("left_out") or []), "split": found.get("split", ""),
            "checkpoint": found.get("checkpoint", ""), "roc": found.get("roc") or {}}
