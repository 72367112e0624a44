"""Predict & review: a checkpoint and a volume -> predicted vs annotated lung boxes, IoU, export.

UI only: checkpoints from core.jobs, volumes from core.io, prediction from core.infer, the saved
predictions from core.predictions (they outlive the session and show in the Viewer), the review
table from core.review, pixels from core.render.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import jobs, predictions, settings
from core.errors import SlicewiseError
from core.windowing import default_window
from pages._ui.navigation import ensure_app_navigation
from pages._ui.overlays import ANNOTATED_BOXES, STYLES, TRUTH_BOXES, legend_html

ensure_app_navigation()

st.title("Predict & review")

runs_root = settings.runs_root()
data_root = Path(st.session_state.get("data_root") or settings.data_root())
PREDICTED = predictions.prediction_colour(0)
REFERENCE_STYLE = {"annotated": ANNOTATED_BOXES, "phantom ground truth": TRUTH_BOXES}


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


def _predict(checkpoint: Path, volume):
    """(family, task, boxes (z, 4) or None). Not cached here: the saved set is the cache, and
    core.infer caches the model by (path, mtime)."""
    from core.infer import load_predictor
    from core.models import get_spec

    predictor = load_predictor(checkpoint)
    task = get_spec(predictor.family).task
    if task != "box_regression":
        return predictor.family, task, None
    return predictor.family, task, predictor.predict_volume(volume)


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

    try:
        volume = _volume(str(volume_path), _mtime(volume_path))
        saved = prediction_controls(checkpoint, volume)
        if saved is None:
            return
        predicted = predictions.load_prediction_set(saved.path)
        reference, source = rv.reference_boxes(volume, settings.annotations_path())
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    queue = rv.review_queue(predicted, reference, volume.slice_ids)
    show_summary(queue, source, len(predicted), volume.array.shape[0])
    table_col, image_col = st.columns([2, 3], gap="medium")
    with table_col:
        z = pick_slice(queue, volume.array.shape[0])
        st.download_button("Export predicted boxes (CSV, lung_bbox.csv columns)", saved.path.read_bytes(),
                           file_name=f"predicted_boxes_{Path(volume.volume_id).name}.csv", mime="text/csv")
        st.caption(f"Saved as `{saved.path}`")
    with image_col:
        show_slice(volume, z, predicted, reference, source, saved.label)


def prediction_controls(checkpoint: Path, volume) -> predictions.PredictionSet | None:
    """The saved set to review: the stored one for this checkpoint and volume, or a new prediction
    when the user asks for one (first time, stale set, or "Predict again")."""
    saved = predictions.find_prediction_set(volume.volume_id, checkpoint, runs_root)
    if saved is None:
        clicked = st.button("Predict boxes for every slice", type="primary", key="predict_run")
    else:
        note, again = st.columns([5, 1], vertical_alignment="center")
        text = (f"Saved predictions of `{saved.label}`, {predictions.describe(saved)}. The Viewer shows "
                f"them as the overlay **{saved.overlay_name}**.")
        if saved.stale:
            note.warning(text, icon=":material/history:")
        else:
            note.info(text, icon=":material/save:")
        clicked = again.button("Predict again", type="primary" if saved.stale else "secondary",
                               key="predict_again")
    if not clicked:
        return saved
    with st.spinner("Predicting…"):
        family, task, boxes = _predict(checkpoint, volume)
    if boxes is None:
        st.info(f"{checkpoint.name} is a {family} model ({task}); this page reviews lung boxes. "
                "Use `python -m core predict` for its outputs.")
        return None
    path = predictions.save_predictions(volume, boxes, checkpoint, family=family, runs_root=runs_root)
    st.toast(f"Saved the predicted boxes of {predictions.read_sidecar(path).label}", icon=":material/save:")
    st.rerun()  # the next run finds the saved set and shows "Predict again"


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


def show_slice(volume, z: int, predicted: dict, reference: dict, source: str, label: str) -> None:
    from core.propose import box_iou
    from core.render import OverlayLayer, render_slice

    window = default_window(volume.array, volume.modality)
    ref_colour = STYLES[REFERENCE_STYLE.get(source, ANNOTATED_BOXES)][0]
    layers = [OverlayLayer("boxes", reference, colour=ref_colour, opacity=1.0, label=source),
              OverlayLayer("boxes", predicted, colour=PREDICTED, opacity=1.0, label="predicted")]
    image = render_slice(volume.array, "axial", z, window, layers)
    iou = f" · IoU {box_iou(predicted.get(z), reference[z]):.3f}" if z in reference else " · no reference box"
    st.image(image, caption=f"slice {z}{iou}", width=512)
    legend = [(f"predicted ({label})", PREDICTED, "boxes")]
    if reference:
        legend.append((f"{source} (reference)", ref_colour, "boxes"))
    st.markdown(legend_html(legend), unsafe_allow_html=True)


inputs = pick_inputs()
if inputs is not None:
    review(*inputs)
