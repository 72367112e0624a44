"""What the Annotate page decides, without Streamlit: what the box canvas's edits mean for the store,
which of them are new, the page's keys, slice navigation and progress.

The box canvas (pages/_ui/box_canvas.py) is one component for the whole page. Each finished drag
becomes an *edit*: {seq, volume, slice, image, box}, naming the slice it was drawn on, whatever slice
is on screen when the page receives it. The component keeps every edit the page has not acknowledged
in its state value (a list), so edits coalesced into one page run are all there; the page applies each
`seq` once (`new_edits`) and acknowledges them back. A box is stored as fractions of the slice width /
height.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.annotations import BoxStore, InvalidBoxError, normalise_box
from core.boxes import Box
from core.propose import propose_lung_box, propose_volume
from core.volume import Volume

AUTO_ANNOTATOR = "auto"
MODEL_PREFIX = "model:"
MIN_BOX_FRACTION = 0.004  # a click without a drag is not a box (2 px of a 512 px canvas)

# How each kind of stored box is drawn: a person's red, an HU-rule proposal orange, a model's cyan.
BOX_COLOURS = {"person": "#ff4b4b", "rule": "#ffa126", "model": "#22d3ee"}


def box_kind(row: Mapping[str, Any] | None) -> str | None:
    """Who drew a stored box: person, rule (annotator auto) or model (model:<run>); None: no row."""
    if row is None:
        return None
    who = str(row.get("Annotator") or "")
    if who == AUTO_ANNOTATOR:
        return "rule"
    return "model" if who.startswith(MODEL_PREFIX) else "person"


# ------------------------------------------------------------------------------------ canvas edits


@dataclass(frozen=True)
class Edit:
    """A box drawn (or moved, resized) on the canvas: `slice` is where it was drawn, 0-based."""

    seq: str
    volume: str
    slice: int
    image: str
    box: Box


def parse_edit(item: Any) -> Edit | None:
    """An Edit from one entry of the component's value; None for anything malformed (never raises)."""
    if not isinstance(item, Mapping):
        return None
    try:
        seq, volume, image = str(item["seq"]), str(item["volume"]), str(item["image"])
        z = item["slice"]
        if isinstance(z, bool) or not isinstance(z, int | float) or int(z) != z or z < 0:
            return None
        x0, y0, x1, y1 = (float(v) for v in item["box"])
        box = normalise_box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    except (KeyError, TypeError, ValueError, InvalidBoxError):
        return None
    if not seq or not volume or not image:
        return None
    if box[2] - box[0] < MIN_BOX_FRACTION or box[3] - box[1] < MIN_BOX_FRACTION:
        return None
    return Edit(seq, volume, int(z), image, box)


def new_edits(value: Any, handled: Iterable[str]) -> tuple[list[Edit], list[str]]:
    """(edits to store, in the order drawn; seqs now handled) from the component's value.

    `value` is the component state ({"edits": [...]}, oldest first) or the list itself; `handled`
    the seqs the page already dealt with. An edit is stored once: its seq is never applied again, so
    an old value arriving again (every page run carries it) never overwrites what happened since
    (a Delete, an Undo, a later drag). Of several new edits of one slice only the last is stored.
    Malformed entries are marked handled and dropped.
    """
    items = value.get("edits") if isinstance(value, Mapping) else value
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        return [], []
    done = set(handled)
    fresh: list[Edit] = []
    seqs: list[str] = []
    for item in items:
        seq = str(item.get("seq")) if isinstance(item, Mapping) and item.get("seq") is not None else None
        if seq is None or seq in done:
            continue
        done.add(seq)
        seqs.append(seq)
        edit = parse_edit(item)
        if edit is not None:
            fresh = [e for e in fresh if e.image != edit.image] + [edit]
    return fresh, seqs


def remember(handled: list[str], seqs: Iterable[str], keep: int = 2000) -> list[str]:
    """The handled seqs, newest last, at most `keep` (far more than a component ever holds unacknowledged)."""
    out = [*handled, *seqs]
    return out[-keep:]


def save_edit(store: BoxStore, edit: Edit, annotator: str) -> dict:
    """Store an edit's box on the slice it was drawn on, under `annotator`."""
    return store.upsert(edit.image, *edit.box, volume=edit.volume, slice=edit.slice, annotator=annotator)


# ------------------------------------------------------------------------------------------ keys


@dataclass(frozen=True)
class Shortcut:
    action: str  # the page's button is "annotate_<action>"
    label: str
    keys: tuple[str, ...]  # Streamlit shortcut notation; the first is the button's own shortcut

    @property
    def button_key(self) -> str:
        return f"annotate_{self.action}"


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("prev", "Previous slice", ("Left",)),
    Shortcut("next", "Next slice", ("Right",)),
    Shortcut("next_empty", "Next slice without a box", ("N",)),
    Shortcut("confirm_next", "Confirm the proposal and go to the next slice", ("Enter",)),
    Shortcut("propose", "Propose a box on this slice (from the source chosen in Proposals from)", ("P",)),
    Shortcut("next_uncertain", "Next uncertain slice: the unconfirmed one the chosen model is least sure of",
             ("Q",)),
    Shortcut("delete", "Delete the box of this slice", ("Delete", "Backspace")),
    Shortcut("undo", "Undo the last change", ("U", "Ctrl+Z")),
    Shortcut("redo", "Redo", ("Shift+U", "Ctrl+Y")),
)
WINDOW_ORDER = ("lung", "mediastinum", "bone", "brain", "auto")  # keys 1, 2, 3...: what is offered of these


def shortcut(action: str) -> str:
    """The button's own key (Streamlit's `shortcut=`)."""
    return next(s.keys[0] for s in SHORTCUTS if s.action == action)


def key_hint(action: str) -> str:
    """Every key of an action as a tooltip fragment, e.g. "U or Ctrl+Z"."""
    return " or ".join(next(s.keys for s in SHORTCUTS if s.action == action))


def window_keys(options: Iterable[str]) -> list[tuple[str, str]]:
    """(digit, window name) for the window presets offered (e.g. 1 lung, 2 mediastinum, 3 bone)."""
    offered = set(options)
    names = [name for name in WINDOW_ORDER if name in offered]
    return [(str(i), name) for i, name in enumerate(names[:9], start=1)]


def extra_keys() -> dict[str, str]:
    """{key combo: button key} for the keys beyond each button's own one, which the canvas handles on
    the page (combos lower case, modifiers first: "ctrl+z", "shift+u", "backspace")."""
    out = {}
    for s in SHORTCUTS:
        for combo in s.keys[1:]:
            out[combo.lower()] = s.button_key
    return out


def keys_help(windows: Iterable[tuple[str, str]] = ()) -> str:
    """The Keys popover's text: a markdown table of every key."""
    lines = ["| Key | Action |", "|---|---|"]
    lines += [f"| {' / '.join(s.keys)} | {s.label} |" for s in SHORTCUTS]
    lines += [f"| {digit} | {name} window |" for digit, name in windows]
    lines.append("| mouse wheel on the image | previous / next slice |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ navigation


def row_box(row: Mapping[str, Any] | None) -> Box | None:
    return None if row is None else (row["Xmin"], row["Ymin"], row["Xmax"], row["Ymax"])


def volume_boxes(store: BoxStore, volume: Volume) -> dict[int, dict]:
    """{z: row} of the volume's annotated slices, matched by slice id (robust to re-sorting)."""
    by_image = {r["Image"]: r for r in store.rows()}
    return {z: by_image[sid] for z, sid in enumerate(volume.slice_ids) if sid in by_image}


def next_without_box(n_slices: int, annotated: Iterable[int], current: int) -> int | None:
    """The next slice after `current` that has no box, wrapping round; None when all have one."""
    done = set(annotated)
    for step in range(1, n_slices + 1):
        z = (current + step) % n_slices
        if z not in done:
            return z
    return None


def clamp_slice(z: int, n_slices: int) -> int:
    return max(0, min(int(z), n_slices - 1))


def save_box(store: BoxStore, volume: Volume, z: int, box: Box, annotator: str) -> dict:
    return store.upsert(volume.slice_ids[z], *box, volume=volume.volume_id, slice=z, annotator=annotator)


def delete_box(store: BoxStore, volume: Volume, z: int, annotator: str) -> bool:
    return store.delete(volume.slice_ids[z], annotator=annotator)


def propose_for_slice(store: BoxStore, volume: Volume, z: int) -> Box | None:
    """Propose and store (annotator "auto") a box for one CT slice; None when no lung is found.

    An explicit request for this slice: it replaces whatever box the slice holds (one undo step).
    """
    box = propose_lung_box(volume.array[z])
    if box is not None:
        save_box(store, volume, z, box, AUTO_ANNOTATOR)
    return box


def propose_for_volume(store: BoxStore, volume: Volume, *, overwrite: bool = False) -> int:
    """Propose boxes for every slice (one undo step). A person's box is never replaced; a slice
    holding a proposal (rule or model) keeps it unless `overwrite`. Returns the number written."""
    stored = volume_boxes(store, volume)
    keep = {z for z, row in stored.items() if not (overwrite and is_proposal(row))}
    proposed = propose_volume(volume)
    boxes = [{"Image": volume.slice_ids[z], "Xmin": b[0], "Ymin": b[1], "Xmax": b[2], "Ymax": b[3],
              "Volume": volume.volume_id, "Slice": z}
             for z, b in sorted(proposed.items()) if z not in keep]
    # Checked again under the store's lock: a box drawn while the proposals were computed stays.
    return store.upsert_many(boxes, annotator=AUTO_ANNOTATOR,
                             replace=lambda row: overwrite and is_proposal(row)) if boxes else 0


MODEL_ANNOTATOR_PREFIX = "model:"  # a trained localizer's proposal: annotator `model:<run name>`
RULE, MODEL = "rule", "model"


def proposal_annotator(name: str | None) -> str | None:
    """"rule" for the HU-rule annotator `auto`, "model" for `model:<run>`; None for a person's name."""
    name = str(name or "").strip()
    if name == AUTO_ANNOTATOR:
        return RULE
    if name.startswith(MODEL_ANNOTATOR_PREFIX):
        return MODEL
    return None


def proposal_source(row: Mapping[str, Any] | None) -> str | None:
    """Where an unconfirmed row came from: "rule" (HU rule), "model" (a trained localizer), or
    None for a person's box (or no row)."""
    return None if row is None else proposal_annotator(row.get("Annotator"))


def is_proposal(row: Mapping[str, Any] | None) -> bool:
    """A stored row that pre-annotation wrote (the HU rule's `auto`, or a trained localizer's
    `model:<run>`) and no person has confirmed or edited yet."""
    return proposal_source(row) is not None


def confirm_proposal(store: BoxStore, volume: Volume, z: int, annotator: str) -> dict | None:
    """Re-save the proposal (rule or model) of slice z unchanged under `annotator` (a person accepted it).

    Returns the new row; None when the slice holds no proposal or the name is itself a proposal's
    (`auto`, `model:...`) or empty.
    """
    row = store.get(volume.slice_ids[z])
    if not is_proposal(row) or not (annotator or "").strip() or proposal_annotator(annotator) is not None:
        return None
    return save_box(store, volume, z, row_box(row), annotator)


def requested_slice(request: Mapping[str, Any] | None) -> tuple[str, int] | None:
    """(volume id, z) from a jump request {"volume": id, "slice": z} (session state or query params)."""
    if not request:
        return None
    volume, z = str(request.get("volume") or "").strip(), str(request.get("slice", "")).strip()
    if not volume or not z.isdigit():
        return None
    return volume, int(z)


def requested_entry(paths: Iterable[Any], target: Any) -> int | None:
    """Index of the volume path that is the same file or folder as `target` (the request's path)."""
    from pathlib import Path

    if not target:
        return None
    wanted = Path(str(target)).resolve()
    for index, path in enumerate(paths):
        if Path(path).resolve() == wanted:
            return index
    return None


# ------------------------------------------------------------------------------ proposal sources

RULE_CHOICE = "HU rule"  # the "Proposals from" option of the threshold rule (core.propose)


def proposer_choices(run_labels: Iterable[str]) -> list[str]:
    """The "Proposals from" options: the HU rule first, then the runs' labels as given (newest first)."""
    return [RULE_CHOICE, *(label for label in run_labels if label != RULE_CHOICE)]


def proposer_choice(current: str | None, choices: Sequence[str], pending: str | None = None) -> str:
    """What "Proposals from" shows: `pending` (a run just trained, offered once) when it is offered,
    else the current choice while it is still offered (a run deleted meanwhile is not), else the rule."""
    for wanted in (pending, current):
        if wanted and wanted in choices:
            return wanted
    return RULE_CHOICE


def annotator_problem(typed: str | None) -> str | None:
    """Why a typed annotator name cannot be used, or None: a name that reads as a proposal's
    ("auto", "model:...") would make the person's boxes look unconfirmed."""
    name = str(typed or "").strip()
    if proposal_annotator(name) is None:
        return None
    return (f"\"{name}\" is the name proposals are stored under (\"{AUTO_ANNOTATOR}\" for the HU rule, "
            f"\"{MODEL_ANNOTATOR_PREFIX}<run>\" for a model): type your own name or initials. "
            "Until then boxes are saved under \"unknown\".")


def person_name(typed: str | None) -> str:
    """The name a person's boxes are saved under: the typed name, or "unknown" when it is empty or
    reads as a proposal's (`annotator_problem`)."""
    name = str(typed or "").strip()
    return name if name and annotator_problem(name) is None else "unknown"


def next_uncertain(order: Sequence[tuple[int, float]], current: int) -> tuple[int, float] | None:
    """The most uncertain slice of `order` ([(z, score)], most uncertain first, as
    core.model_proposals.uncertainty_order gives) that is not the slice on screen; the slice on
    screen only when it is the only one left; None when the queue is empty."""
    for z, score in order:
        if z != current:
            return z, score
    return (order[0][0], order[0][1]) if order else None


def uncertain_text(order: Sequence[tuple[int, float]], current: int, method: str) -> str:
    """The caption under "Next uncertain slice": the slice on screen's score and rank when it is in
    the queue, else the queue's head (slices shown from 1)."""
    if not order:
        return "Every slice is confirmed: the uncertainty queue is empty."
    count = f"{len(order)} unconfirmed slice{'s' if len(order) != 1 else ''} in the queue"
    rank = next((i for i, (z, _) in enumerate(order) if z == current), None)
    if rank is not None:
        return (f"Uncertainty ({method}) of slice {current + 1}: {order[rank][1]:.2f}, "
                f"rank {rank + 1} of {count}")
    z, score = order[0]
    return f"{count}; most uncertain ({method}): slice {z + 1}, {score:.2f}"


def propose_notice(written: bool, from_model: bool, row: Mapping[str, Any] | None) -> str | None:
    """What the page says after "Propose box": None when a box was proposed; else why not (a model
    never replaces a person's box; a model or the rule found no box)."""
    if written:
        return None
    if from_model and row is not None and not is_proposal(row):
        return "Your box on this slice stays: a model never replaces it (delete it to see the model's box)"
    return "The model gives no box on this slice" if from_model else "No lung found on this slice"
