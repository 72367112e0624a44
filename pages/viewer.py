"""Viewer: browse a volume slice by slice with windowing, orientations, readout, montage, overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core import render, settings, view_payload
from core.errors import SlicewiseError
from core.memory import release_freed_memory
from core.volume import Volume
from core.volume_fit import display_name
from pages._ui.frames import VolumeView, montage_png, volume_view
from pages._ui.loaders import data_root, list_volumes_cached, load_volume_cached, path_mtime, truth_cached
from pages._ui.navigation import ensure_app_navigation
from pages._ui.overlays import available_layers, layer_legend
from pages._ui.slice_viewer import slice_viewer, slice_viewer_feed

ensure_app_navigation()

FAST, PLAIN = "In the browser (fast)", "Server slider"
VIEWER_KEY = "viewer_stack"
UPLOAD_KEY = "viewer_upload_dir"


def _saved_upload(upload) -> Path:
    """Write an uploaded file under the runs root, per session (once per upload; core.uploads removes
    it after a day) and return its path."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    from core.uploads import save_upload

    saved = st.session_state.get(UPLOAD_KEY)
    if saved and saved[0] == upload.file_id and Path(saved[1]).exists():
        return Path(saved[1])
    ctx = get_script_run_ctx()
    session = ctx.session_id if ctx is not None else "local"
    path = save_upload(settings.runs_root(), session, upload.file_id, upload.name, bytes(upload.getbuffer()))
    st.session_state[UPLOAD_KEY] = (upload.file_id, str(path))
    return path


def _pick_source(root: Path) -> tuple[Path | None, str]:
    try:
        entries = list_volumes_cached(str(root))
    except (SlicewiseError, OSError) as exc:
        st.error(f"Cannot list the volumes under {root}: {exc}")
        entries = []
    names = {f"{display_name(e)}  ·  {e.kind}": e.path for e in entries}
    left, right = st.columns([5, 1], vertical_alignment="bottom")  # one row: the image starts high
    label = left.selectbox("Volume", list(names), index=0 if names else None, key="viewer_volume",
                           placeholder=f"No volumes under {root}: create the demo data on Home")
    with right.popover("Open a file", icon=":material/upload_file:", width="stretch"):
        upload = st.file_uploader("…or open a file", key="viewer_file",
                                  type=["dcm", "nii", "gz", "nrrd", "nhdr", "png", "jpg", "jpeg"])
    if upload is not None:
        return _saved_upload(upload), upload.name
    if label is None:
        return None, ""
    return names[label], label.split("  ·  ")[0]


def _window_controls(volume: Volume) -> tuple[float, float]:
    """The server slider's window (the browser viewer has its own, reported back in `view`)."""
    options, default = render.window_choices(volume.modality)
    choice = st.selectbox("Window", options, index=options.index(default),
                          key=f"viewer_window_{volume.modality}")  # CT keeps its preset, MR its own
    start = render.resolve_window(default if choice == render.CUSTOM_WINDOW else choice, volume.array)
    custom = None
    if choice == render.CUSTOM_WINDOW:
        c1, c2 = st.columns(2)
        center = c1.number_input("Center", value=float(round(start[0])), step=10.0, key="viewer_center")
        width = c2.number_input("Width", value=float(round(start[1])), min_value=1.0, step=10.0,
                                key="viewer_width")
        custom = (center, width)
    window = render.resolve_window(choice, volume.array, custom)
    unit = "HU" if volume.modality == "CT" else "units"
    st.caption(f"center {window[0]:.0f} {unit}, width {window[1]:.0f}")
    return window


def _overlay_controls(layers: dict, notes: dict[str, str]) -> list[render.OverlayLayer]:
    chosen = []
    for name, layer in layers.items():
        on = st.checkbox(name, value=layer.visible, key=f"viewer_ov_{name}",
                         help=name if len(name) > 30 else None)  # a long label is cut in the side column
        if name in notes:
            st.markdown(notes[name], unsafe_allow_html=True)
        if not on:
            continue
        opacity = st.slider("Opacity", 0.0, 1.0, float(layer.opacity), 0.05, key=f"viewer_op_{name}",
                            label_visibility="collapsed")
        style = layer.style
        if layer.kind == "mask":
            style = st.radio("Draw", list(render.MASK_STYLES), index=list(render.MASK_STYLES).index(style),
                             key=f"viewer_st_{name}", horizontal=True, label_visibility="collapsed")
        chosen.append(render.OverlayLayer(layer.kind, layer.data, layer.colour, opacity, True, name, style,
                                          layer.line_width, layer.threshold))
    if not layers:
        st.caption("No overlays for this volume yet: demo volumes carry ground truth; boxes predicted on "
                   "the Predict & review page appear here.")
    return chosen


def _current_index(n: int, orientation: str) -> int:
    """Slice shown, per orientation, kept in session state; the middle slice at first."""
    indices = st.session_state.setdefault("viewer_index", {})
    return min(max(int(indices.get(orientation, n // 2)), 0), n - 1)


def _remember_index(orientation: str, index: int) -> None:
    st.session_state.setdefault("viewer_index", {})[orientation] = int(index)


def _show_readout(volume: Volume, orientation: str, index: int, row: int, col: int) -> None:
    r = render.readout(volume.array, orientation, index, row, col, volume.direction)
    if not r.inside:
        st.caption("The point is outside the image.")
        return
    unit = " HU" if volume.modality == "CT" else ""
    st.markdown(f"**{r.value:.0f}{unit}** at voxel x {r.x}, y {r.y}, z {r.z} (0-based indices) · "
                f"axial slice {r.z + 1}")


def _readout_inputs(volume: Volume, orientation: str, index: int, probe: dict | None, shape2d,
                    fast: bool) -> None:
    st.markdown("**Intensity readout**")
    if fast:
        st.caption("The value under the pointer shows above the image.")
    if probe is not None and int(probe.get("index", -1)) == index:
        _show_readout(volume, orientation, index, int(probe["row"]), int(probe["col"]))
        st.caption("from the last click on the image")
        return
    c1, c2 = st.columns(2)
    rows, cols = shape2d
    keys = f"viewer_probe_x_{orientation}", f"viewer_probe_y_{orientation}"
    if st.session_state.get("viewer_probe_volume") != volume.volume_id:  # a new volume: its centre,
        for axis in ("x", "y"):  # not the last volume's x/y
            for o in render.ORIENTATIONS:
                st.session_state.pop(f"viewer_probe_{axis}_{o}", None)
        st.session_state["viewer_probe_volume"] = volume.volume_id
    col = c1.number_input("x (column)", 0, cols - 1, cols // 2, key=keys[0])
    row = c2.number_input("y (row)", 0, rows - 1, rows // 2, key=keys[1])
    _show_readout(volume, orientation, index, int(row), int(col))


def _plain_viewer(volume: Volume, orientation: str, window, layers, index: int, n: int) -> int:
    if n > 1:
        index = st.slider("Slice", 0, n - 1, index, key=f"viewer_slider_{orientation}")
    rgb = render.render_slice(volume.array, orientation, index, window, layers, volume.direction)
    aspect = render.display_aspect(volume.spacing, orientation)
    st.image(render.resample_rows(rgb, aspect), caption=f"{orientation} slice {index + 1} / {n}",
             width="stretch" if rgb.shape[1] >= 512 else "content")
    return index


def _browser_viewer(source: VolumeView, orientation: str, index: int) -> tuple[int, dict | None, dict | None]:
    """The client-side viewer; (slice index, last click probe, the reader's reported view or None)."""
    state = slice_viewer(source, orientation=orientation, index=index,
                         axial_index=_current_index(source.count, "axial"), key=VIEWER_KEY)
    n = render.slice_count(source.volume.shape, orientation)
    if state.index is not None and 0 <= state.index < n:
        index = state.index
    if state.probe is not None:
        index = int(state.probe.get("index", index))
    return index, state.probe, state.view


def _reported_window(volume: Volume, view: dict | None) -> tuple[float, float]:
    if view and isinstance(view.get("window"), list) and len(view["window"]) == 2:
        return float(view["window"][0]), float(max(1.0, view["window"][1]))
    return view_payload.initial_window(volume.array, volume.modality) if volume.modality == "CT" \
        else render.resolve_window(render.AUTO_WINDOW, volume.array)


def _reported_layers(layers: dict, view: dict | None) -> list[render.OverlayLayer]:
    """The layers the reader has on in the browser, with the opacity and style chosen there."""
    chosen = []
    for name, look in ((view or {}).get("layers") or {}).items():
        layer = layers.get(name)
        if layer is None or not isinstance(look, dict) or not look.get("visible"):
            continue
        style = look.get("style") if look.get("style") in render.MASK_STYLES else layer.style
        opacity = float(look.get("opacity", layer.opacity))
        chosen.append(render.OverlayLayer(layer.kind, layer.data, layer.colour, opacity, True, name, style,
                                          layer.line_width, layer.threshold))
    return chosen


def _header(volume: Volume, name: str) -> None:
    z, y, x = volume.shape
    sz, sy, sx = volume.spacing
    st.markdown(
        f"**{name}** · {volume.modality} · {x}×{y}×{z} voxels · spacing {sx:.3g}×{sy:.3g}×{sz:.3g} mm · "
        f"{volume.nbytes / 2**20:.3g} MiB in memory"
    )
    for warning in volume.warnings:
        st.warning(f"{name}: {warning}", icon=":material/warning:")


def _metadata(volume: Volume, index: int) -> None:
    rows = [("Volume id", volume.volume_id), ("Slice id (current)", volume.slice_ids[index]
                                               if index < len(volume.slice_ids) else ""),
            ("Source", volume.source)]
    rows += render.header_table(volume.meta)
    st.dataframe(pd.DataFrame(rows, columns=["Field", "Value"]), hide_index=True, width="stretch")


def _montage(volume: Volume, path: Path, orientation: str, window, layers) -> None:
    c1, c2 = st.columns(2)
    rows = c1.number_input("Rows", 1, 10, 4, key="viewer_montage_rows")
    cols = c2.number_input("Columns", 1, 12, 10, key="viewer_montage_cols")
    png, indices = montage_png(str(path.resolve()), path_mtime(path), volume, orientation, window, layers,
                               int(rows), int(cols))
    st.image(png, caption=f"{len(indices)} {orientation} slices: {indices[0] + 1}…{indices[-1] + 1}",
             width="stretch")


def _side_fast(volume: Volume, view: dict | None, all_layers: dict, notes: dict, problems: list[str]) -> None:
    window = _reported_window(volume, view)
    unit = "HU" if volume.modality == "CT" else "units"
    st.caption(f"Window: center {window[0]:.0f} {unit}, width {window[1]:.0f} · right-drag on the image "
               "or pick a preset above it")
    st.markdown("**Overlays**")
    for problem in problems:
        st.error(problem)
    for name, note in notes.items():
        if name in all_layers:
            st.markdown(note, unsafe_allow_html=True)
    if not all_layers:
        st.caption("No overlays for this volume yet: demo volumes carry ground truth; predictions saved on "
                   "the Predict & review page appear here.")
    else:
        st.caption("Toggle, fade and restyle the layers under the image.")


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _patient_folder_cached(path: str) -> str | None:
    from core.multi_sequence import patient_folder_of

    found = patient_folder_of(path)
    return None if found is None else str(found)


def _patient_folder(path: Path) -> Path | None:
    found = _patient_folder_cached(str(path))
    return None if found is None else Path(found)


@st.cache_resource(max_entries=2, show_spinner="Loading the four sequences…")
def _sequences(folder: str, mtime: float):
    from core.multi_sequence import load_sequences

    return load_sequences(folder)


def _four_sequences(folder: Path, volume: Volume, z: int) -> None:
    """FLAIR, T1, T1ce and T2 of the patient side by side at the Viewer's axial slice, each with its own
    window, the tumour mask outlined."""
    from core.multi_sequence import SEQUENCES, sequence_views

    try:
        sequences = _sequences(str(folder), path_mtime(folder))
        views = sequence_views(sequences, min(max(z, 0), sequences.shape[0] - 1))
    except (SlicewiseError, IndexError) as exc:
        st.error(str(exc))
        return
    cols = st.columns(4)
    for col, name in zip(cols, SEQUENCES, strict=True):
        image = views.images[name]
        if views.mask is not None and views.mask.any():
            mask_layer = render.OverlayLayer("mask", views.mask[None], colour=(255, 60, 60), opacity=0.9,
                                             style="contour")
            image = render.render_slice(image[None].astype(np.float32), "axial", 0, (127.5, 255.0),
                                        [mask_layer])
        col.image(image, caption=f"{name.upper()} · slice {views.z + 1}", width="stretch")
    st.caption(f"{folder.name}: the four co-registered sequences at the Viewer's axial slice, each with "
               "its own window (1st–99th percentile of the brain); the tumour mask outlined in red.")


# The Viewer is the image: less empty space above the title, so that the slice and its slider fit a
# 768 px high window (the browser viewer sizes the canvas to the height left below its top).
COMPACT = "<style>[data-testid='stMainBlockContainer'] { padding-top: 2.5rem; }</style>"


def main() -> None:
    release_freed_memory()  # what the last run's messages left once sent (freed after that run ended)
    st.html(COMPACT)
    st.title("Viewer")
    root = data_root()
    path, name = _pick_source(root)
    if path is None:
        st.info(f"Nothing to show yet. Data root: `{root}`.")
        return
    try:
        volume = load_volume_cached(path)
        truth = truth_cached(path, volume)
    except SlicewiseError as exc:
        st.error(f"Cannot open {name}: {exc}", icon=":material/error:")
        return
    _header(volume, name)
    view_col, side_col = st.columns([3, 1], gap="medium")
    with side_col:
        orientation = "axial" if volume.is_2d else st.radio(
            "Orientation", list(render.ORIENTATIONS), horizontal=True, key="viewer_orientation")
        mode = st.radio("Stepping", [FAST, PLAIN], key="viewer_mode", horizontal=True,
                        help="Fast: slices step, window and overlays change in the browser (wheel, arrow "
                             "keys, right-drag). Server: a plain slider, each change redrawn by the server.")
        all_layers, notes, problems = available_layers(volume, truth, settings.annotations_path(),
                                                       settings.runs_root())
    n = render.slice_count(volume.shape, orientation)
    index = _current_index(n, orientation)
    source, probe, view = None, None, None
    if mode == PLAIN:
        with side_col:
            window = _window_controls(volume)
            st.markdown("**Overlays**")
            for problem in problems:
                st.error(problem)
            layers = _overlay_controls(all_layers, notes)
        with view_col:
            index = _plain_viewer(volume, orientation, window, layers, index, n)
            if layers:
                st.markdown(layer_legend(layers, orientation), unsafe_allow_html=True)
    else:
        source, unfit = volume_view(str(Path(path).resolve()), path_mtime(path), volume, all_layers)
        with view_col:
            index, probe, view = _browser_viewer(source, orientation, index)
        window, layers = _reported_window(volume, view), _reported_layers(all_layers, view)
        with side_col:
            _side_fast(volume, view, all_layers, notes, problems + unfit)
    _remember_index(orientation, index)
    with side_col:
        shape2d = render.extract_slice(volume.array, orientation, index, volume.direction).shape
        _readout_inputs(volume, orientation, index, probe, shape2d, fast=source is not None)
    patient = _patient_folder(path)
    names = ["Montage", "Header"] + (["Four sequences"] if patient is not None else [])
    tabs = st.tabs(names)
    with tabs[0]:
        _montage(volume, path, orientation, window, layers)
    with tabs[1]:
        _metadata(volume, index)
    if patient is not None:
        with tabs[2]:
            _four_sequences(patient, volume, _current_index(volume.shape[0], "axial"))
    if source is not None:
        slice_viewer_feed(source, key=VIEWER_KEY)  # the rest of the volume and the layers, once on screen
    release_freed_memory()  # this run's slice-sized temporaries: not carried into the next run's peak


main()
