"""Predict & review: a checkpoint and a volume -> predicted vs annotated lung boxes, IoU, export.

UI only: checkpoints from core.jobs, volumes from core.io, prediction from core.infer,
the review table from core.review, pixels from core.render.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import jobs, settings
from core.errors import SlicewiseError
from core.windowing import default_window
from pages._ui.navigation import ensure_app_navigation

ensure_app_navigation()

st.title("Predict & review")

runs_root = settings.runs_root()
data_root = Path(st.session_state.get("data_root") or settings.data_root())
PREDICTED, REFERENCE = (255, 64, 64), (64, 220, 64)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(ttl=30, max_entries=4, show_spinner=False)
def _volumes(root: str) -> list[str]:
    from core.io import find_volumes

    return [str(p) for p in find_volumes(Path(root))]


@st.cache_resource(max_entries=2, show_spinner="Loading the volume…")
def _volume(path: str, mtime: float):
    from core.io import load_volume

    return load_volume(Path(path))


@st.cache_data(max_entries=8, show_spinner=False)
def _predict(checkpoint: str, ckpt_mtime: float, volume_path: str, volume_mtime: float):
    """(family, task, boxes (z, 4) or None): the predictor is cached by core.infer itself."""
    from core.infer import load_predictor
    from core.models import get_spec

    predictor = load_predictor(Path(checkpoint))
    task = get_spec(predictor.family).task
    if task != "box_regression":
        return predictor.family, task, None
    return predictor.family, task, predictor.predict_volume(_volume(volume_path, volume_mtime))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def pick_inputs() -> tuple[Path, Path] | None:
    checkpoints = jobs.list_checkpoints(runs_root)
    volumes = [Path(p) for p in _volumes(str(data_root))] if data_root.is_dir() else []
    if not checkpoints:
        st.info(f"No checkpoint under {runs_root} yet: train a model on the Train page first.")
    if not volumes:
        st.info(f"No volumes found under the data root {data_root}.")
    if not checkpoints or not volumes:
        return None
    left, right = st.columns(2)
    checkpoint = left.selectbox("Checkpoint", checkpoints, format_func=lambda p: _relative(p, runs_root),
                                key="predict_checkpoint", help="finished jobs' best checkpoints first")
    volume = right.selectbox("Volume", volumes, format_func=lambda p: _relative(p, data_root),
                             key="predict_volume")
    return checkpoint, volume


def review(checkpoint: Path, volume_path: Path) -> None:
    from core import review as rv

    request = (str(checkpoint), str(volume_path))
    if st.button("Predict boxes for every slice", type="primary"):
        st.session_state["predict_request"] = request
    if st.session_state.get("predict_request") != request:
        return
    try:
        volume = _volume(str(volume_path), _mtime(volume_path))
        with st.spinner("Predicting…"):
            family, task, boxes = _predict(str(checkpoint), _mtime(checkpoint), str(volume_path),
                                           _mtime(volume_path))
        if boxes is None:
            st.info(f"{checkpoint.name} is a {family} model ({task}); this page reviews lung boxes. "
                    "Use `python -m core predict` for its outputs.")
            return
        predicted = rv.predicted_boxes(boxes)
        reference, source = rv.reference_boxes(volume, settings.annotations_path())
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    queue = rv.review_queue(predicted, reference, volume.slice_ids)
    show_summary(queue, source, len(predicted), volume.array.shape[0])
    z = pick_slice(queue, volume.array.shape[0])
    show_slice(volume, z, predicted, reference)
    annotator = f"model:{_relative(checkpoint, runs_root)}"
    st.download_button("Export predicted boxes (CSV, lung_bbox.csv columns)",
                       rv.boxes_csv(predicted, volume, annotator),
                       file_name=f"predicted_boxes_{Path(volume.volume_id).name}.csv", mime="text/csv")


def show_summary(queue, source: str, n_predicted: int, n_slices: int) -> None:
    from core.review import iou_summary

    summary = iou_summary(queue)
    cols = st.columns(5)
    cols[0].metric("Predicted slices", f"{n_predicted}/{n_slices}")
    cols[1].metric("Reference", source)
    if summary:
        cols[2].metric("Mean IoU", f"{summary['mean']:.3f}")
        cols[3].metric("Median IoU", f"{summary['median']:.3f}")
        cols[4].metric("IoU ≥ 0.5", f"{summary['iou>=0.5']:.0%}")
    else:
        st.caption("No annotated box for this volume: predictions only, no IoU.")


def pick_slice(queue, n_slices: int) -> int:
    """The slice to show: the row picked in the review queue, else the slider."""
    if queue:
        st.caption("Review queue, worst IoU first: pick a row to see that slice.")
        table = [{"slice": r.slice, "IoU": round(r.iou, 4), "slice id": r.slice_id} for r in queue]
        event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                             key="predict_queue", height=220)
        picked = event.selection.rows if event is not None else []
        if picked:
            return queue[picked[0]].slice
    default = queue[0].slice if queue else n_slices // 2
    return st.slider("Slice", 0, max(n_slices - 1, 0), default, key="predict_slice") if n_slices > 1 else 0


def show_slice(volume, z: int, predicted: dict, reference: dict) -> None:
    from core.propose import box_iou
    from core.render import OverlayLayer, render_slice

    window = default_window(volume.array, volume.modality)
    layers = [OverlayLayer("boxes", reference, colour=REFERENCE, opacity=1.0, label="reference"),
              OverlayLayer("boxes", predicted, colour=PREDICTED, opacity=1.0, label="predicted")]
    image = render_slice(volume.array, "axial", z, window, layers)
    iou = f", IoU {box_iou(predicted.get(z), reference[z]):.3f}" if z in reference else ""
    st.image(image, caption=f"slice {z}: red = predicted, green = reference{iou}", width=512)


inputs = pick_inputs()
if inputs is not None:
    review(*inputs)
