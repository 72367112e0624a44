"""Widgets every Predict & review view shares: pick an input, predict and store, show a stored set."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import predictions
from core.errors import SlicewiseError
from core.volume_fit import display_name
from pages._ui.loaders import list_volumes_cached, load_volume_cached


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _volume_fits(root: str, family: str):
    """The data root's volumes for a family, those that suit it first (core.volume_fit; cached a minute)."""
    from core.models import get_spec
    from core.volume_fit import order_for

    return order_for(get_spec(family), list_volumes_cached(root))


def pick_volume(spec, data_root: Path, key: str = "predict_volume"):
    """A volume under the data root (loaded, cached), or None. The volumes that suit the family come
    first; one of another modality is returned only once the user confirms running on it anyway."""
    try:
        fits = _volume_fits(str(data_root), spec.name) if data_root.is_dir() else []
    except (SlicewiseError, OSError) as exc:
        st.error(f"Cannot list the volumes under {data_root}: {exc}")
        return None
    if not fits:
        st.info(f"No volumes found under the data root {data_root}.")
        return None
    by_label = {f.label: f for f in fits}
    made_for = f"made for {', '.join(spec.modalities)}: those volumes first" if spec.modalities else ""
    label = st.selectbox("Volume", list(by_label), key=key, help=made_for or None)
    picked = by_label[label]
    try:
        volume = load_volume_cached(picked.entry.path)
    except SlicewiseError as exc:
        st.error(str(exc))
        return None
    return volume if confirmed_fit(spec, volume, display_name(picked.entry), key) else None


def confirmed_fit(spec, volume, name: str, key: str = "predict_volume") -> bool:
    """True when the volume suits the family, or the user ticked "run anyway" for this volume."""
    from core.volume_fit import mismatch

    problem = mismatch(spec, name, volume.modality)
    if not problem:
        return True
    st.warning(problem, icon=":material/warning:")
    return st.checkbox(f"Run {spec.title or spec.name} on this {volume.modality} volume anyway",
                       key=f"{key}_anyway_{volume.volume_id}", value=False)


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
