"""Annotate: draw the lung box of each slice on the windowed image; every change is saved at once."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from core import annotate, annotation_review, render, settings
from core.annotations import BoxStore
from core.errors import SlicewiseError
from core.volume import Volume
from pages._ui.loaders import data_root, list_volumes_cached, load_volume_cached
from pages._ui.navigation import ensure_app_navigation

ensure_app_navigation()

Z_KEY, REV_KEY, NAME_KEY = "annotate_z", "annotate_rev", "annotator"
SHOWN_KEY = "annotate_slice_shown"  # the Slice box, counted from 1
SEEN_KEY = "annotate_seen"  # canvas key -> fingerprint of the drawing the page handled from it
REQUEST_KEY = "annotate_request"  # {"path", "volume", "slice"}: set by the Annotations page to open a slice
PROPOSAL_STROKE = "#ffa126"  # an unconfirmed `auto` box is drawn orange, a person's box red


def _store() -> BoxStore:
    return BoxStore(settings.annotations_path())


def _annotator() -> str:
    logged_in = st.session_state.get("auth_user")  # app.py's login when the server is shared
    if logged_in:
        st.sidebar.text_input("Annotator", value=logged_in, disabled=True, key="annotator_logged_in",
                              help="the logged-in user; boxes are recorded under this name")
        return str(logged_in)
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
    _open_requested(list(names), list(names.values()), root)
    label = st.selectbox("Volume", list(names), index=0 if names else None, key="annotate_volume",
                         placeholder=f"No volumes under {root}: create the demo data on Home")
    return names[label] if label else None


def _open_requested(labels: list[str], paths: list[Path], root: Path) -> None:
    """Select the volume and slice that another page asked for (once)."""
    request = st.session_state.pop(REQUEST_KEY, None)
    if not request:
        return
    index = annotate.requested_entry(paths, request.get("path"))
    if index is None:
        st.warning(f"Volume {request.get('volume')} is not under {root}; cannot open it here.")
        return
    st.session_state["annotate_volume"] = labels[index]
    target = annotate.requested_slice(request)
    if target is not None:
        st.session_state["annotate_for"], st.session_state[Z_KEY] = target


@st.cache_data(ttl=30, max_entries=4, show_spinner=False)
def _root_counts(root: str) -> annotation_review.RootCounts:
    """Slices per volume of the data root (headers only), refreshed every half minute."""
    return annotation_review.root_slice_counts(root)


def _bump() -> None:
    """Re-create the canvas so that it shows the stored box again."""
    st.session_state[REV_KEY] = st.session_state.get(REV_KEY, 0) + 1


def _go(z: int) -> None:
    st.session_state[Z_KEY] = z


def _typed_slice() -> None:
    """The Slice box counts from 1, as the progress text and the Viewer do; the index from 0."""
    st.session_state[Z_KEY] = int(st.session_state[SHOWN_KEY]) - 1


def _navigation(volume: Volume, annotated: dict[int, dict]) -> int:
    n = volume.shape[0]
    if st.session_state.get("annotate_for") != volume.volume_id:
        st.session_state["annotate_for"] = volume.volume_id
        st.session_state[Z_KEY] = n // 2
    st.session_state[Z_KEY] = annotate.clamp_slice(st.session_state.get(Z_KEY, 0), n)
    z = st.session_state[Z_KEY]
    cols = st.columns([1, 1, 2, 2])
    cols[0].button("◀ Previous", on_click=_go, args=(max(0, z - 1),), disabled=z == 0, key="annotate_prev",
                   shortcut="Left")
    cols[1].button("Next ▶", on_click=_go, args=(min(n - 1, z + 1),), disabled=z >= n - 1,
                   key="annotate_next", shortcut="Right")
    target = annotate.next_without_box(n, annotated, z)
    cols[2].button("Next slice without a box", on_click=_go, args=(target if target is not None else z,),
                   disabled=target is None, key="annotate_next_empty", shortcut="N")
    st.session_state[SHOWN_KEY] = z + 1
    cols[3].number_input("Slice", min_value=1, max_value=n, step=1, key=SHOWN_KEY, on_change=_typed_slice,
                         help="counted from 1; the CSV's Slice column is the 0-based index")
    return int(st.session_state[Z_KEY])


def _confirm(store: BoxStore, volume: Volume, z: int, who: str, then: int | None = None) -> None:
    """Button callback: the proposal of slice z becomes `who`'s box; optionally go to slice `then`."""
    if annotate.confirm_proposal(store, volume, z, who) is not None:
        _bump()
    if then is not None:
        _go(then)


def _propose(store: BoxStore, volume: Volume, z: int) -> None:
    """Button callback (saves the rerun a button branch would need): propose and store slice z's box."""
    if annotate.propose_for_slice(store, volume, z) is None:
        st.toast("No lung found on this slice")
    _bump()


def _proposal_row(store: BoxStore, volume: Volume, z: int, row: dict | None, who: str) -> None:
    """Confirm buttons for an `auto` box, and how far proposals were from the final boxes (IoU)."""
    proposal = annotate.is_proposal(row)
    last = z >= volume.shape[0] - 1
    cols = st.columns([1, 1, 4])
    cols[0].button("Confirm & next ▶", disabled=not proposal or last, key="annotate_confirm_next",
                   shortcut="Enter",
                   on_click=_confirm, args=(store, volume, z, who, min(volume.shape[0] - 1, z + 1)),
                   type="primary" if proposal and not last else "secondary",
                   help="Accept the proposed box as it is, under your name, and go to the next slice")
    cols[1].button("Confirm proposal", disabled=not proposal, key="annotate_confirm", on_click=_confirm,
                   args=(store, volume, z, who), help="Accept the proposed box as it is, under your name")
    reviewed = {r.slice: r for r in annotation_review.review_rows(store, volume.volume_id)}
    notes = []
    if proposal:
        notes.append("Proposed box (orange): confirm it, or edit it and it becomes yours.")
    elif z in reviewed and reviewed[z].iou is not None:
        notes.append(f"IoU proposal → final on this slice: {reviewed[z].iou:.3f}.")
    summary = annotation_review.iou_summary(reviewed.values())
    if summary is not None:
        notes.append(f"This volume: {summary.text()}.")
    cols[2].caption(" ".join(notes) or "No proposal on this slice.")


def _actions(store: BoxStore, volume: Volume, z: int, has_box: bool, who: str) -> None:
    cols = st.columns(5)
    if cols[0].button("Delete box", disabled=not has_box, key="annotate_delete", shortcut="Delete"):
        annotate.delete_box(store, volume, z, who)
        _bump()
        st.rerun()
    if cols[1].button("Undo last change", disabled=not store.can_undo(), key="annotate_undo", shortcut="U",
                      help="Undo the last saved change to the annotation file (any slice)"):
        store.undo(annotator=who)
        _bump()
        st.rerun()
    if cols[2].button("Redo change", disabled=not store.can_redo(), key="annotate_redo"):
        store.redo(annotator=who)
        _bump()
        st.rerun()
    cols[3].button("Propose box", disabled=volume.modality != "CT", key="annotate_propose", shortcut="P",
                   help="Threshold segmentation of the lungs on this slice (annotator 'auto')",
                   on_click=_propose, args=(store, volume, z))
    if cols[4].button("Propose for all slices", disabled=volume.modality != "CT", key="annotate_propose_all",
                      help="Boxes for every slice without one (annotator 'auto'); one undo step"):
        with st.spinner("Proposing boxes…"):
            written = annotate.propose_for_volume(store, volume)
        st.toast(f"{written} box(es) proposed")
        _bump()
        st.rerun()


def _canvas(volume: Volume, z: int, stored, window, proposal: bool = False) -> tuple[object, int, int, str]:
    grey = render.window_to_uint8(volume.array[z], *window)
    width, height = annotate.canvas_size(grey.shape)
    key = annotate.canvas_key(volume.volume_id, z, st.session_state.get(REV_KEY, 0))
    result = st_canvas(
        fill_color="rgba(255, 75, 75, 0.08)", stroke_width=2, stroke_color="#ff4b4b",
        background_image=Image.fromarray(grey), height=height, width=width, drawing_mode="labeled_rect",
        initial_drawing=annotate.box_to_drawing(stored, width, height,
                                                **({"stroke": PROPOSAL_STROKE} if proposal else {})),
        key=key,
    )
    return result, width, height, key


def _show_progress(z: int, n_slices: int, n_done: int, store: BoxStore, bars: list | None = None) -> list:
    """Slice and data-root progress bars above the canvas; pass the returned bars back to update them.

    The bars are real elements from the first call on, updated in place, never `st.empty()` slots:
    an empty slot collapses at the start of every rerun and refills later, which moved the canvas
    about 100 px under the pointer for a moment on each rerun -- including the one the canvas itself
    triggers right after a slice appears, when it reports its background fit -- so a box dragged at
    that moment began off the canvas and was never drawn, let alone saved.
    """
    fraction, text = annotate.slice_progress(z, n_slices, n_done)
    slots = [*(bars or []), st, st]
    shown = [slots[0].progress(fraction, text=text)]
    counts = _root_counts(str(data_root()))
    if counts.total:
        done = annotation_review.root_progress(store.rows(), counts)
        shown.append(slots[1].progress(done.fraction, text=done.text()))
    return shown


def _save_late_drawings(store: BoxStore, volume: Volume, annotated: dict[int, dict], who: str) -> None:
    """Save boxes drawn on a canvas the page had already replaced (see core.annotate.late_drawings);
    only new or changed boxes: a late canvas never deletes one."""
    current = annotate.canvas_key(volume.volume_id, st.session_state.get(Z_KEY, -1),
                                  st.session_state.get(REV_KEY, 0))
    seen = st.session_state.setdefault(SEEN_KEY, {})
    for z, drawing in annotate.late_drawings(st.session_state, volume.volume_id, current, seen):
        if not 0 <= z < volume.shape[0]:
            continue
        width, height = annotate.canvas_size(volume.array[z].shape)
        change = annotate.canvas_change(annotate.row_box(annotated.get(z)), drawing, width, height)
        if change.action == "upsert":
            annotated[z] = annotate.save_box(store, volume, z, change.box, who)
            st.toast(f"Saved the box drawn on slice {z + 1} just before the page moved on")


def main() -> None:
    st.title("Annotate lung boxes")
    st.caption("Drag a box around both lungs. Edit it with the canvas toolbar's edit toggle (move, resize, "
               "delete); every change is saved at once to " f"`{settings.annotations_path()}`.")
    st.sidebar.caption("Keys: ← → previous / next slice · N next slice without a box · Enter confirm the "
                       "proposal and go on · P propose · Delete delete the box · U undo")
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
    _save_late_drawings(store, volume, annotated, who)
    z = _navigation(volume, annotated)
    options, default = render.window_choices(volume.modality)
    choice = st.sidebar.selectbox("Window", options[:-1], index=options.index(default), key="annotate_window")
    window = render.resolve_window(choice, volume.array)
    bars = _show_progress(z, volume.shape[0], len(annotated), store)
    toolbar = st.container()  # above the canvas, filled once the canvas result is saved
    stored = annotate.row_box(annotated.get(z))
    result, width, height, key = _canvas(volume, z, stored, window, annotate.is_proposal(annotated.get(z)))
    st.session_state[SEEN_KEY] = {key: annotate.drawing_fingerprint(result.json_data)}
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
    if change.action != "none":
        _show_progress(z, volume.shape[0], len(annotated), store, bars)
    with toolbar:
        _proposal_row(store, volume, z, row, who)
        _actions(store, volume, z, row is not None, who)
    if row:
        st.caption(f"Box Xmin {row['Xmin']:.4f}, Ymin {row['Ymin']:.4f}, Xmax {row['Xmax']:.4f}, "
                   f"Ymax {row['Ymax']:.4f} · by {row['Annotator']} · {row['Updated']}")
    else:
        st.caption("No box on this slice.")


main()
