"""Home: choose the data root, see what is in it, create the demo data or fetch a real sample CT."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import settings
from core.catalog import Catalog, summarise
from core.confine import choose_data_root, confine, server_is_shared
from core.errors import SlicewiseError
from pages._ui.loaders import DATA_ROOT_KEY, data_root, list_volumes_cached, set_data_root
from pages._ui.navigation import ensure_app_navigation

ensure_app_navigation()


def _root_picker() -> Path:
    """The data root: typed here on the user's own machine; on a shared server only folders under
    the administrator's data root (SLICEWISE_DATA) are accepted (core.confine.choose_data_root)."""
    shared = server_is_shared(st.get_option("server.address"))
    current = str(data_root())
    help_text = "Folder holding your DICOM / NIfTI / NRRD / PNG data. Every page uses it."
    if shared:
        help_text += f" This server is shared: only folders under {settings.data_root()} are allowed."
    chosen = st.text_input("Data root", value=current, key="home_data_root", help=help_text)
    chosen = chosen.strip() or str(settings.data_root())
    if chosen != st.session_state.get(DATA_ROOT_KEY):
        try:
            set_data_root(choose_data_root(chosen, shared=shared))
        except SlicewiseError as exc:
            st.error(f"Data root not changed: {exc}", icon="🚫")
    return data_root()


def _run_action(label: str, action, root: Path) -> None:
    """Run a long core call with a spinner and a progress line; show core errors as messages."""
    status = st.empty()
    try:
        with st.spinner(label):
            action(lambda message: status.caption(str(message)))
    except SlicewiseError as exc:
        status.empty()
        st.error(str(exc), icon=":material/error:")
        return
    status.empty()
    list_volumes_cached.clear()
    st.success(f"{label.rstrip('…')}: done, under {root}", icon=":material/check_circle:")


def _actions(root: Path, catalog: Catalog) -> None:
    c1, c2 = st.columns(2)
    demo_label = "Recreate demo data" if catalog.has_demo else "Create demo data"
    if c1.button(demo_label, icon=":material/auto_awesome:", key="home_demo",
                 help=f"Synthetic chest CT, X-ray and brain MRI phantoms with truth, into {root / 'demo'}"):
        from core.demo import write_demo_data

        _run_action("Writing the demo data set…",
                    lambda progress: write_demo_data(root / "demo", progress=progress, roots=[root]), root)
    if c2.button("Download real sample CT (LIDC-IDRI-0001)", icon=":material/download:", key="home_lidc",
                 help=f"One public chest CT series (about 130 slices of 512×512), into {root / 'lidc'}"):
        from core.sample_data import fetch_lidc_sample

        _run_action("Downloading LIDC-IDRI-0001…",
                    lambda progress: fetch_lidc_sample(confine(root / "lidc", [root]), progress=progress),
                    root)


def _contents(catalog: Catalog) -> None:
    counts = catalog.counts()
    for column, (name, value) in zip(st.columns(len(counts)), counts.items(), strict=True):
        column.metric(name.capitalize(), value)
    for problem in catalog.problems:
        st.info(problem, icon=":material/info:")
    if catalog.volumes:
        table = pd.DataFrame([(v.name, v.kind) for v in catalog.volumes], columns=["Volume", "Kind"])
        st.dataframe(table, hide_index=True, width="stretch", height=min(400, 36 + 35 * len(table)))
        st.caption("Open them in the Viewer (sidebar).")
    if catalog.outside_links:  # skipped by confinement: said, not silent
        st.warning(catalog.outside_links_note(), icon=":material/link_off:")
    if catalog.runs:
        rows = [(r.name, r.family, r.status, r.checkpoints,
                 f"{r.best_metric_name} {r.best_metric:.4g}" if r.best_metric is not None else "")
                for r in catalog.runs]
        runs = pd.DataFrame(rows, columns=["Run", "Family", "Status", "Checkpoints", "Best metric"])
        st.dataframe(runs, hide_index=True, width="stretch")
    st.caption(f"Annotations: `{catalog.annotation_file}` · runs: `{settings.runs_root()}`")


def main() -> None:
    st.title("Slicewise")
    st.write("Browse CT / MRI volumes slice by slice, annotate lung boxes, train models and review "
             "their predictions.")
    root = _root_picker()
    catalog = summarise(root)
    _actions(root, catalog)
    if st.session_state.get("home_demo") or st.session_state.get("home_lidc"):
        catalog = summarise(root)
    st.subheader("In this data root")
    _contents(catalog)


main()
