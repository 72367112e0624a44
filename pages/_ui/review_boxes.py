"""Predict & review, review kind "boxes": predicted vs annotated lung boxes per slice, IoU, export.

UI only: volumes from core.io, prediction from core.infer, the saved predictions from
core.predictions (they outlive the session and show in the Viewer), the review table from
core.box_review, pixels from core.render.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import predictions, settings
from core.errors import SlicewiseError
from core.windowing import default_window
from pages._ui.overlays import ANNOTATED_BOXES, STYLES, TRUTH_BOXES, legend_html
from pages._ui.review_common import pick_volume, predict_stored

PREDICTED = predictions.prediction_colour(0)
REFERENCE_STYLE = {"annotated": ANNOTATED_BOXES, "phantom ground truth": TRUTH_BOXES}


def review(spec, checkpoint: Path, data_root: Path, runs_root: Path) -> None:
    """The page body for a box family: pick a volume, predict (stored), review against the reference."""
    from core import box_review as rv

    volume = pick_volume(spec, data_root)
    if volume is None:
        return
    try:
        saved = prediction_controls(checkpoint, volume, runs_root)
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


def prediction_controls(checkpoint: Path, volume, runs_root: Path) -> predictions.PredictionSet | None:
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
    predict_stored(checkpoint, volume, runs_root)
    return None


def show_summary(queue, source: str, n_predicted: int, n_slices: int) -> None:
    from core.box_review import iou_summary

    summary = iou_summary(queue)
    cols = st.columns(5)
    cols[0].metric("Predicted slices", f"{n_predicted}/{n_slices}")
    short = {"phantom ground truth": "truth"}.get(source, source)  # a metric's value is cut at ~10 letters
    cols[1].metric("Reference", short, help=f"IoU against the {source} boxes")
    if summary:
        cols[2].metric("Mean IoU", f"{summary['mean']:.3f}")
        cols[3].metric("Median IoU", f"{summary['median']:.3f}")
        cols[4].metric("IoU ≥ 0.5", f"{summary['iou>=0.5']:.0%}")
    else:
        st.caption("No annotated box for this volume: predictions only, no IoU.")


SLICE_HELP = ("Slices count from 1 here, as in the Viewer and Annotate; the exported CSV's `Slice` column is "
              "the 0-based index (this number minus 1), as in lung_bbox.csv.")


def pick_slice(queue, n_slices: int) -> int:
    """The slice to show (0-based index): the row picked in the review queue, else the slider (from 1)."""
    if queue:
        st.caption("Review queue, worst IoU first: pick a row to see that slice.", help=SLICE_HELP)
        table = [{"slice": r.slice + 1, "IoU": round(r.iou, 4), "slice id": r.slice_id} for r in queue]
        event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                             key="predict_queue", height=220,
                             column_config={"slice": st.column_config.NumberColumn("slice", help=SLICE_HELP)})
        picked = event.selection.rows if event is not None else []
        if picked:
            return queue[picked[0]].slice
    default = queue[0].slice if queue else n_slices // 2
    if n_slices <= 1:
        return 0
    return st.slider("Slice", 1, n_slices, default + 1, key="predict_slice", help=SLICE_HELP) - 1


def show_slice(volume, z: int, predicted: dict, reference: dict, source: str, label: str) -> None:
    from core.propose import box_iou
    from core.render import OverlayLayer, render_slice

    window = default_window(volume.array, volume.modality)
    ref_colour = STYLES[REFERENCE_STYLE.get(source, ANNOTATED_BOXES)][0]
    layers = [OverlayLayer("boxes", reference, colour=ref_colour, opacity=1.0, label=source),
              OverlayLayer("boxes", predicted, colour=PREDICTED, opacity=1.0, label="predicted")]
    image = render_slice(volume.array, "axial", z, window, layers)
    iou = f" · IoU {box_iou(predicted.get(z), reference[z]):.3f}" if z in reference else " · no reference box"
    st.image(image, caption=f"slice {z + 1} of {volume.array.shape[0]}{iou}", width=512)
    legend = [(f"predicted ({label})", PREDICTED, "boxes")]
    if reference:
        legend.append((f"{source} (reference)", ref_colour, "boxes"))
    st.markdown(legend_html(legend), unsafe_allow_html=True)
