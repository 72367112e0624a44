"""Predict & review, review kind "volume_classes" (3D CT classifier, brain MRI grade): a volume or a
patient folder -> "N % confident ...", probabilities, where the model looked, and the run's results.

UI only: decisions in core.volume_class_review (confidence, montage, curves, evaluation tables) and
core.multi_sequence (patient folders, the four sequences, the slice-probability strip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from core import multi_sequence, predictions, runs
from core import volume_class_review as vcr
from core.errors import SlicewiseError
from core.windowing import PRESETS, apply_window
from pages._ui.review_common import pick_volume, stored_controls


def review(spec, checkpoint: Path, data_root: Path, runs_root: Path) -> None:
    run = runs.run_of_checkpoint(checkpoint)
    predict_tab, results_tab = st.tabs(["Predict a case", "Training results"])
    with predict_tab:
        if spec.input_kind == "patient_folder":
            _patient(spec, checkpoint, data_root, runs_root)
        else:
            _volume(spec, checkpoint, data_root, runs_root)
    with results_tab:
        _results(run)


def _stored_prediction(saved):
    try:
        return predictions.load_prediction(saved)
    except SlicewiseError as exc:
        st.error(str(exc))
        return None


def _headline(prediction) -> None:
    text = vcr.confidence_text(prediction)
    if text:
        st.subheader(text)
    probabilities = prediction.probabilities or {}
    if probabilities:
        cols = st.columns(len(probabilities))
        for col, (name, p) in zip(cols, probabilities.items(), strict=True):
            col.metric(f"p({name})", f"{p:.1%}")


def _volume(spec, checkpoint: Path, data_root: Path, runs_root: Path) -> None:
    volume = pick_volume(spec, data_root)
    if volume is None:
        return
    saved = stored_controls(checkpoint, volume, runs_root, button="Classify this volume")
    prediction = _stored_prediction(saved) if saved is not None else None
    if prediction is None:
        return
    _headline(prediction)
    low, high = PRESETS.get("ct_classifier", (-300.0, 1400.0))
    unit = apply_window(volume.array, low, high) if volume.modality == "CT" else _unit(volume.array)
    rgb, shown = vcr.montage_rgb(unit, prediction.heatmap, spacing=volume.spacing)
    st.image(rgb, caption=f"{len(shown)} axial slices ({shown[0] + 1}…{shown[-1] + 1}) with the Grad-CAM "
             "(jet) · the Viewer shows it slice by slice as a layer", width="stretch")
    name = f"{Path(volume.volume_id).name}_montage.png"
    st.download_button("Montage (PNG)", vcr.png_bytes(rgb), file_name=name, mime="image/png")
    if st.toggle("Show the volume as the network sees it (preprocessed, with its Grad-CAM)",
                 key="predict_network_view"):
        png = _network_montage(str(checkpoint), checkpoint.stat().st_mtime, volume.volume_id, volume)
        if png is None:
            st.caption("This family's predictor does not say what its network sees.")
        else:
            st.image(png, caption="The network's input (HU clipped, rotated, resized) with the Grad-CAM on "
                     "its own grid", width="stretch")


@st.cache_data(max_entries=4, show_spinner="Running the network…")
def _network_montage(checkpoint: str, mtime: float, volume_id: str, _volume) -> bytes | None:
    from core.infer import load_predictor

    view = vcr.network_view(load_predictor(checkpoint), _volume)
    return None if view is None else vcr.montage_png(view[0], view[1])


def _unit(array: np.ndarray) -> np.ndarray:
    low, high = np.percentile(array[array != 0] if np.any(array) else array, (1, 99))
    return np.clip((array - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)


@st.cache_data(ttl=60, max_entries=4, show_spinner=False)
def _patients(root: str) -> list[str]:
    return [str(p) for p in multi_sequence.find_patient_folders(Path(root))]


@st.cache_resource(max_entries=2, show_spinner="Loading the four sequences…")
def _sequences(folder: str):
    return multi_sequence.load_sequences(folder)


def _patient(spec, checkpoint: Path, data_root: Path, runs_root: Path) -> None:
    folders = _patients(str(data_root)) if data_root.is_dir() else []
    if not folders:
        st.info(f"No patient folder (`<id>_flair.nii.gz`, `_t1`, `_t1ce`, `_t2`) under {data_root}.")
        return
    folder = Path(st.selectbox("Patient", folders, format_func=lambda p: _relative(Path(p), data_root),
                               key="predict_patient"))
    try:
        sequences = _sequences(str(folder))
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    flair = sequences.reference
    saved = stored_controls(checkpoint, flair, runs_root, item=folder, button="Grade this patient")
    prediction = _stored_prediction(saved) if saved is not None else None
    if prediction is not None:
        _headline(prediction)
    depth = sequences.shape[0]
    start = multi_sequence.largest_tumour_slice(sequences.seg)
    first = (start if start is not None else depth // 2) + 1
    z = st.slider("Slice", 1, depth, first, key="predict_patient_z") - 1
    if prediction is not None and prediction.slice_probabilities is not None:
        classes = list(prediction.classes or [])
        column = classes.index(prediction.label) if prediction.label in classes else -1
        strip = multi_sequence.probability_strip_png(prediction.slice_probabilities[:, column], current=z)
        st.image(strip, caption=f"p({prediction.label}) per slice (blue 0 → red 1, grey: not used); "
                 f"slice {z + 1} framed", width="stretch")
    views = multi_sequence.sequence_views(sequences, z)
    cols = st.columns(4)
    for col, name in zip(cols, multi_sequence.SEQUENCES, strict=True):
        col.image(_with_mask(views.images[name], views.mask), caption=name.upper(), width="stretch")
    st.caption("Each sequence with its own window; the tumour mask (when the folder has one) as a red "
               "outline. The Viewer shows the stored Grad-CAM over the FLAIR as a layer.")


def _with_mask(grey: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    from core.render import OverlayLayer, render_slice

    if mask is None or not np.any(mask):
        return grey
    layer = OverlayLayer("mask", mask[None], colour=(255, 60, 60), opacity=0.9, style="contour")
    return render_slice(grey[None].astype(np.float32), "axial", 0, (127.5, 255.0), [layer])


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _results(run: Path | None) -> None:
    if run is None:
        st.info("This checkpoint is not inside a run folder: no training results to show.")
        return
    curves = vcr.learning_curves(run)
    if curves["epoch"]:
        import pandas as pd

        left, right = st.columns(2)
        frame = pd.DataFrame(curves).set_index("epoch")
        left.caption("Loss per epoch (training vs validation)")
        left.line_chart(frame[["train_loss", "val_loss"]].rename(
            columns={"train_loss": "training", "val_loss": "validation"}), x_label="epoch", y_label="loss")
        right.caption("Accuracy per epoch (training vs validation)")
        right.line_chart(frame[["train_acc", "val_acc"]].rename(
            columns={"train_acc": "training", "val_acc": "validation"}), x_label="epoch", y_label="accuracy")
    tables = vcr.evaluation_tables(run)
    if not tables:
        st.caption("No evaluation.json in this run yet (it is written when training ends).")
        return
    if tables["summary"]:
        cols = st.columns(min(4, len(tables["summary"])))
        for i, (name, value) in enumerate(tables["summary"].items()):
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            cols[i % len(cols)].metric(name.replace("_", " "), text)
    if tables["confusion"]:
        st.caption("Confusion matrix (rows: truth)")
        st.dataframe(tables["confusion"], hide_index=True)
    if tables["cases"]:
        st.caption("Every held-out case, least confident first")
        st.dataframe(tables["cases"], hide_index=True, width="stretch")
    for message in tables["left_out"]:
        st.caption(f"Left out: {message}")
