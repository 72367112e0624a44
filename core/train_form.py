"""What the Train page shows and asks, decided here so that the page stays thin.

The settings form is generated from a family's ModelSpec (a field per default, typed by the
default's value), so a new family needs no page change; the data-set list comes from the
family's `dataset_rule`; the jobs table and curves are plain values read from the job files.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import jobs, runs

# ---------------------------------------------------------------- paths typed in the browser

PATH_SETTING_SUFFIXES = ("_path", "_dir", "_csv")


def is_path_setting(key: str) -> bool:
    """A setting that names a file or folder (weights_path, cache_dir, annotations_csv, …)."""
    return key.endswith(PATH_SETTING_SUFFIXES)


def path_roots(key: str, data_root: Path | str) -> list[Path]:
    """Where a path setting typed in the browser may point: the data and runs roots, plus the
    torchvision weights cache for `*weights_path` and the annotation folder for `*_csv`."""
    from core.confine import allowed_roots

    roots = allowed_roots(data_root)
    if key.endswith("weights_path"):
        from core.models.imagenet import hub_folder

        roots.append(hub_folder())
    if key.endswith("_csv"):
        from core.settings import annotations_path

        roots.append(annotations_path().parent)
    return roots


def confine_job(data: Path | str, settings: dict[str, Any], data_root: Path | str) -> tuple[Path, dict]:
    """The data folder and the settings of a job started from the browser, with every path confined
    (core.confine): the data folder under the data or runs root, each non-empty path setting under
    its `path_roots`. PathOutsideRootError names the setting and the path; the CLI is not confined."""
    from core.confine import PathOutsideRootError, allowed_roots, confine

    folder = confine(data, allowed_roots(data_root))
    confined = dict(settings)
    for key, value in settings.items():
        if is_path_setting(key) and isinstance(value, str) and value.strip():
            try:
                confined[key] = str(confine(value, path_roots(key, data_root)))
            except PathOutsideRootError as exc:
                raise PathOutsideRootError(value, [Path(r) for r in exc.roots],
                                           f" (setting {key})") from None
    return folder, confined


# ---------------------------------------------------------------- the settings form


@dataclass(frozen=True)
class SettingField:
    """One field of the training form, derived from a family's default value and its choices."""

    key: str
    kind: str  # "checkbox", "int", "float", "text" or "choice"
    default: Any
    options: tuple = ()
    help: str = ""
    step: float | int | None = None
    format: str | None = None


def setting_fields(spec: Any, skip: tuple[str, ...] = ("device",), preset: str | None = None
                   ) -> list[SettingField]:
    """The form for a ModelSpec: one field per default, typed by the default's value, so that a
    new family needs no page change. `device` is skipped: the page offers it on its own.
    With `preset`, the fields start at that preset's values instead of the defaults."""
    from core.train.config import range_text

    fields = []
    start = spec.preset_settings(preset) if preset else spec.defaults
    for key, default in start.items():
        if key in skip:
            continue
        options = tuple(spec.choices.get(key, ()))
        helptext = "; ".join(t for t in (spec.help.get(key, ""), range_text(key, default)) if t)
        if options:
            fields.append(SettingField(key, "choice", default, options, helptext))
        elif isinstance(default, bool):
            fields.append(SettingField(key, "checkbox", default, help=helptext))
        elif isinstance(default, int):
            fields.append(SettingField(key, "int", default, help=helptext, step=1, format="%d"))
        elif isinstance(default, float):
            fields.append(SettingField(key, "float", default, help=helptext, step=_float_step(default),
                                       format="%g"))
        else:
            fields.append(SettingField(key, "text", str(default), help=helptext))
    return fields


def default_preset(spec: Any, devices: list[str]) -> str:
    """The preset the Train page opens with: the reference settings where a GPU can run them,
    else the quick preset when the family has one (the reference takes days on a CPU)."""
    names = spec.preset_names()
    if "cuda" in devices:
        return names[0]
    from core.models import QUICK_PRESET

    return QUICK_PRESET if QUICK_PRESET in names else names[0]


def _float_step(value: float) -> float:
    """A step one decade below the value (lr 1e-4 -> 1e-5, 0.2 -> 0.01); 0.01 for zero."""
    if value == 0:
        return 0.01
    return 10.0 ** (math.floor(math.log10(abs(value))) - 1)


def changed_settings(defaults: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The form values that differ from the defaults (what goes on the command line as --set),
    converted back to the default's type (a float field may come back as an int)."""
    changed = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(default, float) and not isinstance(value, bool):
            value = float(value)
            if math.isclose(value, default, rel_tol=1e-9, abs_tol=1e-15):
                continue
        elif isinstance(default, int) and not isinstance(default, bool):
            value = int(value)
        if value != default:
            changed[key] = value
    return changed


# ---------------------------------------------------------------- the data set


@dataclass(frozen=True)
class DatasetChoice:
    path: Path
    label: str


def candidate_datasets(family: str, root: Path | str, max_depth: int = 3,
                       max_folders: int = 2000) -> list[DatasetChoice]:
    """Folders under the data root that look like training data for `family`, best guess first.

    The rule is the family's `ModelSpec.dataset_rule`; families without one get the root and
    its sub-folders. A box family also trains from the data root itself (the trainer prepares
    the annotated slices first), so the root is offered last for it. Labels say what each is:
    "demo data (…)" for the demo set (core.demo's manifest), "annotated slices of the data root".
    """
    from core.models import get_spec

    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    try:
        spec = get_spec(family)
    except KeyError:
        spec = None
    rule = spec.dataset_rule if spec is not None else None
    found: list[DatasetChoice] = []
    for seen, (folder, depth) in enumerate(_walk_folders(root, max_depth)):
        if seen >= max_folders:
            break
        try:
            names = {entry.name for entry in os.scandir(folder)}
        except OSError:
            continue
        if rule is None and depth <= 1 or rule is not None and _safe_rule(rule, folder, names):
            found.append(DatasetChoice(folder, _dataset_label(folder, root)))
    if spec is not None and spec.review == "boxes" and not any(c.path == root for c in found):
        found.append(DatasetChoice(root, ROOT_LABEL))
    return found


ROOT_LABEL = "annotated slices of the data root"


def _dataset_label(folder: Path, root: Path) -> str:
    """`demo data (<where>)` inside a demo set written by core.demo, else the path under the root."""
    demo = _demo_root(folder, root)
    if demo is None:
        return _relative_label(folder, root)
    return f"demo data ({folder.name if folder == root else folder.relative_to(root)})"


def _demo_root(folder: Path, root: Path) -> Path | None:
    """The demo set (a folder with core.demo's manifest) that holds `folder`, within the data root."""
    from core.demo import MANIFEST

    for candidate in (folder, *folder.parents):
        if (candidate / MANIFEST).is_file():
            return candidate
        if candidate == root or root not in candidate.parents:
            return None
    return None


def demo_hint(choices: list[DatasetChoice], data_root: Path) -> str:
    """When no demo set is among the choices: where to get one (every family learns its demo data)."""
    if any(c.label.startswith("demo data") for c in choices):
        return ""
    return (f"No demo data under {data_root}: Home → Create demo data writes a set every model family can "
            "train on without annotations (it is then offered here as \"demo data (demo)\").")


def dataset_summary(spec: Any, folder: Path | str | None, settings: dict[str, Any] | None = None,
                    data_root: Path | str | None = None) -> str:
    """What training `spec` on `folder` will use (markdown), from the family's optional
    `dataset_summary(folder, settings) -> str` (a callable or a LazyRef); "" when the family has
    none or nothing to say. A summary that fails names its error instead of breaking the page.
    With `data_root` (the page's), the folder and path settings must stay under their roots (as
    `confine_job` asks at Start): else "" (the data-set note says why), and nothing is read."""
    summarise = getattr(spec, "dataset_summary", None)
    if summarise is None or folder is None:
        return ""
    if data_root is not None:
        from core.errors import SlicewiseError

        try:
            folder, settings = confine_job(folder, dict(settings or {}), data_root)
        except SlicewiseError:
            return ""
    full = {**getattr(spec, "defaults", {}), **(settings or {})}
    try:
        return str(summarise(Path(folder), full) or "").strip()
    except Exception as exc:  # noqa: BLE001 - a family's summary must not take the Train page down
        return f"Could not summarise `{folder}` ({type(exc).__name__}: {exc})."


def dataset_note(spec: Any, choice: DatasetChoice | None, data_root: Path,
                 typed: bool = False, settings: dict[str, Any] | None = None) -> tuple[str, str]:
    """(level, text) the page shows under the data-set selector: what training will do with the
    pick ("info"), or why it cannot work ("error") before anything starts. The family's
    `spec.dataset_check(folder[, settings]) -> str` (optional) names a problem; "" means none. A
    `typed` folder (not from the list) must also pass the family's `dataset_rule`. With `settings`
    (the ones chosen on the page), their path settings must stay under their roots (as `confine_job`
    asks at Start); a check that takes a second argument gets them over the family's defaults
    (the defaults alone without `settings`): whether proposals count, which annotation file, ..."""
    hint = getattr(spec, "dataset_hint", "") or ""
    if choice is None:
        return "warning", (f"No folder under {data_root} looks like training data for {spec.name}"
                           + (f" (expected: {hint})" if hint else "") + ". Type a folder, or create "
                           "the demo data on Home.")
    if typed:
        from core.confine import PathOutsideRootError, allowed_roots, confine

        folder = Path(choice.path).expanduser()
        try:  # nothing outside the data / runs root is listed, not even whether it exists
            confine(folder, allowed_roots(data_root))
        except PathOutsideRootError as exc:
            return "error", str(exc)
        if not folder.is_dir():
            return "error", f"{folder}: no such folder"
        rule = getattr(spec, "dataset_rule", None)
        try:
            names = {entry.name for entry in os.scandir(folder)}
        except OSError as exc:
            return "error", f"{folder}: unreadable ({exc})"
        if rule is not None and not _safe_rule(rule, folder, names):
            return "error", (f"{folder} does not look like training data for {spec.title or spec.name}"
                             + (f" (expected: {hint})" if hint else ""))
    if settings is not None:
        from core.errors import SlicewiseError

        try:  # a path setting outside its roots is refused here already, before the check reads it
            _, settings = confine_job(choice.path, settings, data_root)
        except SlicewiseError as exc:
            return "error", str(exc)
    settings = {**getattr(spec, "defaults", {}), **(settings or {})}
    check = spec.dataset_check
    if check is not None:
        try:
            problem = str(run_dataset_check(check, Path(choice.path), settings) or "")
        except OSError as exc:
            problem = f"{choice.path}: unreadable ({exc})"
        if problem:
            return "error", problem
    return "info", f"Trains on `{choice.path}`." + (f" {spec.title or spec.name} learns from: {hint}."
                                                     if hint else "")


def run_dataset_check(check: Any, folder: Path, settings: dict[str, Any]) -> Any:
    """A family's `dataset_check` (a callable or a LazyRef): `check(folder, settings)` when it takes a
    second argument, else `check(folder)` (the one-argument hook of older families still works)."""
    from core.models import LazyRef

    target = check.resolve() if isinstance(check, LazyRef) else check
    return target(folder, settings) if _takes_two(target) else target(folder)


def _takes_two(function: Any) -> bool:
    """Whether `function` accepts two positional arguments (a `*args` counts)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the one-argument hook
        return False
    kinds = [p.kind for p in parameters]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(kind in positional for kind in kinds) >= 2


def _safe_rule(rule, folder: Path, names: set[str]) -> bool:
    try:
        return bool(rule(folder, names))
    except OSError:
        return False


def _walk_folders(root: Path, max_depth: int):
    """Breadth-first folders under root (root first), skipping hidden ones."""
    queue = [(root, 0)]
    while queue:
        folder, depth = queue.pop(0)
        yield folder, depth
        if depth >= max_depth:
            continue
        try:
            subs = sorted(e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        except OSError:
            continue
        queue.extend((Path(p), depth + 1) for p in subs)


def _relative_label(folder: Path, root: Path) -> str:
    return "the data root" if folder == root else str(folder.relative_to(root))


# ---------------------------------------------------------------- the jobs table and detail


def format_duration(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 2 h 04 min; an en dash for unknown."""
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def job_row(job: jobs.Job) -> dict[str, Any]:
    """One line of the jobs table: id, family, state, best metric, epoch k/n, ETA, elapsed, reason
    (best early, so that a narrow window still shows it; the data folder is in the job's detail)."""
    prog = jobs.progress(job.id, job.dir.parent)
    epoch = f"{prog.epoch}/{prog.max_epochs}" if prog and prog.max_epochs else "–"
    running = job.state == jobs.RUNNING
    elapsed = (job.ended or time.time()) - job.started if job.started else None
    return {
        "job": job.id, "family": job.family or job.kind, "state": job.state, "best": best_metric_text(job),
        "epoch": epoch, "ETA": format_duration(prog.eta_s) if running and prog else "–",
        "elapsed": format_duration(elapsed), "reason": job.reason,
    }


def best_metric(job: jobs.Job) -> tuple[str, float, bool] | None:
    """(name, value, final): result.json's best metric, else the lowest val_loss so far."""
    found = runs.best_metric(job.dir)
    if found is not None:
        return found[0], found[1], True
    losses = [r["val_loss"] for r in runs.metrics(job.dir) if _number(r.get("val_loss"))]
    return ("val_loss", float(min(losses)), False) if losses else None


def best_metric_text(job: jobs.Job) -> str:
    """`val_loss 0.0412`, with "(so far)" while the run has no result."""
    best = best_metric(job)
    if best is None:
        return ""
    name, value, final = best
    return f"{name} {value:.4g}" + ("" if final else " (so far)")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SKIP_SERIES = {"epoch", "lr", "time", "step", "epoch_time_s"}

Series = dict[str, tuple[list, list]]


def metric_series(rows: list[dict[str, Any]]) -> tuple[Series, Series]:
    """(losses, other metrics) as name -> (epochs, values), for the curves.

    Percentile/min/max companions (val_iou_p10, ...) are left out: the mean tells the story.
    Epochs count from 1, as the progress line ("epoch 2 of 5") and the jobs table do.
    """
    losses: Series = {}
    others: Series = {}
    for index, row in enumerate(rows):
        epoch = row.get("epoch", index)
        epoch = epoch + 1 if _number(epoch) else index + 1
        for key, value in row.items():
            if key in _SKIP_SERIES or not _number(value):
                continue
            if re.search(r"_(p\d+|min|max)$", key):
                continue
            target = losses if "loss" in key else others
            xs, ys = target.setdefault(key, ([], []))
            xs.append(epoch)
            ys.append(value)
    return losses, others


def series_label(name: str) -> str:
    """A curve's legend name: `train_loss` -> "train loss", `val_iou` -> "validation iou"."""
    text = re.sub(r"^val_", "validation ", re.sub(r"^train_", "train ", name))
    return text.replace("_", " ")


# ---------------------------------------------------------------- evaluation.json


@dataclass(frozen=True)
class EvaluationView:
    """What a family measured on its test split (`evaluation.json`, any family), checked and plain:
    each part is None / empty when missing or malformed, so a page draws what there is."""

    summary: dict[str, float]
    classes: list[str] | None = None
    matrix: list[list[float]] | None = None
    roc: tuple[list[float], list[float], float | None] | None = None
    cases: list[dict[str, Any]] | None = None

    @property
    def empty(self) -> bool:
        return not self.summary and self.matrix is None and self.roc is None and not self.cases


def evaluation_view(run: Path) -> EvaluationView:
    """The run's evaluation.json (core.runs.evaluation) as an EvaluationView."""
    raw = runs.evaluation(run)
    summary = {str(k): float(v) for k, v in (raw.get("summary") or {}).items() if _number(v)} \
        if isinstance(raw.get("summary"), dict) else {}
    classes, matrix = _confusion(raw.get("confusion_matrix"))
    cases = raw.get("cases")
    cases = [c for c in cases if isinstance(c, dict)] if isinstance(cases, list) else None
    return EvaluationView(summary, classes, matrix, _roc(raw.get("roc")), cases or None)


def _confusion(value: Any) -> tuple[list[str] | None, list[list[float]] | None]:
    if not isinstance(value, dict):
        return None, None
    classes, matrix = value.get("classes"), value.get("matrix")
    if not isinstance(classes, list) or not isinstance(matrix, list) or len(matrix) != len(classes):
        return None, None
    if not all(isinstance(r, list) and len(r) == len(classes) and all(map(_number, r)) for r in matrix):
        return None, None
    return [str(c) for c in classes], [[float(v) for v in row] for row in matrix]


def _roc(value: Any) -> tuple[list[float], list[float], float | None] | None:
    if not isinstance(value, dict):
        return None
    fpr, tpr, auc = value.get("fpr"), value.get("tpr"), value.get("auc")
    if not isinstance(fpr, list) or not isinstance(tpr, list) or len(fpr) != len(tpr) or len(fpr) < 2:
        return None
    if not all(map(_number, fpr)) or not all(map(_number, tpr)):
        return None
    return [float(v) for v in fpr], [float(v) for v in tpr], float(auc) if _number(auc) else None
