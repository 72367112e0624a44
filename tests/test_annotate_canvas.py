"""core.annotate's decisions for the box canvas: which edits are new, where they are stored, the keys."""

from __future__ import annotations

import pytest

from core import annotate
from core.annotations import BoxStore


def _edit(seq: str, z: int = 3, box=(0.1, 0.2, 0.6, 0.7), image: str | None = None) -> dict:
    return {"seq": seq, "volume": "vol", "slice": z, "image": image or f"img{z}", "box": list(box)}


def test_each_edit_is_new_once_and_in_the_order_drawn():
    value = {"edits": [_edit("a-1", 3), _edit("a-2", 4)]}
    edits, seqs = annotate.new_edits(value, [])
    assert [(e.seq, e.slice, e.image) for e in edits] == [("a-1", 3, "img3"), ("a-2", 4, "img4")]
    assert seqs == ["a-1", "a-2"]
    assert edits[0].box == pytest.approx((0.1, 0.2, 0.6, 0.7))
    # the same value again (every page run carries it): nothing new
    assert annotate.new_edits(value, seqs) == ([], [])
    # a later edit arrives with the old ones still in the list: only it is new
    value["edits"].append(_edit("a-3", 3, (0.2, 0.2, 0.5, 0.5)))
    edits, seqs = annotate.new_edits(value, ["a-1", "a-2"])
    assert [e.seq for e in edits] == ["a-3"] and seqs == ["a-3"]


def test_of_several_new_edits_of_one_slice_the_last_wins():
    value = [_edit("a-1", 3, (0.1, 0.1, 0.4, 0.4)), _edit("a-2", 5), _edit("a-3", 3, (0.2, 0.2, 0.9, 0.9))]
    edits, seqs = annotate.new_edits(value, [])
    assert [(e.seq, e.slice) for e in edits] == [("a-2", 5), ("a-3", 3)]
    assert seqs == ["a-1", "a-2", "a-3"]  # all handled: a-1 never comes back over a-3


def test_malformed_edits_are_dropped_and_never_raise():
    bad = [
        "text", None, {"seq": "x"}, _edit("b-1", -1), {**_edit("b-2"), "slice": 2.5},
        {**_edit("b-3"), "box": [0.5, 0.5, 0.5, 0.9]},  # no width
        {**_edit("b-4"), "box": [2, 2, 3, 3]},  # off the image
        {**_edit("b-5"), "box": "0,0,1,1"}, {**_edit("b-6"), "image": ""}, {**_edit("b-7"), "slice": True},
        {**_edit("b-8"), "box": [0.1, 0.1, 0.1015, 0.5]},  # a click, not a drag
    ]
    edits, seqs = annotate.new_edits({"edits": bad + [_edit("ok-1")]}, [])
    assert [e.seq for e in edits] == ["ok-1"]
    assert "ok-1" in seqs and "b-3" in seqs  # malformed ones are handled too, not retried
    for value in (None, {}, {"edits": None}, "edits", 5, {"edits": "abc"}):
        assert annotate.new_edits(value, []) == ([], [])


def test_a_box_dragged_beyond_the_image_is_clipped():
    [edit], _ = annotate.new_edits([_edit("c-1", box=(-0.2, 0.1, 0.5, 1.3))], [])
    assert edit.box == pytest.approx((0.0, 0.1, 0.5, 1.0))
    [edit], _ = annotate.new_edits([_edit("c-2", box=(0.6, 0.7, 0.1, 0.2))], [])  # dragged up-left
    assert edit.box == pytest.approx((0.1, 0.2, 0.6, 0.7))


def test_remember_keeps_the_newest():
    assert annotate.remember(["a"], ["b", "c"], keep=2) == ["b", "c"]
    assert annotate.remember([], []) == []


def test_an_edit_is_saved_on_the_slice_it_was_drawn_on(tmp_path):
    store = BoxStore(tmp_path / "lung_bbox.csv")
    [edit], _ = annotate.new_edits([_edit("d-1", 7, image="sop.7")], [])
    row = annotate.save_edit(store, edit, "reader")
    assert row["Image"] == "sop.7" and row["Slice"] == 7 and row["Volume"] == "vol"
    assert row["Annotator"] == "reader"
    assert store.get("sop.7")["Xmin"] == pytest.approx(0.1)


def test_box_kind_tells_people_rule_and_model_apart():
    assert annotate.box_kind(None) is None
    assert annotate.box_kind({"Annotator": "auto"}) == "rule"
    assert annotate.box_kind({"Annotator": "model:run-3"}) == "model"
    assert annotate.box_kind({"Annotator": "ab"}) == "person"
    assert set(annotate.BOX_COLOURS) == {"person", "rule", "model"}
    assert len(set(annotate.BOX_COLOURS.values())) == 3


def test_the_page_progress_is_annotation_review_volume_progress():
    """One progress text for the page (core.annotation_review.volume_progress), none here."""
    assert not hasattr(annotate, "slice_progress")
    from core.annotation_review import volume_progress

    rows = {0: {"Annotator": "ab"}, 1: {"Annotator": "auto"}, 2: {"Annotator": "model:r"}}
    assert volume_progress(rows, 10, 4).text() == "Slice 5 of 10 · 1 confirmed · 2 proposed (unconfirmed)"


def test_keys_every_action_has_one_button_shortcut_and_the_extras_press_buttons():
    actions = [s.action for s in annotate.SHORTCUTS]
    assert len(actions) == len(set(actions))
    assert annotate.shortcut("next") == "Right" and annotate.shortcut("confirm_next") == "Enter"
    assert annotate.shortcut("undo") == "U" and annotate.shortcut("redo") == "Shift+U"
    assert annotate.extra_keys() == {"backspace": "annotate_delete", "ctrl+z": "annotate_undo",
                                     "ctrl+y": "annotate_redo"}
    assert annotate.key_hint("undo") == "U or Ctrl+Z"
    primary = [s.keys[0].lower() for s in annotate.SHORTCUTS]
    assert len(primary) == len(set(primary)) and not set(primary) & set(annotate.extra_keys())
    assert not {"c", "r"} & set(primary)  # reserved by Streamlit


def test_window_keys_follow_the_offered_presets():
    from core import render

    options, _ = render.window_choices("CT")
    keys = annotate.window_keys(options)
    assert keys[:3] == [("1", "lung"), ("2", "mediastinum"), ("3", "bone")]
    assert all(name in options for _, name in keys)
    assert "ct_classifier" not in dict(keys).values() and "custom" not in dict(keys).values()
    assert annotate.window_keys(["auto", "bone"]) == [("1", "bone"), ("2", "auto")]
    text = annotate.keys_help(keys)
    assert "| 1 | lung window |" in text and "Ctrl+Z" in text and "Enter" in text
