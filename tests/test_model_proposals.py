"""core.model_proposals without training: the TTA geometry (checked with the HU rule, which follows
the lungs wherever they are), the spread score, degenerate boxes, run listing and annotator names.
The trained-model paths (proposals, uncertainty order, predictor cache) run in test_annotation_loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import model_proposals as mp
from core.annotate import is_proposal, proposal_source
from core.boxes import box_iou
from core.errors import CheckpointError
from core.phantoms import chest_ct_phantom
from core.propose import propose_volume
from core.volume import Volume


@pytest.fixture(scope="module")
def chest() -> Volume:
    ph = chest_ct_phantom((12, 96, 96), (5.0, 2.0, 2.0), seed=4)
    return Volume(ph.hu, (5.0, 2.0, 2.0), modality="CT", volume_id="chest")


@pytest.mark.parametrize("transform", mp.TTA_TRANSFORMS[1:], ids=repr)
def test_tta_transforms_are_undone_on_the_boxes(chest, transform):
    """Boxes of the moved image, mapped back, are the original image's boxes (rule as the model)."""
    original = propose_volume(chest)
    moved = Volume(transform.apply(chest.array, -1024.0), chest.spacing, modality="CT", volume_id="moved")
    assert not np.array_equal(moved.array, chest.array)
    back = {z: transform.undo(np.array(b), chest.shape[1:]) for z, b in propose_volume(moved).items()}
    common = sorted(set(original) & set(back))
    assert len(common) >= 0.8 * len(original)
    ious = [box_iou(original[z], mp.usable_box(back[z])) for z in common]
    assert min(ious) > 0.9, ious
    # without the undo the boxes would be off by the shift (or mirrored)
    raw = [box_iou(original[z], propose_volume(moved)[z]) for z in common]
    assert np.mean(raw) < np.mean(ious) - 0.02


def test_shift_fills_the_uncovered_border_with_air(chest):
    shifted = mp._Transform(dx=0.1, dy=-0.1).apply(chest.array, -1024.0)
    assert shifted.shape == chest.shape
    assert (shifted[:, :, :10] == -1024.0).all() and (shifted[:, -10:, :] == -1024.0).all()
    np.testing.assert_array_equal(shifted[:, :-10, 10:], chest.array[:, 10:, :-10])
    np.testing.assert_array_equal(mp._Transform(flip=True).apply(chest.array, 0.0), chest.array[:, :, ::-1])


def test_tta_spread_is_zero_for_agreement_and_high_for_disagreement():
    same = np.tile([0.2, 0.3, 0.8, 0.7], (4, 1))
    assert mp.tta_spread(same) == pytest.approx(0.0, abs=1e-9)
    apart = np.array([[0.0, 0.0, 0.3, 0.3], [0.7, 0.7, 1.0, 1.0], [0.0, 0.7, 0.3, 1.0], [0.7, 0.0, 1.0, 0.3]])
    assert mp.tta_spread(apart) > 0.8
    a_little = same + np.array([[0.0] * 4, [0.02] * 4, [-0.02] * 4, [0.0] * 4])
    assert 0.0 < mp.tta_spread(a_little) < 0.15
    one_degenerate = np.vstack([same[:3], [[0.5, 0.5, 0.5, 0.5]]])
    assert mp.tta_spread(one_degenerate) == pytest.approx(0.25)
    assert mp.tta_spread(np.full((4, 4), np.nan)) == 1.0


def test_usable_box_orders_corners_and_drops_degenerate_boxes():
    assert mp.usable_box([0.8, 0.7, 0.2, 0.3]) == (0.2, 0.3, 0.8, 0.7)
    assert mp.usable_box([-0.1, 0.2, 1.3, 0.9]) == (0.0, 0.2, 1.0, 0.9)
    assert mp.usable_box([0.2, 0.2, 0.205, 0.8]) is None  # narrower than MIN_BOX_SIDE
    assert mp.usable_box([0.2, np.nan, 0.5, 0.8]) is None
    assert mp.usable_box(None) is None


def test_model_annotator_names_the_run_and_reads_as_a_model_proposal(tmp_path):
    name = mp.model_annotator(tmp_path / "20261130-050451-576-77b8")
    assert name == "model:20261130-050451-576-77b8"
    assert is_proposal({"Annotator": name}) and proposal_source({"Annotator": name}) == "model"


def test_lung_runs_skips_what_cannot_propose(tmp_path):
    assert mp.lung_runs(tmp_path / "missing") == []
    runs = tmp_path / "runs"
    for name, family, result in (("xray", "xray_classifier", True), ("training", "lung_localizer", False),
                                 ("no-checkpoint", "lung_localizer", True)):
        folder = runs / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"family": family}))
        if result:
            (folder / "result.json").write_text(json.dumps({"status": "done", "best_checkpoint": None}))
    (runs / "predictions").mkdir()
    (runs / ".slots").mkdir()
    assert mp.lung_runs(runs) == []
    with pytest.raises(CheckpointError, match="not a finished lung localizer run"):
        mp.predictor_for(runs / "no-checkpoint")


def test_uncertainty_order_refuses_an_unknown_method(chest, tmp_path):
    with pytest.raises(ValueError, match="tta.*rule"):
        mp.uncertainty_order(chest, tmp_path, [], method="entropy")
