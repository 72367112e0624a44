"""Background jobs: training (and any other command) in a detached subprocess under `runs/<id>/`.

The pattern follows MONAI Label's async tasks: a job is a folder with its description
(`job.json`), its state (`status.json`: SUBMITTED -> QUEUED -> RUNNING -> DONE / ERROR /
STOPPED) and its log (`job.log`). No threads and no Streamlit here: pages poll these files.

- `core.jobs.files`: the job files and states; reading jobs and their run folders (via core.runs)
- `core.jobs.control`: submit, cancel, resume; devices and slots
- `core.jobs.supervisor`: `python -m core.jobs.supervisor <job dir>`, what runs each job
- `core.jobs.procs`: /proc, signals, process groups, the parent-death signal

The Train page's form helpers live in core.train_form.
"""

from core.jobs.control import (
    CANCEL_GRACE_S,
    cancel,
    check_settings,
    device_options,
    format_setting,
    gpu_usable,
    new_job_id,
    resolve_device,
    resumable,
    resume,
    slot_limit,
    submit,
    submit_command,
    train_command,
)
from core.jobs.files import (
    DONE,
    ERROR,
    FINAL_STATES,
    JOB_FILE,
    LOG_FILE,
    QUEUED,
    RUNNING,
    STATUS_FILE,
    STOPPED,
    SUBMITTED,
    Job,
    Progress,
    best_checkpoint,
    final_state,
    get,
    is_data_error,
    job_dir,
    last_error_line,
    list_checkpoints,
    list_jobs,
    metrics,
    progress,
    tail_log,
)
from core.jobs.procs import group_members, job_processes, pid_alive

__all__ = [
    "CANCEL_GRACE_S", "DONE", "ERROR", "FINAL_STATES", "JOB_FILE", "LOG_FILE", "QUEUED", "RUNNING",
    "STATUS_FILE", "STOPPED", "SUBMITTED", "Job", "Progress", "best_checkpoint", "cancel", "check_settings",
    "device_options", "final_state", "format_setting", "get", "gpu_usable", "group_members",
    "is_data_error", "job_dir", "job_processes", "last_error_line", "list_checkpoints", "list_jobs",
    "metrics", "new_job_id", "pid_alive", "progress", "resolve_device", "resumable", "resume",
    "slot_limit", "submit", "submit_command", "tail_log", "train_command",
]

# The Train page's helpers moved to core.train_form; these names still resolve here for older callers.
_FORM_NAMES = frozenset({
    "SettingField", "setting_fields", "default_preset", "changed_settings", "DatasetChoice",
    "candidate_datasets", "format_duration", "job_row", "best_metric", "best_metric_text", "metric_series",
})


def __getattr__(name: str):
    if name in _FORM_NAMES:
        from core import train_form  # imported on first use: train_form itself imports core.jobs

        return getattr(train_form, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
