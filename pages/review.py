"""Annotations: review annotated slices, export / import lung_bbox.csv, prepare the training set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import annotation_review as review
from core import settings
from core.annotations import BoxStore
from core.confine import allowed_roots, confine
from core.errors import SlicewiseError
from core.export import VolumeLocator, export_annotations
from pages._ui.loaders import data_root
from pages._ui.navigation import ensure_app_navigation

ensure_app_navigation()

ALL_VOLUMES = "All volumes"
STATUS_CHOICES = {"All": None, "Confirmed": review.CONFIRMED, "Unconfirmed proposals": review.UNCONFIRMED}
MAX_THUMBNAILS = 300
REQUEST_KEY = "annotate_request"  # read by pages/annotate.py
IOU_COLUMN = "IoU proposal→final"


@st.cache_resource(ttl=60, max_entries=2, show_spinner=False)
def _locator(root: str) -> VolumeLocator:
    return VolumeLocator(root)


@st.cache_data(max_entries=4096, show_spinner=False)
def _thumbnail(root: str, image: str, volume: str, z: int, box: tuple[float, ...]) -> str | None:
    row = review.ReviewRow(image, volume, z, "", "", box)  # type: ignore[arg-type]
    return review.thumbnail_url(_locator(root), row)


@st.cache_data(ttl=30, max_entries=4, show_spinner=False)
def _root_counts(root: str) -> review.RootCounts:
    return review.root_slice_counts(root)


def _volume_name(root: str, volume_id: str) -> str:
    """The volume's path under the data root (a series UID says little to a reader)."""
    try:
        return _locator(root).volume_path(volume_id).relative_to(Path(root)).as_posix()
    except (SlicewiseError, ValueError):
        return volume_id


def _volume_label(root: str, volume_id: str) -> str:
    if volume_id == ALL_VOLUMES:
        return volume_id
    name = _volume_name(root, volume_id)
    return name if name == volume_id else f"{name}  ·  …{volume_id[-10:]}"


def _filters(root: str, rows: list[review.ReviewRow]) -> list[review.ReviewRow]:
    volumes = sorted({r.volume for r in rows})
    cols = st.columns([2, 2, 2])
    volume = cols[0].selectbox("Volume", [ALL_VOLUMES, *volumes], key="review_volume",
                               format_func=lambda v: _volume_label(root, v))
    who = cols[1].multiselect("Annotator", review.annotators(rows), key="review_annotators",
                              placeholder="any annotator")
    status = cols[2].segmented_control("Status", list(STATUS_CHOICES), default="All", key="review_status")
    return review.filter_rows(rows, annotators=who, status=STATUS_CHOICES.get(status or "All"),
                              volume=None if volume == ALL_VOLUMES else volume)


def _thumbnails(root: str, rows: list[review.ReviewRow]) -> dict[str, str | None]:
    shown = rows[:MAX_THUMBNAILS]
    urls = {r.image: _thumbnail(root, r.image, r.volume, r.slice, r.box) for r in shown}
    for volume in {r.volume for r in shown}:
        _locator(root).forget(volume)  # thumbnails are cached; keep no volume in memory
    return urls


def _open_on_annotate(root: str, row: review.ReviewRow) -> None:
    try:
        path = _locator(root).volume_path(row.volume)
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    st.session_state[REQUEST_KEY] = {"path": str(path), "volume": row.volume, "slice": row.slice}
    name = st.session_state.get("annotator") or st.query_params.get("annotator")
    st.switch_page("pages/annotate.py", query_params={"annotator": name} if name else None)


def _table(root: str, rows: list[review.ReviewRow]) -> None:
    names = {v: _volume_name(root, v) for v in {r.volume for r in rows}}
    records = review.table_records(rows, _thumbnails(root, rows), names)
    frame = pd.DataFrame(records, columns=list(review.TABLE_COLUMNS))
    event = st.dataframe(
        frame, hide_index=True, on_select="rerun", selection_mode="single-row", key="review_table",
        row_height=72, column_order=["Thumbnail", "Volume", "Slice", "Annotator", "Status", "Updated",
                                     IOU_COLUMN],
        column_config={
            "Thumbnail": st.column_config.ImageColumn("Slice image", width="small"),
            "Volume": st.column_config.TextColumn("Volume", width="medium"),
            "Slice": st.column_config.NumberColumn("Slice", format="%d"),
            IOU_COLUMN: st.column_config.NumberColumn(IOU_COLUMN, format="%.3f",
                                                      help="IoU of the `auto` proposal with the box "
                                                           "a person saved (1 = accepted unchanged)"),
        },
    )
    if len(rows) > MAX_THUMBNAILS:
        st.caption(f"Thumbnails for the first {MAX_THUMBNAILS} rows; filter to see the others'.")
    picked = event.selection.rows if event is not None else []
    if picked and picked[0] < len(rows):
        row = rows[picked[0]]
        cols = st.columns([3, 1])
        cols[0].info(f"Selected slice {row.slice} of {_volume_label(root, row.volume)} "
                     f"({row.status}, by {row.annotator})")
        if cols[1].button("Open on the Annotate page", type="primary", key="review_open"):
            _open_on_annotate(root, row)


def _review_section(root: str, store: BoxStore) -> None:
    rows = review.review_rows(store)
    if not rows:
        st.info(f"No annotated slice yet in `{store.path}`. Draw boxes on the Annotate page.")
        return
    shown = _filters(root, rows)
    unconfirmed = sum(r.status == review.UNCONFIRMED for r in shown)
    cols = st.columns(3)
    cols[0].metric("Slices shown", len(shown))
    cols[1].metric("Confirmed", len(shown) - unconfirmed)
    cols[2].metric("Unconfirmed proposals", unconfirmed)
    summary = review.iou_summary(shown)
    st.caption(summary.text() if summary else "No confirmed proposal among these slices: no IoU yet.")
    _table(root, shown)


def _export_section(root: str, store: BoxStore) -> None:
    st.subheader("Export")
    st.session_state.setdefault("review_export_dir", str(review.default_export_dir(root)))
    out = st.text_input("Folder", key="review_export_dir",
                        help="lung_bbox.csv, train.csv (SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID, "
                             "path) and coco.json are written here")
    if st.button("Export", key="review_export", disabled=len(store) == 0):
        try:
            result = export_annotations(store, root, out, roots=allowed_roots(root))
        except (SlicewiseError, OSError) as exc:
            st.error(f"Export to {out} failed: {exc}")
        else:
            st.session_state["review_exported"] = {k: str(v) for k, v in result.items() if k != "missing"}
            st.session_state["review_export_missing"] = list(result["missing"])
    exported = st.session_state.get("review_exported")
    if exported:
        st.success(f"Written to `{Path(exported['lung_bbox']).parent}`")
        missing = st.session_state.get("review_export_missing") or []
        if missing:
            st.warning(f"{len(missing)} row(s) whose slice is not under {root} are only in lung_bbox.csv:\n\n"
                       + "\n".join(f"- {m}" for m in missing[:20]))
        files = review.exported_files(exported)
        for col, (key, name, data, mime) in zip(st.columns(max(1, len(files))), files, strict=False):
            col.download_button(f"Download {name}", data, file_name=name, mime=mime,
                                key=f"review_download_{key}", on_click="ignore")


def _import_section(root: str, store: BoxStore) -> None:
    st.subheader("Import")
    upload = st.file_uploader("A lung_bbox.csv from elsewhere (Image, Xmin, Ymin, Xmax, Ymax; Volume, "
                              "Slice and Annotator used when present)", type=["csv"], key="review_upload")
    if st.button("Import boxes", key="review_import", disabled=upload is None):
        who = st.session_state.get("annotator") or st.query_params.get("annotator") or "import"
        try:
            with st.spinner("Matching the rows to the slices under the data root…"):
                report, problems = review.import_csv_bytes(upload.getvalue(), upload.name, store, root,
                                                           annotator=who)
        except SlicewiseError as exc:
            st.error(str(exc))
            return
        st.session_state["review_import_report"] = {
            "summary": report.summary(), "unknown": report.unknown, "invalid": report.invalid,
            "problems": problems}
    _show_import_report(st.session_state.get("review_import_report"))


def _show_import_report(report: dict | None) -> None:
    if not report:
        return
    st.success(report["summary"])
    if report["unknown"]:
        st.warning(f"{len(report['unknown'])} row(s) name a slice that is not under the data root:")
        st.dataframe(pd.DataFrame(report["unknown"], columns=["Line", "Image"]), hide_index=True,
                     key="review_unknown")
    if report["invalid"]:
        lines = "\n".join(f"- {why}" for _, why in report["invalid"][:50])
        st.error(f"Invalid rows (not imported):\n\n{lines}")
    if report["problems"]:
        st.caption("Volumes that could not be read: " + "; ".join(report["problems"][:10]))


def _prepare_section(root: str) -> None:
    st.subheader("Prepare the lung-box training set")
    st.session_state.setdefault("review_prepare_dir", str(Path(root) / "prepared"))
    out = st.text_input("Output folder", key="review_prepare_dir")
    cols = st.columns(3)
    size = cols[0].number_input("Size (px)", min_value=8, max_value=2048, value=512, step=32,
                                key="review_size")
    val = cols[1].number_input("Validation fraction", min_value=0.0, max_value=0.9, value=0.2, step=0.05,
                               key="review_val_fraction")
    seed = cols[2].number_input("Seed", min_value=0, value=0, step=1, key="review_seed")
    cols = st.columns(2)
    split = cols[0].selectbox("Validation split", ("auto", "patient", "blocks"), key="review_split",
                              help="patient: whole patients held out; blocks: a block of each series' top "
                              "slices (2 slices left out between); auto: patients when there are two or "
                              "more, else blocks")
    proposals = cols[1].checkbox("Include unconfirmed proposals", key="review_include_proposals",
                                 help="boxes of the HU rule (auto) or of a model (model:<run>) that nobody "
                                 "confirmed; left out by default")
    if st.button("Prepare", key="review_prepare", type="primary"):
        _run_prepare(root, out, int(size), float(val), int(seed), split, bool(proposals))
    stats = st.session_state.get("review_prepared")
    if stats:
        _show_stats(stats)


def _run_prepare(root: str, out: str, size: int, val: float, seed: int, split: str,
                 include_proposals: bool) -> None:
    from core.models.lung_localizer.prepare import prepare_lung_dataset

    bar = st.progress(0.0, text="Preparing…")
    state = {"done": 0.0}

    def progress(message: str) -> None:
        state["done"] = review.progress_fraction(message) or state["done"]
        bar.progress(state["done"], text=message)

    try:
        target = confine(out, allowed_roots(root))  # a typed folder: only under the data / runs root
        prepared = prepare_lung_dataset(settings.annotations_path(), root, target, val_fraction=val,
                                        size=size, seed=seed, progress=progress, split=split,
                                        include_proposals=include_proposals)
    except (SlicewiseError, OSError) as exc:
        bar.empty()
        st.error(f"Prepare failed: {exc}")
        return
    bar.progress(1.0, text=f"Done: {prepared}")
    st.session_state["review_prepared"] = {**(review.prepared_stats(prepared) or {}), "out": str(prepared)}


def _show_stats(stats: dict) -> None:
    cols = st.columns(4)
    cols[0].metric("Train slices", stats.get("n_train", 0))
    cols[1].metric("Validation slices", stats.get("n_val", 0))
    cols[2].metric("Mean", f"{stats.get('mean', 0.0):.4f}")
    cols[3].metric("Std", f"{stats.get('std', 0.0):.4f}")
    st.caption(f"In `{stats.get('out')}` · {stats.get('size')} px · split by "
               f"{stats.get('split_by', 'series')}: {len(stats.get('train_groups', []))} train / "
               f"{len(stats.get('val_groups', []))} validation group(s). Mean and std are in [0, 1] units "
               "(value / 65535 of the reference scale).")
    for line in stats.get("skipped", []):
        st.warning(f"Skipped: {line}")


def main() -> None:
    st.title("Annotations")
    root = str(data_root())
    store = BoxStore(settings.annotations_path())
    try:
        store.check()
    except SlicewiseError as exc:
        st.error(f"{exc}\n\nFix or move the file; nothing is written to it until it parses again.")
        return
    counts = _root_counts(root)
    if counts.total:
        progress = review.ct_progress(store.rows(), counts)
        st.progress(progress.fraction, text=progress.text())
    tab_review, tab_files, tab_prepare = st.tabs(["Review", "Export / import", "Prepare training set"])
    with tab_review:
        _review_section(root, store)
    with tab_files:
        _export_section(root, store)
        _import_section(root, store)
    with tab_prepare:
        _prepare_section(root)


main()
