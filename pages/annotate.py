"""Annotate: draw the lung box of each slice on the windowed image; every change is saved at once."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from core import annotate, render, settings
from core.annotations import BoxStore
from core.errors import SlicewiseError
from core.volume import Volume
from pages._ui.loaders import data_root, list_volumes_cached, load_volume_cached
from pages._ui.navigation import ensure_app_navigation

ensure_app_navigation()

Z_KEY, REV_KEY, NAME_KEY = "annotate_z", "annotate_rev", "annotator"


def _store() -> BoxStore:
    return BoxStore(settings.annotations_path())


def _annotator() -> str:
    if NAME_KEY not in st.session_state:
        st.session_state[NAME_KEY] = st.query_params.get("annotator", "")
    name = st.sidebar.text_input("Annotator", key=NAME_KEY, placeholder="your name or initials")
    if name and st.query_params.get("annotator") != name:
        st.query_params["annotator"] = name  # survives a browser reload
    return name.strip() or "unknown"


def _pick_volume(root: Path) -> Path | None:
    try:
        entries = list_volumes_cached(str(root))
    except (SlicewiseError, OSError) as exc:
        st.error(f"Cannot list the volumes under {root}: {exc}")
        return None
    names = {f"{e.name}  ·  {e.kind}": e.path for e in entries}
    label = st.selectbox("Volume", list(names), index=0 if names else None, key="annotate_volume",
                         placeholder=f"No volumes under {root}: create the demo data on Home")
    return names[label] if label else None


def _bump() -> None:
    """Re-create the canvas so that it shows the stored box again."""
    st.session_state[REV_KEY] = st.session_state.get(REV_KEY, 0) + 1


def _go(z: int) -> None:
    st.session_state[Z_KEY] = z


def _navigation(volume: Volume, annotated: dict[int, dict]) -> int:
    n = volume.shape[0]
    if st.session_state.get("annotate_for") != volume.volume_id:
        st.session_state["annotate_for"] = volume.volume_id
        st.session_state[Z_KEY] = n // 2
    st.session_state[Z_KEY] = annotate.clamp_slice(st.session_state.get(Z_KEY, 0), n)
    z = st.session_state[Z_KEY]
    cols = st.columns([1, 1, 2, 2])
    cols[0].button("◀ Previous", on_click=_go, args=(max(0, z - 1),), disabled=z == 0, key="annotate_prev")
    cols[1].button("Next ▶", on_click=_go, args=(min(n - 1, z + 1),), disabled=z >= n - 1,
                   key="annotate_next")
    target = annotate.next_without_box(n, annotated, z)
    cols[2].button("Next slice without a box", on_click=_go, args=(target if target is not None else z,),
                   disabled=target is None, key="annotate_next_empty")
    cols[3].number_input("Slice", min_value=0, max_value=n - 1, step=1, key=Z_KEY)
    return int(st.session_state[Z_KEY])


def _actions(store: BoxStore, volume: Volume, z: int, has_box: bool, who: str) -> None:
    cols = st.columns(5)
    if cols[0].button("Delete box", disabled=not has_box, key="annotate_delete"):
        annotate.delete_box(store, volume, z, who)
        _bump()
        st.rerun()
    if cols[1].button("Undo last change", disabled=not store.can_undo(), key="annotate_undo",
                      help="Undo the last saved change to the annotation file (any slice)"):
        store.undo(annotator=who)
        _bump()
        st.rerun()
    if cols[2].button("Redo change", disabled=not store.can_redo(), key="annotate_redo"):
        store.redo(annotator=who)
        _bump()
        st.rerun()
    if cols[3].button("Propose box", disabled=volume.modality != "CT", key="annotate_propose",
                      help="Threshold segmentation of the lungs on this slice (annotator 'auto')"):
        if annotate.propose_for_slice(store, volume, z) is None:
            st.toast("No lung found on this slice")
        _bump()
        st.rerun()
    if cols[4].button("Propose for all slices", disabled=volume.modality != "CT", key="annotate_propose_all",
                      help="Boxes for every slice without one (annotator 'auto'); one undo step"):
        with st.spinner("Proposing boxes…"):
            written = annotate.propose_for_volume(store, volume)
        st.toast(f"{written} box(es) proposed")
        _bump()
        st.rerun()


def _canvas(volume: Volume, z: int, stored, window) -> tuple[object, int, int]:
    grey = render.window_to_uint8(volume.array[z], *window)
    width, height = annotate.canvas_size(grey.shape)
    key = f"annotate_canvas_{volume.volume_id}_{z}_{st.session_state.get(REV_KEY, 0)}"
    result = st_canvas(
        fill_color="rgba(255, 75, 75, 0.08)", stroke_width=2, stroke_color="#ff4b4b",
        background_image=Image.fromarray(grey), height=height, width=width, drawing_mode="labeled_rect",
        initial_drawing=annotate.box_to_drawing(stored, width, height), key=key,
    )
    return result, width, height


def main() -> None:
    st.title("Annotate lung boxes")
    st.caption("Drag a box around both lungs. Edit it with the canvas toolbar's edit toggle (move, resize, "
               "delete); every change is saved at once to " f"`{settings.annotations_path()}`.")
    who = _annotator()
    store = _store()
    try:
        store.check()
    except SlicewiseError as exc:
        st.error(f"{exc}\n\nFix or move the file; nothing is written to it until it parses again.")
        return
    path = _pick_volume(data_root())
    if path is None:
        return
    try:
        volume = load_volume_cached(path)
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    annotated = annotate.volume_boxes(store, volume)
    z = _navigation(volume, annotated)
    options, default = render.window_choices(volume.modality)
    choice = st.sidebar.selectbox("Window", options[:-1], index=options.index(default), key="annotate_window")
    window = render.resolve_window(choice, volume.array)
    progress = st.empty()
    stored = annotate.row_box(annotated.get(z))
    result, width, height = _canvas(volume, z, stored, window)
    change = annotate.canvas_change(stored, result.json_data, width, height)
    if change.action == "upsert":
        annotated[z] = annotate.save_box(store, volume, z, change.box, who)
    elif change.action == "delete":
        annotate.delete_box(store, volume, z, who)
        annotated.pop(z, None)
    if change.redraw:
        _bump()
        st.rerun()
    row = annotated.get(z)
    done, total = len(annotated), volume.shape[0]
    progress.progress(done / total, text=f"Slice {z + 1} of {total} · {done} of {total} slices annotated")
    _actions(store, volume, z, row is not None, who)
    if row:
        st.caption(f"Box Xmin {row['Xmin']:.4f}, Ymin {row['Ymin']:.4f}, Xmax {row['Xmax']:.4f}, "
                   f"Ymax {row['Ymax']:.4f} · by {row['Annotator']} · {row['Updated']}")
    else:
        st.caption("No box on this slice.")


main()
