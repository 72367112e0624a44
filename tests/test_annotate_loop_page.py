"""What the Annotate page decides for the loop (core.annotate, core.annotation_loop): the proposal
source, the annotator name, the uncertainty queue, the loop job shown and when its run is offered."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core import annotate
from core import annotation_loop as loop


def test_proposals_from_offers_the_rule_first_then_the_runs_and_keeps_an_offered_choice():
    labels = ["run-b · val_iou 0.81 · 2026-11-30 06:01", "run-a · val_iou 0.62 · 2026-11-30 05:12"]
    choices = annotate.proposer_choices(labels)
    assert choices == ["HU rule", *labels]
    assert annotate.proposer_choice(None, choices) == "HU rule"
    assert annotate.proposer_choice(labels[1], choices) == labels[1]
    assert annotate.proposer_choice("run-gone · 2026-11-29 01:00", choices) == "HU rule"  # deleted run
    assert annotate.proposer_choice(labels[1], choices, pending=labels[0]) == labels[0]  # just trained
    assert annotate.proposer_choice(labels[1], choices, pending="not offered") == labels[1]


@pytest.mark.parametrize("typed", ["auto", " auto ", "model:run-1", "model:"])
def test_a_name_that_reads_as_a_proposal_is_refused(typed):
    problem = annotate.annotator_problem(typed)
    assert problem and typed.strip() in problem and "unknown" in problem
    assert annotate.person_name(typed) == "unknown"


def test_a_person_name_is_kept():
    assert annotate.annotator_problem("dr_x") is None and annotate.person_name(" dr_x ") == "dr_x"
    assert annotate.annotator_problem("") is None and annotate.person_name("") == "unknown"
    assert annotate.person_name("automatic") == "automatic" and annotate.person_name("modeler") == "modeler"


def test_next_uncertain_skips_the_slice_on_screen():
    order = [(7, 0.9), (3, 0.5), (11, 0.1)]
    assert annotate.next_uncertain(order, 0) == (7, 0.9)
    assert annotate.next_uncertain(order, 7) == (3, 0.5)
    assert annotate.next_uncertain([(4, 0.2)], 4) == (4, 0.2)  # the only one left
    assert annotate.next_uncertain([], 4) is None


def test_uncertain_text_counts_from_one():
    order = [(7, 0.912), (3, 0.5)]
    assert annotate.uncertain_text(order, 7, "tta") == \
        "Uncertainty (tta) of slice 8: 0.91, rank 1 of 2 unconfirmed slices in the queue"
    assert annotate.uncertain_text(order, 0, "rule") == \
        "2 unconfirmed slices in the queue; most uncertain (rule): slice 8, 0.91"
    assert "empty" in annotate.uncertain_text([], 0, "tta")


def test_next_uncertain_has_a_key_listed_with_the_others():
    assert annotate.shortcut("next_uncertain") == "Q"
    assert "| Q | Next uncertain slice" in annotate.keys_help()
    assert all(s.keys[0] not in ("Q",) for s in annotate.SHORTCUTS if s.action != "next_uncertain")


def test_propose_notice_says_why_nothing_was_proposed():
    assert annotate.propose_notice(True, True, None) is None
    assert "stays" in annotate.propose_notice(False, True, {"Annotator": "dr_x"})
    assert annotate.propose_notice(False, True, {"Annotator": "auto"}) == \
        "The model gives no box on this slice"
    assert annotate.propose_notice(False, False, None) == "No lung found on this slice"


def test_loop_overrides_from_the_environment():
    assert loop.loop_overrides({}) == {}
    env = {loop.LOOP_SETTINGS_ENV: "image_size=64, max_epochs=3,pretrained=false"}
    assert loop.loop_overrides(env) == {"image_size": 64, "max_epochs": 3, "pretrained": False}
    with pytest.raises(loop.LoopError, match=loop.LOOP_SETTINGS_ENV):
        loop.loop_overrides({loop.LOOP_SETTINGS_ENV: "image_size"})
    with pytest.raises(loop.LoopError, match="no_such_setting"):
        loop.loop_overrides({loop.LOOP_SETTINGS_ENV: "no_such_setting=1"})


def test_the_job_shown_is_the_sessions_else_the_newest():
    jobs = [SimpleNamespace(id="new"), SimpleNamespace(id="old")]
    assert loop.shown_job("mine", jobs) == "mine"
    assert loop.shown_job(None, jobs) == "new"
    assert loop.shown_job(None, []) is None


def test_a_run_is_offered_once_when_a_watched_job_finishes():
    done = {"state": "DONE", "run": "/runs/r1"}
    assert loop.finished_now("RUNNING", done) and loop.finished_now("SUBMITTED", done)
    assert not loop.finished_now(None, done)  # first seen finished (after a reload): shown, not offered
    assert not loop.finished_now("DONE", done)  # offered already
    assert not loop.finished_now("RUNNING", {"state": "DONE", "run": None})  # no usable checkpoint
    assert not loop.finished_now("RUNNING", {"state": "ERROR", "run": None})


def test_the_status_line_starts_with_the_state_word():
    assert loop.status_line({"state": "RUNNING", "text": "Training: epoch 3 of 60"}) == \
        "RUNNING · Training: epoch 3 of 60"
    assert loop.status_line({"state": "QUEUED", "text": ""}) == "QUEUED"
    assert set(loop.UNCERTAINTY_HELP) == {"tta", "rule"}


def test_training_set_with_the_pages_cached_counts_is_the_same(tmp_path):
    from core.annotation_review import RootCounts
    from core.annotations import BoxStore

    store = BoxStore(tmp_path / "a.csv")
    store.upsert("img-1", 0.1, 0.1, 0.8, 0.8, volume="v1", slice=0, annotator="dr")
    store.upsert("img-2", 0.1, 0.1, 0.8, 0.8, volume="v1", slice=1, annotator="auto")
    store.upsert("img-3", 0.1, 0.1, 0.8, 0.8, volume="elsewhere", slice=0, annotator="dr")
    found = loop.training_set(store.path, None, counts=RootCounts({"v1": 4}))
    assert (found.confirmed, found.rule, found.outside) == (1, 1, 1)
    assert found.text() == "Trains on 1 confirmed box of 1 volume; 1 proposal (unconfirmed) left out; " \
        "1 box(es) of volumes not under the data root are not used"
