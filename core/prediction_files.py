"""The files `python -m core predict` writes for any family's Predictions (SPEC 9)."""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.annotations import COLUMNS
from core.predictions import Prediction

BOXES_FILE = "lung_bbox_predicted.csv"
PROBABILITIES_FILE = "probabilities.csv"


def file_stem(volume: Any) -> str:
    """A file-name-safe stem for a volume's outputs."""
    name = Path(str(volume.volume_id)).name.replace(".nii.gz", "").replace(".nii", "").replace(".nrrd", "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "volume"


class PredictionWriter:
    """Collects Predictions and writes one CSV of boxes, one of probabilities, and per-volume arrays.

    CSV rows are written as they come (a crash keeps what was predicted before it), into
    temporary files renamed into place by `close()`.
    """

    def __init__(self, out: Path, model: str) -> None:
        self.out, self.model = Path(out), model
        self.now = datetime.now(UTC).isoformat(timespec="seconds")
        self._files: dict[str, tuple[Path, Any, Any]] = {}
        self._classes: tuple[str, ...] | None = None

    def _writer(self, name: str, header: list[str]):
        if name not in self._files:
            final = self.out / name
            tmp = final.with_name(f".{name}.tmp")
            handle = tmp.open("w", newline="", encoding="utf-8")
            writer = csv.writer(handle)
            writer.writerow(header)
            self._files[name] = (final, handle, writer)
        return self._files[name][2]

    def add(self, volume: Any, prediction: Prediction) -> list[Path]:
        """Write what `prediction` holds for `volume`; returns the files it went to."""
        written: list[Path] = []
        if prediction.boxes is not None:
            written.append(self._boxes(volume, prediction))
        if prediction.probabilities is not None:
            written.append(self._probabilities(volume, prediction))
        if prediction.slice_probabilities is not None:
            written.append(self._slice_probabilities(volume, prediction))
        for name in ("mask", "heatmap"):
            array = getattr(prediction, name)
            if array is not None:
                written.append(write_array_like(volume, array, self.out / f"{file_stem(volume)}_{name}.nrrd"))
        return written

    def _boxes(self, volume: Any, prediction: Prediction) -> Path:
        from core.boxes import ordered_box

        writer = self._writer(BOXES_FILE, list(COLUMNS))
        for z, row in enumerate(prediction.boxes):
            box = ordered_box(row)
            if box is not None:
                writer.writerow([volume.slice_ids[z], *(f"{v:.6f}" for v in box), volume.volume_id, z,
                                 self.model, self.now])
        return self.out / BOXES_FILE

    def _probabilities(self, volume: Any, prediction: Prediction) -> Path:
        classes = list(prediction.probabilities)
        writer = self._writer(PROBABILITIES_FILE, ["Volume", "Label", *[f"p_{c}" for c in classes], "Model"])
        writer.writerow([volume.volume_id, prediction.label,
                         *(f"{prediction.probabilities[c]:.6f}" for c in classes), self.model])
        return self.out / PROBABILITIES_FILE

    def _slice_probabilities(self, volume: Any, prediction: Prediction) -> Path:
        path = self.out / f"{file_stem(volume)}_slice_probabilities.csv"
        array = prediction.slice_probabilities
        classes = list(prediction.classes or (f"class{i}" for i in range(array.shape[1])))
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Slice", *[f"p_{c}" for c in classes]])
            for z, row in enumerate(array):
                writer.writerow([z, *(f"{v:.6f}" for v in row)])
        return path

    def close(self) -> list[Path]:
        """Move the CSVs into place; returns them (boxes first, then probabilities)."""
        done = []
        for final, handle, _ in self._files.values():
            handle.close()
            Path(handle.name).replace(final)
            done.append(final)
        self._files.clear()
        return done


def write_array_like(volume: Any, array: np.ndarray, path: Path) -> Path:
    """An array with the volume's shape written as NRRD with the volume's spacing, origin and direction."""
    from core.io.writers import write_like

    return write_like(volume, np.asarray(array), path)
