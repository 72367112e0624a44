"""Predict & review: pick a checkpoint; the family's review kind decides the rest of the page.

UI only: checkpoints from core.jobs, the family from core.runs, and the view for the family's
review kind from pages/_ui/review_<kind>.py. A new family touches no page.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import streamlit as st

from core import jobs, runs, settings
from core.errors import SlicewiseError
from core.models import get_spec
from pages._ui.loaders import data_root as chosen_data_root
from pages._ui.navigation import ensure_app_navigation

ensure_app_navigation()
st.title("Predict & review")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@st.cache_data(ttl=60, max_entries=64, show_spinner=False)
def _family(checkpoint: str, mtime: float) -> str:
    return runs.family_of_checkpoint(Path(checkpoint))


def main() -> None:
    runs_root = settings.runs_root()
    checkpoints = jobs.list_checkpoints(runs_root)
    if not checkpoints:
        st.info(f"No checkpoint under {runs_root} yet: train a model on the Train page first.")
        return
    checkpoint = st.selectbox("Checkpoint", checkpoints, format_func=lambda p: _relative(p, runs_root),
                              key="predict_checkpoint", help="finished jobs' best checkpoints first")
    try:
        spec = get_spec(_family(str(checkpoint), checkpoint.stat().st_mtime))
    except (SlicewiseError, KeyError, OSError) as exc:
        st.error(f"{checkpoint}: cannot tell its model family ({exc})")
        return
    st.caption(f"{spec.title} · review: {spec.review}")
    view = importlib.import_module(f"pages._ui.review_{spec.review}")
    view.review(spec, checkpoint, chosen_data_root(), runs_root)


main()
