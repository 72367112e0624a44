"""Train: pick a family, a data set and settings; start a background job; follow the jobs live.

UI only. Jobs run outside this script (core.jobs); this page reads their status files and
polls them every 2 s in a fragment. What to offer and show is decided in core.train_form.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from core import jobs, settings, train_form
from core.errors import SlicewiseError
from core.models import list_specs
from pages._ui.evaluation import show_evaluation
from pages._ui.navigation import ensure_app_navigation

ensure_app_navigation()

st.title("Train")

runs_root = settings.runs_root()
data_root = Path(st.session_state.get("data_root") or settings.data_root())
specs = {spec.name: spec for spec in list_specs()}


def _start(family: str, data: Path, values: dict, device: str) -> None:
    spec = specs[family]
    try:  # every path typed here stays under the data / runs root (core.confine)
        changed = train_form.changed_settings(spec.defaults, values)
        data, chosen = train_form.confine_job(data, changed, data_root)
        job = jobs.submit(family, data, chosen, device=device, runs_root=runs_root)
    except SlicewiseError as exc:
        st.session_state["train_message"] = str(exc)
        return
    st.session_state["train_started"] = job.id  # the jobs panel shows it until the job ends
    st.session_state["train_job_pick"] = job.id


def _setting_widget(field: train_form.SettingField, key: str):
    label = field.key
    if field.kind == "choice":
        return st.selectbox(label, field.options, index=field.options.index(field.default), key=key,
                            help=field.help or None)
    if field.kind == "checkbox":
        return st.checkbox(label, value=field.default, key=key, help=field.help or None)
    if field.kind in ("int", "float"):
        return st.number_input(label, value=field.default, step=field.step, format=field.format, key=key,
                               help=field.help or None)
    return st.text_input(label, value=field.default, key=key, help=field.help or None)


def _pick_data(family: str, spec, column, choices: list) -> tuple[train_form.DatasetChoice | None, bool]:
    """The data-set selector over `choices`: the pick (None when there is none) and whether it was typed."""
    hint = spec.dataset_hint or f"folders under the data root {data_root} that suit {family}"
    if choices:
        return column.selectbox("Data set", choices, format_func=lambda c: c.label,
                                key=f"train_data_{family}", help=hint), False
    typed = column.text_input("Data folder", key=f"train_data_path_{family}", help=hint,
                              placeholder=f"no suitable folder found under {data_root}")
    return (train_form.DatasetChoice(Path(typed), typed), True) if typed else (None, False)


def _data_note(spec, choices: list, picked, typed: bool, chosen: dict) -> tuple[str, str]:
    """What the page says about the pick (level, text), checked with the chosen settings."""
    level, note = train_form.dataset_note(spec, picked, data_root, typed=typed, settings=chosen)
    if level == "error" and choices and train_form.demo_hint(choices, data_root):
        note += "\n\n" + train_form.demo_hint(choices, data_root)
    return level, note


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def _summary(family: str, data: str, chosen: tuple, root: str) -> str:
    """The family's dataset_summary for a data set and settings (paths confined to the data / runs
    root); kept 10 s (reruns come often)."""
    return train_form.dataset_summary(specs[family], Path(data) if data else None, dict(chosen), Path(root))


def _chosen_settings(spec, family: str, preset: str) -> dict:
    """The preset's settings with the values typed in the settings below (their widgets' state)."""
    chosen = spec.preset_settings(preset)
    prefix = f"train_set_{family}_{preset}_"
    return {key: st.session_state.get(prefix + key, value) for key, value in chosen.items()}


def new_job_form() -> None:
    if not specs:
        st.info("No model family is registered.")
        return
    top = st.columns([2, 2, 1])
    family = top[0].selectbox("Model family", list(specs), format_func=lambda n: specs[n].title or n,
                              key="train_family")
    spec = specs[family]
    choices = train_form.candidate_datasets(family, data_root)
    picked, typed = _pick_data(family, spec, top[1], choices)
    data = picked.path if picked is not None else None
    devices = jobs.device_options()
    where = "CUDA GPU found" if "cuda" in devices else "no CUDA GPU found: training on the CPU"
    device = top[2].selectbox("Device", devices, key="train_device", help=where)
    top[2].caption(where)
    note_slot = st.empty()  # filled once the preset is known: the check reads the chosen settings
    presets = spec.preset_names()
    preset = st.radio("Settings", presets, index=presets.index(train_form.default_preset(spec, devices)),
                      horizontal=True, key=f"train_preset_{family}",
                      help="reference = the published pipeline's values (meant for a GPU)")
    chosen = _chosen_settings(spec, family, preset)
    level, note = _data_note(spec, choices, picked, typed, chosen)
    with note_slot:
        {"error": st.error, "warning": st.warning}.get(level, st.caption)(note)
    summary = _summary(family, str(data) if data is not None else "", tuple(sorted(chosen.items())),
                       str(data_root))
    if summary:
        st.info("**What training will use** (with the settings below)\n\n" + summary,
                icon=":material/dataset:")
    if spec.description:
        st.caption(spec.description)
    # no st.form: a changed setting reruns the page, so that "What training will use" above follows it
    with st.container(border=True, key=f"train_form_{family}"):
        with st.expander(f"Settings (prefilled: {preset})", expanded=False):
            columns = st.columns(4)
            values = {}
            for i, field in enumerate(train_form.setting_fields(spec, preset=preset)):
                with columns[i % 4]:
                    values[field.key] = _setting_widget(field, f"train_set_{family}_{preset}_{field.key}")
        submitted = st.button("Start training", type="primary", key=f"train_start_{family}",
                              disabled=data is None or level == "error")
    if submitted and data is not None:
        _start(family, data, values, device)
    message = st.session_state.pop("train_message", None)
    if message:
        st.error(message)


def _cancel(job_id: str) -> None:
    try:
        jobs.cancel(job_id, runs_root=runs_root)
    except SlicewiseError as exc:
        st.session_state["jobs_message"] = str(exc)


def _resume(job_id: str) -> None:
    try:
        jobs.resume(job_id, runs_root=runs_root)
    except SlicewiseError as exc:
        st.session_state["jobs_message"] = str(exc)


STATE_COLOURS = {jobs.DONE: "green", jobs.ERROR: "red", jobs.STOPPED: "orange", jobs.RUNNING: "blue",
                 jobs.QUEUED: "violet", jobs.SUBMITTED: "grey"}


def _curve(series: dict, title: str, y_title: str) -> go.Figure:
    figure = go.Figure()
    last_epoch = max((max(epochs) for epochs, _ in series.values() if epochs), default=0)
    for name, (epochs, values) in series.items():
        figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers",
                                    name=train_form.series_label(name)))
    figure.update_layout(title=title, height=300, margin=dict(l=10, r=10, t=40, b=10), showlegend=True,
                         legend=dict(orientation="h", yanchor="bottom", y=-0.45),
                         xaxis=dict(title="epoch", tickformat="d",
                                    dtick=1 if last_epoch < 10 else None),
                         yaxis=dict(title=y_title))
    return figure


def _state_line(job: jobs.Job) -> None:
    if job.state == jobs.ERROR:
        st.error(job.reason or "failed")
        if jobs.is_data_error(job):
            st.caption("The data or the settings were refused: fix them and start a new job.")
    elif job.state == jobs.STOPPED:
        st.warning("Stopped: " + (job.reason or "cancelled"))


def job_detail(job: jobs.Job) -> None:
    prog = jobs.progress(job.id, runs_root=runs_root)
    row = train_form.job_row(job)
    st.badge(job.state, color=STATE_COLOURS.get(job.state, "grey"))
    cols = st.columns(4)
    cols[0].metric("Epoch", row["epoch"])
    cols[1].metric("ETA", row["ETA"])
    cols[2].metric("Elapsed", row["elapsed"])
    best = train_form.best_metric(job)
    cols[3].metric(f"Best {best[0]}" if best else "Best", f"{best[1]:.4g}" if best else "–",
                   help=None if best is None or best[2] else "so far; final when the run ends")
    if prog is not None and prog.fraction is not None and not job.final:
        st.progress(prog.fraction, text=f"epoch {prog.epoch} of {prog.max_epochs}, step {prog.step}")
    _state_line(job)
    buttons = st.columns([1, 1, 4])
    if not job.final:
        buttons[0].button("Cancel", key=f"cancel_{job.id}", on_click=_cancel, args=(job.id,))
    if jobs.resumable(job):
        buttons[1].button("Resume", key=f"resume_{job.id}", on_click=_resume, args=(job.id,),
                          help="continue from the last checkpoint in the same run folder")
    losses, others = train_form.metric_series(jobs.metrics(job.id, runs_root=runs_root))
    if losses or others:
        charts = st.columns(2)
        if losses:
            charts[0].plotly_chart(_curve(losses, "Loss: train vs validation", "loss"), key=f"loss_{job.id}")
        if others:
            charts[1].plotly_chart(_curve(others, "Validation metrics", "value"), key=f"metric_{job.id}")
    else:
        st.caption("Curves appear after the first epoch.")
    show_evaluation(train_form.evaluation_view(job.dir), key=f"eval_{job.id}")
    best_ckpt = jobs.best_checkpoint(job.id, runs_root=runs_root)
    if best_ckpt is not None:
        st.caption(f"Best checkpoint: `{best_ckpt}`")
    st.caption(f"Run folder: `{job.dir}` · data: `{job.data}` · device: {job.device}")
    st.code(jobs.tail_log(job.id, 30, runs_root=runs_root) or "(no output yet)", language=None)


def _started_banner(by_id: dict[str, jobs.Job]) -> None:
    """"Started job ..." while the job just started from this page has not ended."""
    started = by_id.get(st.session_state.get("train_started", ""))
    if started is None or started.final:
        st.session_state.pop("train_started", None)
        return
    st.success(f"Started job {started.id} ({started.state}).")


# Widths that fit the page at 1366 px with the sidebar open (about 900 px): "best" never scrolls away.
JOB_COLUMNS = {
    "job": st.column_config.TextColumn("job", width=175),
    "family": st.column_config.TextColumn("family", width=115),
    "state": st.column_config.TextColumn("state", width=85),
    "best": st.column_config.TextColumn("best", width=145, help="best validation metric (final or so far)"),
    "epoch": st.column_config.TextColumn("epoch", width=60),
    "ETA": st.column_config.TextColumn("ETA", width=65),
    "elapsed": st.column_config.TextColumn("elapsed", width=85),
    "reason": st.column_config.TextColumn("reason", width=160),
}


@st.fragment(run_every=2)
def jobs_panel() -> None:
    message = st.session_state.pop("jobs_message", None)
    if message:
        st.error(message)
    all_jobs = jobs.list_jobs(runs_root)
    if not all_jobs:
        st.info(f"No jobs yet in {runs_root}. Start one above.")
        return
    by_id = {job.id: job for job in all_jobs}
    _started_banner(by_id)
    st.dataframe([train_form.job_row(job) for job in all_jobs], hide_index=True, key="train_jobs_table",
                 column_config=JOB_COLUMNS)
    if st.session_state.get("train_job_pick") not in by_id:
        st.session_state["train_job_pick"] = all_jobs[0].id

    def label(job_id: str) -> str:
        return f"{job_id} · {by_id[job_id].family or by_id[job_id].kind}"

    chosen = st.selectbox("Job", list(by_id), key="train_job_pick", format_func=label)
    job_detail(by_id[chosen])


new_job_form()
st.subheader("Jobs")
jobs_panel()
