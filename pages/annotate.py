"""Annotate: draw the lung box of each slice on the windowed image; every change is saved at once.

The slice fills the left of the page (pages/_ui/box_canvas.py, one component for the whole page);
the controls sit beside it, each with its key. A drawn box is saved to the slice it was drawn on
(core.annotate.new_edits), first thing in the page run that brings it and before any button acts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core import annotate, annotation_review, render, settings
from core.annotations import BoxStore
from core.errors import SlicewiseError
from core.volume import Volume
from pages._ui.box_canvas import box_canvas
from pages._ui.loaders import data_root, list_volumes_cached, load_volume_cached
from pages._ui.navigation import ensure_app_navigation

ensure_app_navigation()

Z_KEY, REV_KEY, NAME_KEY = "annotate_z", "annotate_rev", "annotator"
SHOWN_KEY = "annotate_slice_shown"  # the Slice box, counted from 1
REQUEST_KEY = "annotate_request"  # {"path", "volume", "slice"}: set by the Annotations page to open a slice
CANVAS_KEY = "annotate_canvas"  # the one box canvas of the page; its state holds unacknowledged edits
HANDLED_KEY = "annotate_handled"  # seqs of the canvas edits already stored (core.annotate.new_edits)
WINDOW_KEY = "annotate_window_name"
NOTICE_KEY = "annotate_notice"
LOCK_KEY = "annotate_store_lock"

CSS = """
<style>
/* image first: less room above the page and at its sides */
[data-testid="stMainBlockContainer"], .block-container { padding-top: 3.2rem; padding-bottom: 1rem;
  padding-left: 1.5rem; padding-right: 1.5rem; }
/* the controls scroll on their own beside the image, which stays where it is */
.st-key-annotate_side { max-height: calc(100vh - 4.2rem); overflow-y: auto; overflow-x: hidden;
  gap: 0.5rem; padding-right: 0.25rem; }
</style>
"""


def _store() -> BoxStore:
    return BoxStore(settings.annotations_path())


def _who() -> str:
    """The annotator name, readable from callbacks (no widget)."""
    logged_in = st.session_state.get("auth_user")
    if logged_in:
        return str(logged_in)
    return str(st.session_state.get(NAME_KEY) or "").strip() or "unknown"


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


# ------------------------------------------------------------------------------ edits from the canvas


def _lock() -> threading.RLock:
    """One lock per browser session around every change to the store.

    With Streamlit's fast reruns a new page run starts while the interrupted one is still inside
    a long computation (e.g. proposing boxes for every slice), which then writes what it computed.
    Holding this lock, a box drawn meanwhile is stored after those proposals, so it is never
    overwritten by them."""
    lock = st.session_state.get(LOCK_KEY)
    if lock is None:
        lock = st.session_state[LOCK_KEY] = threading.RLock()
    return lock


def _apply_edits() -> None:
    """Store every box drawn on the canvas that is not stored yet, each on the slice it was drawn on.

    Runs first in every page run (the canvas's own callback) and first in every button callback, so
    a box dragged just before a click is saved before the click acts, whatever order they arrive in.
    Nothing is written while the CSV is broken: those edits stay unacknowledged and are stored once
    it parses again."""
    with _lock():
        _store_edits()


def _store_edits() -> None:
    handled = st.session_state.get(HANDLED_KEY, [])
    edits, seqs = annotate.new_edits(st.session_state.get(CANVAS_KEY), handled)
    if not seqs:
        return
    store = _store()
    try:
        store.check()
    except SlicewiseError:
        return
    who = _who()
    shown = (st.session_state.get("annotate_for"), st.session_state.get(Z_KEY))
    for edit in edits:
        annotate.save_edit(store, edit, who)
        if (edit.volume, edit.slice) != shown:
            st.session_state[NOTICE_KEY] = f"Saved the box drawn on slice {edit.slice + 1}"
    st.session_state[HANDLED_KEY] = annotate.remember(handled, seqs)
    _bump()


def _after_edits(action: Callable[..., None]) -> Callable[..., None]:
    """A button callback that first stores the boxes drawn before the click."""

    def run(*args) -> None:
        with _lock():
            _store_edits()
            action(*args)

    return run


def _bump() -> None:
    st.session_state[REV_KEY] = st.session_state.get(REV_KEY, 0) + 1


# --------------------------------------------------------------------------------------- volume


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


# ------------------------------------------------------------------------------------ callbacks


def _go(z: int) -> None:
    st.session_state[Z_KEY] = z


def _step(delta: int, n: int) -> None:
    """Previous / next from the slice the page is on now (a key held down steps on)."""
    st.session_state[Z_KEY] = annotate.clamp_slice(st.session_state.get(Z_KEY, 0) + delta, n)


def _typed_slice() -> None:
    """The Slice box counts from 1, as everything on the page; the index from 0."""
    st.session_state[Z_KEY] = int(st.session_state[SHOWN_KEY]) - 1


def _confirm(store: BoxStore, volume: Volume, z: int, who: str, then: int | None = None) -> None:
    """The proposal of slice z (the one on screen when pressed) becomes `who`'s box; then slice `then`."""
    if annotate.confirm_proposal(store, volume, z, _who()) is not None:
        _bump()
    if then is not None:
        _go(then)


def _propose(store: BoxStore, volume: Volume, z: int) -> None:
    if annotate.propose_for_slice(store, volume, z) is None:
        st.session_state[NOTICE_KEY] = "No lung found on this slice"
    _bump()


def _delete(store: BoxStore, volume: Volume, z: int) -> None:
    annotate.delete_box(store, volume, z, _who())
    _bump()


def _undo(store: BoxStore) -> None:
    store.undo(annotator=_who())
    _bump()


def _redo(store: BoxStore) -> None:
    store.redo(annotator=_who())
    _bump()


def _set_window(name: str) -> None:
    st.session_state[WINDOW_KEY] = name


# ------------------------------------------------------------------------------------- controls


def _button(action: str, label: str, *, on_click=None, args=(), disabled=False, help_text="",
            primary=False) -> bool:
    keys = annotate.key_hint(action)
    return st.button(label, key=f"annotate_{action}", shortcut=annotate.shortcut(action), disabled=disabled,
                     on_click=_after_edits(on_click) if on_click else None, args=args,
                     help=f"{help_text} ({keys})".strip(), type="primary" if primary else "secondary",
                     width="content")


def _row():
    """A row of buttons at their own widths, wrapping when the column is narrow."""
    return st.container(horizontal=True, gap="small", vertical_alignment="bottom")


def _navigation(volume: Volume, annotated: dict[int, dict]) -> int:
    n = volume.shape[0]
    z = st.session_state[Z_KEY]
    target = annotate.next_without_box(n, annotated, z)
    st.session_state[SHOWN_KEY] = z + 1
    with _row():
        _button("prev", "◀ Previous", on_click=_step, args=(-1, n), disabled=z == 0,
                help_text="Previous slice")
        _button("next", "Next ▶", on_click=_step, args=(1, n), disabled=z >= n - 1, help_text="Next slice")
        st.number_input("Slice", min_value=1, max_value=n, step=1, key=SHOWN_KEY, on_change=_typed_slice,
                        width=115, label_visibility="collapsed",
                        help="Slice number, counted from 1; the CSV's Slice column is the 0-based index")
        _button("next_empty", "Next without a box", on_click=_go, args=(target if target is not None else z,),
                disabled=target is None, help_text="The next slice that has no box")
    return z


def _proposal_controls(store: BoxStore, volume: Volume, z: int, row: dict | None, who: str) -> None:
    """Confirm buttons for a proposed box, and how far proposals were from the final boxes (IoU)."""
    proposal = annotate.is_proposal(row)
    last = z >= volume.shape[0] - 1
    with _row():
        _button("confirm_next", "Confirm & next ▶", disabled=not proposal or last,
                primary=proposal and not last,
                on_click=_confirm, args=(store, volume, z, who, min(volume.shape[0] - 1, z + 1)),
                help_text="Accept the proposed box as it is, under your name, and go to the next slice")
        st.button("Confirm", disabled=not proposal, key="annotate_confirm",
                  on_click=_after_edits(_confirm), args=(store, volume, z, who),
                  help="Accept the proposed box as it is, under your name")
    reviewed = {r.slice: r for r in annotation_review.review_rows(store, volume.volume_id)}
    notes = []
    if proposal:
        source = "a model, cyan" if annotate.box_kind(row) == "model" else "the HU rule, orange"
        notes.append(f"Proposed box ({source}): confirm it, or draw over it and it becomes yours.")
    elif z in reviewed and reviewed[z].iou is not None:
        notes.append(f"IoU proposal → final on this slice: {reviewed[z].iou:.3f}.")
    summary = annotation_review.iou_summary(reviewed.values())
    if summary is not None:
        notes.append(f"This volume: {summary.text()}.")
    st.caption(" ".join(notes) or "No proposal on this slice.")


def _edit_controls(store: BoxStore, volume: Volume, z: int, has_box: bool) -> None:
    ct = volume.modality == "CT"
    with _row():
        _button("propose", "Propose box", disabled=not ct, on_click=_propose, args=(store, volume, z),
                help_text="Threshold segmentation of the lungs on this slice (annotator 'auto')")
        propose_all = st.button("Propose for all slices", disabled=not ct, key="annotate_propose_all",
                                help="Boxes for every slice without one (annotator 'auto'); one undo step")
    with _row():
        _button("delete", "Delete", disabled=not has_box, on_click=_delete, args=(store, volume, z),
                help_text="Delete the box of this slice")
        _button("undo", "Undo", disabled=not store.can_undo(), on_click=_undo, args=(store,),
                help_text="Undo the last saved change to the annotation file (any slice)")
        _button("redo", "Redo", disabled=not store.can_redo(), on_click=_redo, args=(store,),
                help_text="Redo the last undone change")
    if propose_all:
        with st.spinner("Proposing boxes…"), _lock():
            written = annotate.propose_for_volume(store, volume)
        st.session_state[NOTICE_KEY] = f"{written} box(es) proposed"
        _bump()
        st.rerun()


def _window_controls(modality: str) -> str:
    options, default = render.window_choices(modality)
    keys = annotate.window_keys(options)
    names = [name for _, name in keys]
    if st.session_state.get(WINDOW_KEY) not in names:
        st.session_state[WINDOW_KEY] = default if default in names else names[0]
    current = st.session_state[WINDOW_KEY]
    with st.container(horizontal=True, gap="small"):
        for digit, name in keys:
            st.button(name, key=f"annotate_window_{name}", shortcut=digit, on_click=_set_window, args=(name,),
                      type="primary" if name == current else "secondary", help=f"{name} window ({digit})")
    return current


def _window(volume: Volume, name: str) -> tuple[float, float]:
    """(center, width) of the named window; "auto" (percentiles of the whole volume) once per volume."""
    cached = st.session_state.get("annotate_window_values")
    if cached and cached[0] == (volume.volume_id, name):
        return cached[1]
    window = tuple(float(v) for v in render.resolve_window(name, volume.array))
    st.session_state["annotate_window_values"] = ((volume.volume_id, name), window)
    return window


def _header(windows: list[tuple[str, str]]) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown("##### Annotate lung boxes", width="content")
        with st.popover("Keys", help="keyboard shortcuts (they work while the image has focus)"):
            st.markdown(annotate.keys_help(windows))
            st.caption("Drag on the image to draw the box (a new drag replaces it), inside it to move it, "
                       "on an edge or corner to resize it. Every change is saved at once.")


def _progress(z: int, volume: Volume, annotated: dict[int, dict], store: BoxStore) -> None:
    fraction, text = annotate.slice_progress(z, volume.shape[0], annotated)
    st.progress(fraction, text=text)
    counts = _root_counts(str(data_root()))
    if counts.total:
        done = annotation_review.root_progress(store.rows(), counts)
        st.progress(done.fraction, text=done.text())


def _box_text(row: dict | None) -> None:
    if row:
        st.caption(f"Box Xmin {row['Xmin']:.4f}, Ymin {row['Ymin']:.4f}, Xmax {row['Xmax']:.4f}, "
                   f"Ymax {row['Ymax']:.4f} · by {row['Annotator']} · {row['Updated']}")
    else:
        st.caption("No box on this slice.")


# ------------------------------------------------------------------------------------------ page


def main() -> None:
    st.markdown(CSS, unsafe_allow_html=True)
    _apply_edits()
    who = _annotator()
    image_col, side = st.columns([5, 2], gap="medium")
    side = side.container(key="annotate_side")
    options, _ = render.window_choices("CT")
    with side:
        _header(annotate.window_keys(options))
    store = _store()
    try:
        store.check()
    except SlicewiseError as exc:
        image_col.error(f"{exc}\n\nFix or move the file; nothing is written to it until it parses again.")
        return
    with side:
        path = _pick_volume(data_root())
    if path is None:
        return
    try:
        volume = load_volume_cached(path)
    except SlicewiseError as exc:
        side.error(str(exc))
        return
    n = volume.shape[0]
    if st.session_state.get("annotate_for") != volume.volume_id:
        st.session_state["annotate_for"] = volume.volume_id
        st.session_state[Z_KEY] = n // 2
    st.session_state[Z_KEY] = annotate.clamp_slice(st.session_state.get(Z_KEY, 0), n)
    annotated = annotate.volume_boxes(store, volume)
    with side:
        z = _navigation(volume, annotated)
        _progress(z, volume, annotated, store)
        row = annotated.get(z)
        _proposal_controls(store, volume, z, row, who)
        _edit_controls(store, volume, z, row is not None)
        window_name = _window_controls(volume.modality)
        _box_text(row)
    notice = st.session_state.pop(NOTICE_KEY, None)
    if notice:
        st.toast(notice)
    window = _window(volume, window_name)
    acked = st.session_state.get(HANDLED_KEY, [])[-200:]
    with image_col:
        box_canvas(key=CANVAS_KEY, grey=render.window_to_uint8(volume.array[z], *window),
                   volume_id=volume.volume_id, z=z, n_slices=n, image_id=volume.slice_ids[z],
                   box=annotate.row_box(row), kind=annotate.box_kind(row), colours=annotate.BOX_COLOURS,
                   revision=st.session_state.get(REV_KEY, 0), acked=acked,
                   keys=annotate.extra_keys(), nav={"prev": "annotate_prev", "next": "annotate_next"},
                   on_edits=_apply_edits, image_key=(volume.volume_id, z, window))


main()
