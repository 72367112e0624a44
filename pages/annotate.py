"""Annotate: draw the lung box of each slice on the windowed image; every change is saved at once.

The slice fills the left of the page (pages/_ui/box_canvas.py, one component for the whole page);
the controls sit beside it, each with its key. A drawn box is saved to the slice it was drawn on
(core.annotate.new_edits), first thing in the page run that brings it and before any button acts.

The loop in one place: proposals come from the HU rule or a trained lung-localizer run ("Proposals
from"; core.model_proposals), "Next uncertain slice" goes where the chosen model is least sure, and
"Train on these boxes" trains the quick preset on the confirmed boxes in the background
(core.annotation_loop) while a live status line follows it; its run is then offered as proposals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import streamlit as st

from core import annotate, annotation_loop, annotation_review, model_proposals, render, settings
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
PROPOSER_KEY = "annotate_proposer"  # "Proposals from": the HU rule or a run's label
PROPOSER_PENDING = "annotate_proposer_pending"  # a run to select once (a loop job just finished)
REPLACE_KEY = "annotate_replace"  # "Replace unconfirmed proposals"
METHOD_KEY = "annotate_uncertainty"  # tta / rule
ORDERED_KEY = "annotate_ordered"  # (run, checkpoint, volume, method) whose uncertainty order is computed
JOB_KEY = "annotate_loop_job"  # the loop job this session shows
SEEN_KEY = "annotate_loop_seen"  # {job id: state last seen}: a job seen live and then DONE is offered once
LOOP_ERROR_KEY = "annotate_loop_error"

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
    """The annotator name, readable from callbacks (no widget); never a proposal's name."""
    logged_in = st.session_state.get("auth_user")
    if logged_in:
        return str(logged_in)
    return annotate.person_name(st.session_state.get(NAME_KEY))


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
    problem = annotate.annotator_problem(name)
    if problem:
        st.sidebar.error(problem)
    return annotate.person_name(name)


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


@st.cache_data(ttl=10, max_entries=4, show_spinner=False)
def _lung_runs(runs_root: str) -> list[model_proposals.LungRun]:
    """Finished lung-localizer runs, newest first; cleared when a loop job finishes."""
    return model_proposals.lung_runs(runs_root)


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _newest_loop_job(runs_root: str) -> str | None:
    return annotation_loop.shown_job(None, annotation_loop.loop_jobs(runs_root))


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


def _propose(store: BoxStore, volume: Volume, z: int, run: model_proposals.LungRun | None) -> None:
    """A proposal for the slice on screen from the chosen source: the HU rule replaces the slice's
    box; a model replaces a proposal, never a person's box."""
    try:
        if run is None:
            written = annotate.propose_for_slice(store, volume, z) is not None
        else:
            written = model_proposals.propose_with_model(store, volume, run, slices=[z], overwrite=True) > 0
    except SlicewiseError as exc:
        st.session_state[NOTICE_KEY] = str(exc)
        return
    notice = annotate.propose_notice(written, run is not None, store.get(volume.slice_ids[z]))
    if notice:
        st.session_state[NOTICE_KEY] = notice
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
        source = (f"{row['Annotator']}, cyan" if annotate.box_kind(row) == "model"
                  else "the HU rule, orange")
        notes.append(f"Proposed box ({source}): confirm it, or draw over it and it becomes yours.")
    elif z in reviewed and reviewed[z].iou is not None:
        notes.append(f"IoU proposal → final on this slice: {reviewed[z].iou:.3f}.")
    summary = annotation_review.iou_summary(reviewed.values())
    if summary is not None:
        notes.append(f"This volume: {summary.text()}.")
    st.caption(" ".join(notes) or "No proposal on this slice.")


def _proposer() -> model_proposals.LungRun | None:
    """The "Proposals from" choice: None for the HU rule, else the chosen run."""
    runs = _lung_runs(str(settings.runs_root()))
    labels = [run.label for run in runs]
    choices = annotate.proposer_choices(labels)
    st.session_state[PROPOSER_KEY] = annotate.proposer_choice(
        st.session_state.get(PROPOSER_KEY), choices, st.session_state.pop(PROPOSER_PENDING, None))
    choice = st.selectbox("Proposals from", choices, key=PROPOSER_KEY,
                          help="Where Propose box (P) and Propose for all slices take their boxes from: "
                               "the HU rule (threshold segmentation, orange, annotator 'auto') or a trained "
                               "lung-localizer run, newest first (cyan, annotator 'model:<run>')")
    return runs[labels.index(choice)] if choice in labels else None


def _edit_controls(store: BoxStore, volume: Volume, z: int, has_box: bool) -> model_proposals.LungRun | None:
    ct = volume.modality == "CT"
    run = _proposer()
    if run is not None and ct:  # P then reads the kept boxes instead of a forward pass per slice
        model_proposals.prefetch(volume, run)
    source = "the HU rule (annotator 'auto')" if run is None else f"{run.name} (annotator '{run.annotator}')"
    with _row():
        _button("propose", "Propose box", disabled=not ct, on_click=_propose, args=(store, volume, z, run),
                help_text=f"A box for this slice from {source}")
        propose_all = st.button("Propose for all slices", disabled=not ct, key="annotate_propose_all",
                                help=f"Boxes from {source} for every slice without a box; a person's box is "
                                     "never replaced; one undo step")
    replace = st.checkbox("Replace unconfirmed proposals", key=REPLACE_KEY, disabled=not ct,
                          help="Propose for all slices also replaces proposals nobody has confirmed yet "
                               "(of either source); a person's box is never replaced")
    with _row():
        _button("delete", "Delete", disabled=not has_box, on_click=_delete, args=(store, volume, z),
                help_text="Delete the box of this slice")
        _button("undo", "Undo", disabled=not store.can_undo(), on_click=_undo, args=(store,),
                help_text="Undo the last saved change to the annotation file (any slice)")
        _button("redo", "Redo", disabled=not store.can_redo(), on_click=_redo, args=(store,),
                help_text="Redo the last undone change")
    if propose_all:
        with st.spinner(f"Proposing boxes from {run.name if run else 'the HU rule'}…"):
            try:
                if run is not None:  # predicted (and kept) before the lock: boxes drawn meanwhile are stored
                    model_proposals.predict_boxes(volume, run)
                with _lock():
                    written = _propose_all(store, volume, run, replace)
                st.session_state[NOTICE_KEY] = f"{written} box(es) proposed"
            except SlicewiseError as exc:
                st.session_state[NOTICE_KEY] = str(exc)
        _bump()
        st.rerun()
    return run


def _propose_all(store: BoxStore, volume: Volume, run: model_proposals.LungRun | None, replace: bool) -> int:
    if run is None:
        return annotate.propose_for_volume(store, volume, overwrite=replace)
    return model_proposals.propose_with_model(store, volume, run, overwrite=replace)


def _uncertain_controls(volume: Volume, annotated: dict[int, dict], z: int,
                        run: model_proposals.LungRun | None) -> None:
    """"Next uncertain slice": the unconfirmed slice the chosen model is least sure of."""
    usable = run is not None and volume.modality == "CT"
    with _row():
        pressed = _button("next_uncertain", "Next uncertain slice", disabled=not usable,
                          help_text="Go to the unconfirmed slice the chosen model is least sure of")
        method = st.selectbox("Uncertainty", model_proposals.METHODS, key=METHOD_KEY, width=100,
                              label_visibility="collapsed", disabled=not usable,
                              help="How the model's uncertainty is measured. "
                                   + " ".join(annotation_loop.UNCERTAINTY_HELP.values()))
    if not usable:
        st.caption("Choose a trained run in Proposals from to visit the slices it is least sure of first."
                   if volume.modality == "CT" else "Uncertainty needs a CT volume.")
        return
    key = (str(run.path), str(run.checkpoint), volume.volume_id, method)
    ordered = st.session_state.get(ORDERED_KEY, set())
    if not pressed and key not in ordered:
        st.caption("Press Q: the unconfirmed slices are ordered by the model's uncertainty "
                   "(the first time takes some seconds).")
        return
    waiting = st.spinner("Ordering the unconfirmed slices by the model's uncertainty…")
    try:
        with waiting if key not in ordered else nullcontext():
            order = model_proposals.uncertainty_order(
                volume, run, annotation_review.confirmed_slices(annotated), method)
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    st.session_state[ORDERED_KEY] = {*ordered, key}
    if pressed:
        target = annotate.next_uncertain(order, z)
        if target is None:
            st.session_state[NOTICE_KEY] = "Every slice is confirmed: no uncertain slice left"
        elif target[0] != z:
            _go(target[0])
            st.rerun()
    st.caption(annotate.uncertain_text(order, z, method))


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
    """Confirmed and proposed apart: this volume, and the CT volumes of the data root."""
    here = annotation_review.volume_progress(annotated, volume.shape[0], z)
    st.progress(here.fraction, text=here.text())
    counts = _root_counts(str(data_root()))
    if counts.total:
        done = annotation_review.ct_progress(store.rows(), counts)
        st.progress(done.fraction, text=done.text())


def _box_text(row: dict | None) -> None:
    if row:
        st.caption(f"Box Xmin {row['Xmin']:.4f}, Ymin {row['Ymin']:.4f}, Xmax {row['Xmax']:.4f}, "
                   f"Ymax {row['Ymax']:.4f} · by {row['Annotator']} · {row['Updated']}")
    else:
        st.caption("No box on this slice.")


# ------------------------------------------------------------------------------------- the loop


def _start_training() -> None:
    """Train on these boxes: a background job, quick preset, on the annotations as they are now."""
    st.session_state.pop(LOOP_ERROR_KEY, None)
    try:
        job_id = annotation_loop.start_training(
            data_root(), settings.runs_root(), settings.annotations_path(), preset="quick",
            settings=annotation_loop.loop_overrides())
    except SlicewiseError as exc:
        st.session_state[LOOP_ERROR_KEY] = str(exc)
        return
    st.session_state[JOB_KEY] = job_id
    st.session_state[SEEN_KEY] = {**st.session_state.get(SEEN_KEY, {}), job_id: "SUBMITTED"}
    _newest_loop_job.clear()


def _loop_status(job_id: str) -> dict | None:
    try:
        return annotation_loop.loop_status(settings.runs_root(), job_id)
    except (SlicewiseError, OSError, ValueError):
        return None  # the job folder was deleted or cannot be read


def _observe(status: dict) -> None:
    """Remember the state seen; a job watched while live that is now DONE is offered once: its run is
    selected in Proposals from and a toast says so (the page runs again to show it)."""
    seen = st.session_state.setdefault(SEEN_KEY, {})
    previous = seen.get(status["job"])
    seen[status["job"]] = status["state"]
    if status["final"] and previous is not None and previous != status["state"]:
        _lung_runs.clear()
        if annotation_loop.finished_now(previous, status):
            run = model_proposals.lung_run(status["run"])
            if run is not None:
                st.session_state[PROPOSER_PENDING] = run.label
                st.session_state[NOTICE_KEY] = f"Run {run.name} finished: its boxes are offered as proposals"
        st.rerun()


def _show_status(status: dict) -> None:
    line = annotation_loop.status_line(status)
    with st.container(key="annotate_loop_status"):
        if not status["final"]:
            st.progress(min(1.0, max(0.0, status["fraction"] or 0.0)), text=line)
        elif status["state"] == "DONE" and status["run"] is not None:
            st.caption(line)
        else:
            st.error(line)


@st.fragment(run_every=2)
def _live_status(job_id: str) -> None:
    """The running job's status line, polled every 2 s without running the page (the canvas stays)."""
    status = _loop_status(job_id)
    if status is None:
        return
    _observe(status)
    _show_status(status)


def _loop_controls() -> None:
    """Train on these boxes, what it will train on, and the job's live status."""
    root = data_root()
    found = annotation_loop.training_set(settings.annotations_path(), root, counts=_root_counts(str(root)))
    job_id = st.session_state.get(JOB_KEY) or _newest_loop_job(str(settings.runs_root()))
    status = _loop_status(job_id) if job_id else None
    if status is None:
        st.session_state.pop(JOB_KEY, None)
    else:
        st.session_state[JOB_KEY] = job_id
    live = status is not None and not status["final"]
    st.button("Train on these boxes", key="annotate_train", disabled=live,
              on_click=_after_edits(_start_training),
              help="Train the lung localizer (quick preset) on the confirmed boxes of the data root's CT "
                   "volumes, in the background; when it is done its boxes are offered as proposals")
    st.caption(found.text() + ("." if found.confirmed else ": confirm boxes first."))
    error = st.session_state.pop(LOOP_ERROR_KEY, None)
    if error:
        st.error(error)
    if status is None:
        return
    if live:
        _live_status(status["job"])
    else:
        _observe(status)
        _show_status(status)


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
        run = _edit_controls(store, volume, z, row is not None)
        _uncertain_controls(volume, annotated, z, run)
        window_name = _window_controls(volume.modality)
        _box_text(row)
        _loop_controls()
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
