"""Predict & review, review kind "mask": the predicted mask over the image (filled and/or contour), the
reference label in a second colour, Dice / Hausdorff, a per-slice Dice strip beside the slider, the
run's held-out cases worst first (a click opens the case at its worst slice), and the mask's export.

UI only: every decision is in core.mask_review; volumes from core.io, predictions from core.infer /
core.predictions, pixels from core.render.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import mask_review as mr
from core import predictions, runs
from core.errors import SlicewiseError
from core.windowing import default_window
from pages._ui.loaders import list_volumes_cached
from pages._ui.overlays import legend_html
from pages._ui.review_common import pick_volume, stored_controls

PREDICTED = (255, 80, 80)
REFERENCE = (80, 200, 255)
STYLES = {"filled + contour": "both", "filled": "fill", "contour": "contour"}


def review(spec, checkpoint: Path, data_root: Path, runs_root: Path) -> None:
    evaluation_cases(checkpoint, data_root)
    volume = pick_volume(spec, data_root)
    if volume is None:
        return
    saved = stored_controls(checkpoint, volume, runs_root, button="Segment this volume")
    if saved is None:
        return
    try:
        prediction = predictions.load_prediction(saved)
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    if prediction.mask is None or prediction.mask.shape != volume.shape:
        st.warning("This prediction holds no mask of the volume's shape; predict again.")
        return
    truth, source = mr.reference_mask(volume)
    show_metrics(volume, prediction.mask, truth, source)
    show_slices(volume, prediction.mask, truth, source)
    export(volume, prediction.mask)


def evaluation_cases(checkpoint: Path, data_root: Path) -> None:
    """The run's held-out cases, worst Dice first; picking one selects its volume and worst slice."""
    run = checkpoint if Path(checkpoint).is_dir() else runs.run_of_checkpoint(Path(checkpoint))
    rows = mr.cases_worst_first(runs.evaluation(run)) if run is not None else []
    if not rows:
        return
    with st.expander(f"Held-out cases of this run, worst Dice first ({len(rows)})", expanded=True):
        summary = runs.evaluation(run).get("summary", {})
        if "dice_mean" in summary:
            st.caption(
                f"Dice {summary['dice_mean']:.3f} ± {summary.get('dice_sd', 0):.3f} · Hausdorff "
                f"{summary.get('hausdorff_mm_mean', float('nan')):.1f} mm · crop recall min "
                f"{summary.get('crop_recall_min', float('nan')):.3f}. Pick a row to open the case."
            )
        event = st.dataframe(
            mr.case_table(rows),
            hide_index=True,
            on_select="rerun",
            selection_mode="single-row",
            key="mask_cases",
            height=min(38 * len(rows) + 40, 300),
        )
        picked = event.selection.rows if event is not None else []
        if picked:
            open_case(rows[picked[0]], data_root)


def open_case(row: dict, data_root: Path) -> None:
    """Point the volume picker at the case's image and the slider at its worst slice (once per pick)."""
    if st.session_state.get("mask_case_opened") == row.get("case"):
        return
    st.session_state["mask_case_opened"] = row.get("case")
    entries = list_volumes_cached(str(data_root)) if data_root.is_dir() else []
    path = mr.find_case_volume(str(row.get("case", "")), [e.path for e in entries])
    if path is None:
        st.info(f"Case {row.get('case')} is not under the data root {data_root}.")
        return
    for entry in entries:
        if Path(entry.path) == path:
            st.session_state["predict_volume"] = f"{entry.name}  ·  {entry.kind}"
    st.session_state["mask_slice"] = int(row.get("worst_slice") or 0) + 1


def show_metrics(volume, mask, truth, source: str) -> None:
    cols = st.columns(5)
    cols[0].metric("Mask voxels", f"{int(mask.sum()):,}")
    if truth is None:
        cols[1].metric("Reference", "none")
        st.caption(f"No reference label: {source}. Metrics need a label file beside the image.")
        return
    scores = mr.case_metrics(mask, truth, volume.spacing)
    cols[1].metric("Dice", f"{scores['dice']:.3f}")
    cols[2].metric("IoU", f"{scores['iou']:.3f}")
    hd = scores["hausdorff_mm"]
    cols[3].metric("Hausdorff", "—" if hd is None else f"{hd:.1f} mm")
    hd95 = scores["hd95_mm"]
    cols[4].metric("HD95", "—" if hd95 is None else f"{hd95:.1f} mm")
    st.caption(f"Reference: {source} · precision {scores['precision']:.3f} · recall {scores['recall']:.3f}")


def show_slices(volume, mask, truth, source: str) -> None:
    from core.render import OverlayLayer, render_slice

    n = volume.shape[0]
    controls = st.columns([2, 1, 1])
    style = STYLES[controls[0].radio("Mask", list(STYLES), horizontal=True, key="mask_style")]
    opacity = controls[1].slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="mask_opacity")
    show_truth = controls[2].toggle(
        "Reference", value=truth is not None, disabled=truth is None, key="mask_truth"
    )
    dice = mr.slice_dice(mask, truth) if truth is not None else None
    if "mask_slice" not in st.session_state or st.session_state["mask_slice"] > n:
        st.session_state["mask_slice"] = mr.fullest_slice(mask, truth) + 1  # a case picked: its worst slice
    image_col, strip_col = st.columns([10, 1], gap="small")
    with image_col:
        z = st.slider("Slice", 1, n, key="mask_slice") - 1 if n > 1 else 0
        layers = [
            OverlayLayer("mask", mask, colour=PREDICTED, opacity=opacity, style=style, label="predicted")
        ]
        if truth is not None and show_truth:
            layers.append(
                OverlayLayer(
                    "mask",
                    truth,
                    colour=REFERENCE,
                    opacity=min(1.0, opacity + 0.3),
                    style="contour",
                    label="reference",
                )
            )
        image = render_slice(volume.array, "axial", z, default_window(volume.array, volume.modality), layers)
        here = "" if dice is None or dice[z] != dice[z] else f" · slice Dice {dice[z]:.3f}"
        st.image(image, caption=f"slice {z + 1} / {n}{here}", width=512)
        legend = [("predicted mask", PREDICTED, "mask")]
        if truth is not None:
            legend.append((f"reference ({source})", REFERENCE, "mask"))
        st.markdown(legend_html(legend), unsafe_allow_html=True)
    if dice is not None:
        with strip_col:
            st.image(mr.dice_strip(dice, z), caption="Dice", width=32)
            st.caption("per slice, slice 1 on top")


def export(volume, mask) -> None:
    formats = mr.export_formats(volume)
    cols = st.columns(len(formats))
    for col, (label, suffix) in zip(cols, formats.items(), strict=True):
        col.download_button(
            f"Export mask · {label}",
            mr.mask_file_bytes(volume, mask, suffix),
            file_name=mr.export_name(volume, suffix),
            mime="application/octet-stream",
            key=f"mask_export_{suffix}",
        )
    st.caption(
        "Written with the source volume's spacing, origin and direction: they open over the image in "
        "3D Slicer."
    )
