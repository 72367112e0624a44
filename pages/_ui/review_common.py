"""Widgets every Predict & review view shares: pick an input, predict and store, show a stored set."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import predictions
from core.errors import SlicewiseError
from pages._ui.loaders import list_volumes_cached, load_volume_cached


def pick_volume(spec, data_root: Path, key: str = "predict_volume"):
    """A volume under the data root (loaded, cached), or None; warns when it does not suit the family."""
    try:
        entries = list_volumes_cached(str(data_root)) if data_root.is_dir() else []
    except (SlicewiseError, OSError) as exc:
        st.error(f"Cannot list the volumes under {data_root}: {exc}")
        return None
    if not entries:
        st.info(f"No volumes found under the data root {data_root}.")
        return None
    names = {f"{e.name}  ·  {e.kind}": e.path for e in entries}
    label = st.selectbox("Volume", list(names), key=key)
    try:
        volume = load_volume_cached(names[label])
    except SlicewiseError as exc:
        st.error(str(exc))
        return None
    if not spec.suits(volume.modality):
        st.warning(f"{label.split('  ·  ')[0]} is {volume.modality}; {spec.title} is made for "
                   f"{', '.join(spec.modalities)}. Its predictions here mean little.")
    return volume


def predict_stored(checkpoint: Path, item, runs_root: Path) -> None:
    """Run the predictor on `item` (a Volume or a path), store the result, rerun to show it."""
    from core.infer import load_predictor, predict_and_store

    try:
        with st.spinner("Predicting…"):
            predictor = load_predictor(checkpoint)
            _, prediction, sidecar = predict_and_store(predictor, item, checkpoint, runs_root)
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    st.toast(f"Saved the predictions of {predictions.read_sidecar(sidecar).label}", icon=":material/save:")
    st.rerun()  # the next run finds the saved set and shows "Predict again"


def stored_controls(checkpoint: Path, volume, runs_root: Path, item=None,
                    button: str = "Predict") -> predictions.PredictionSet | None:
    """The stored set for (checkpoint, volume), with "Predict again"; predicts when asked."""
    saved = predictions.find_prediction_set(volume.volume_id, checkpoint, runs_root)
    if saved is None:
        clicked = st.button(button, type="primary", key="predict_run")
    else:
        note, again = st.columns([5, 1], vertical_alignment="center")
        text = f"Saved predictions of `{saved.label}`, {predictions.describe(saved)}. The Viewer shows them."
        (note.warning if saved.stale else note.info)(text)
        clicked = again.button("Predict again", type="primary" if saved.stale else "secondary",
                               key="predict_again")
    if clicked:
        predict_stored(checkpoint, volume if item is None else item, runs_root)
    return saved
