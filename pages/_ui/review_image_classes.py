"""Predict & review, review kind "image_classes" (X-ray classifier): the run's test numbers and a gallery.

The gallery shows the run's test images (or any folder or file under the data root) with the
predicted class, probability, true class (from the folder name) and the heatmap over the original
image; sorted by confidence, by error or by class. Selecting an image shows it large with its
heatmap (opacity, colour map, top-k % contour, CAM vs Grad-CAM), exports a figure PNG, and opens it
in the Viewer, where the stored prediction's heatmap is a layer. Every decision lives in
core.class_review; this module only draws.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import class_review, runs
from core.errors import SlicewiseError

PAGE = 24
METHODS = ("cam", "gradcam", "gradcam++")
METHOD_LABELS = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
TEST_SOURCE = "Test images of this run"


def review(spec, checkpoint: Path, data_root: Path, runs_root: Path) -> None:
    run = runs.run_of_checkpoint(Path(checkpoint))
    evaluation = runs.evaluation(run) if run is not None else {}
    if evaluation:
        _evaluation(evaluation)
    paths, root = _pick_images(evaluation, data_root)
    if not paths:
        return
    c1, c2, c3, c4, c5 = st.columns([1.2, 1.2, 1, 1, 1])
    method = c1.selectbox(
        "Heatmap",
        METHODS,
        format_func=METHOD_LABELS.get,
        key="xr_method",
        help="CAM: layer4 weighted by the head's row of the predicted class (SPEC 5B); "
        "Grad-CAM / Grad-CAM++ weight it by the class score's gradients",
    )
    order = c2.selectbox("Sort by", class_review.SORT_KEYS, key="xr_sort")
    cmap = c3.selectbox("Colour map", class_review.COLORMAPS, key="xr_cmap")
    opacity = c4.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="xr_opacity")
    contour = c5.slider("Top-k % contour", 0, 50, 0, 5, key="xr_contour", help="0 = no contour")
    rows, results = _predicted(checkpoint, paths, method, runs_root, root)
    if not rows:
        return
    rows = class_review.sort_rows(rows, order)
    pages = max(1, -(-len(rows) // PAGE))
    page = (
        st.number_input(f"Page (of {pages}, {PAGE} images each)", 1, pages, 1, key="xr_page")
        if pages > 1
        else 1
    )
    shown = rows[(page - 1) * PAGE : page * PAGE]
    _gallery(shown, results, opacity, cmap)
    _selected(rows, results, opacity, cmap, contour, method, checkpoint, runs_root)
    st.download_button(
        "Download the table (CSV)",
        class_review.rows_csv(rows),
        "xray_predictions.csv",
        "text/csv",
        key="xr_csv",
    )


def _evaluation(evaluation: dict) -> None:
    numbers = class_review.evaluation_numbers(evaluation)
    s = numbers["summary"]
    st.subheader(f"Test split ({numbers['split']}, {s.get('images', '?')} images)")
    cols = st.columns(4)
    for col, (key, name) in zip(
        cols,
        (
            ("accuracy", "Accuracy"),
            ("auc", "ROC AUC"),
            ("sensitivity", "Sensitivity"),
            ("specificity", "Specificity"),
        ),
        strict=True,
    ):
        value = s.get(key)
        col.metric(name, "—" if value is None else f"{value:.3f}")
    left, right = st.columns(2)
    if numbers["confusion"]:
        left.caption("Confusion matrix (rows: true class)")
        left.dataframe(pd.DataFrame(numbers["confusion"]).set_index("true \\ predicted"))
    if numbers["roc"]:
        right.caption(f"ROC curve (AUC {numbers['auc']:.3f})" if numbers["auc"] is not None else "ROC curve")
        right.line_chart(
            pd.DataFrame(numbers["roc"]), x="false positive rate", y="true positive rate", height=220
        )


@st.cache_data(ttl=60, max_entries=4, show_spinner=False)
def _image_folders(root: str) -> list[str]:
    return [str(p) for p in class_review.image_folders(Path(root))]


def _pick_images(evaluation: dict, data_root: Path) -> tuple[list[Path], Path | None]:
    tests = [
        Path(r["path"]) for r in class_review.rows_from_evaluation(evaluation) if Path(r["path"]).is_file()
    ]
    folders = [Path(p) for p in _image_folders(str(data_root))] if data_root.is_dir() else []
    options = ([TEST_SOURCE] if tests else []) + [str(p.relative_to(data_root)) or "." for p in folders]
    if not options:
        st.info(f"No images under the data root {data_root}, and the run lists no test images.")
        return [], None
    choice = st.selectbox(
        "Images",
        options,
        key="xr_source",
        help="the run's test split, or a folder of images under the data root",
    )
    if choice == TEST_SOURCE:
        root = Path(evaluation["cases"][0]["path"]).parents[2] if evaluation.get("cases") else None
        return tests, root
    folder = data_root / choice
    one = st.text_input("…or one file (path under that folder)", "", key="xr_file")
    if one:
        path = folder / one
        if not path.is_file() or data_root.resolve() not in path.resolve().parents:
            st.error(f"{path}: not a file under the data root")
            return [], None
        return [path], folder
    return class_review.list_images(folder), folder


def _predicted(checkpoint: Path, paths: list[Path], method: str, runs_root: Path, root: Path | None):
    """Predictions of the images, computed once per (checkpoint, images, method) in this session."""
    from core.infer import load_predictor

    key = ("xr", str(checkpoint), Path(checkpoint).stat().st_mtime_ns, tuple(map(str, paths)), method)
    cache = st.session_state.setdefault("xr_cache", {})
    if key not in cache:
        try:
            predictor = load_predictor(checkpoint)
            with st.spinner(f"Predicting {len(paths)} images ({METHOD_LABELS[method]})…"):
                cache.clear()
                cache[key] = class_review.predict_images(
                    predictor, paths, checkpoint, runs_root, method, root=root
                )
        except SlicewiseError as exc:
            st.error(str(exc))
            return [], {}
    rows, results, errors = cache[key]
    for message in errors[:5]:
        st.warning(message)
    if len(errors) > 5:
        st.warning(f"…and {len(errors) - 5} more files could not be read")
    summary = class_review.summary_of(rows)
    if summary["with_truth"]:
        st.caption(
            f"{summary['images']} images predicted; accuracy {summary['accuracy']:.1%} on the "
            f"{summary['with_truth']} with a class folder. Stored: the Viewer shows each heatmap."
        )
    return rows, results


def _gallery(rows: list[dict], results: dict, opacity: float, cmap: str) -> None:
    cols = st.columns(6)
    for i, row in enumerate(rows):
        volume, prediction = results[row["path"]]
        with cols[i % 6]:
            image = class_review.overlay(volume.array, prediction.heatmap, opacity, cmap)
            st.image(
                class_review.thumbnail(image, 192),
                caption=class_review.caption(row),
                width="stretch",
            )
            if st.button(
                "Show large",
                key=f"xr_open_{row['path']}",
                width="stretch",
                type="primary" if st.session_state.get("xr_selected") == row["path"] else "secondary",
            ):
                st.session_state["xr_selected"] = row["path"]
                st.rerun()


def _selected(rows, results, opacity, cmap, contour, method, checkpoint, runs_root) -> None:
    path = st.session_state.get("xr_selected")
    row = next((r for r in rows if r["path"] == path), None)
    if row is None:
        st.caption('Press "Show large" under an image to see it large with its heatmap.')
        return
    volume, prediction = results[row["path"]]
    st.subheader(row["name"])
    text = f"{class_review.caption(row)} · {METHOD_LABELS[method]}"
    image = class_review.overlay(volume.array, prediction.heatmap, opacity, cmap, float(contour))
    st.image(image, caption=text, width=min(768, max(256, volume.shape[2])))
    probs = ", ".join(f"{c}: {p:.1%}" for c, p in (prediction.probabilities or {}).items())
    st.caption(f"{probs} · {volume.shape[2]} x {volume.shape[1]} px")
    left, right = st.columns(2)
    left.download_button(
        "Download the figure (PNG)",
        class_review.figure_png(volume.array, prediction.heatmap, text, opacity, cmap),
        f"{Path(row['path']).stem}_{method}.png",
        "image/png",
        key="xr_figure",
    )
    if right.button("Open in the Viewer", key="xr_viewer"):
        _open_in_viewer(Path(row["path"]))


def _open_in_viewer(path: Path) -> None:
    from pages._ui.loaders import data_root, list_volumes_cached

    try:
        entries = list_volumes_cached(str(data_root()))
    except (SlicewiseError, OSError):
        entries = []
    label = next(
        (f"{e.name}  ·  {e.kind}" for e in entries if Path(e.path).resolve() == path.resolve()), None
    )
    if label is None:
        st.warning(f"{path} is not under the data root; the Viewer lists only what is there.")
        return
    st.session_state["viewer_volume"] = label
    st.switch_page("pages/viewer.py")
