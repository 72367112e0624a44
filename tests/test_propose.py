"""Pre-annotation: lung boxes proposed from the CT itself, checked against phantom ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import VolumeError
from core.io import load_volume
from core.io.writers import write_dicom_series
from core.phantoms import chest_ct_phantom
from core.propose import box_iou, propose_lung_box, propose_volume

SPACING = (2.5, 0.7, 0.7)


def _truth(boxes: np.ndarray, z: int):
    return None if np.isnan(boxes[z]).any() else tuple(float(v) for v in boxes[z])


def _mean_iou(proposed: dict, boxes: np.ndarray) -> float:
    """Mean IoU over slices where the truth or the proposal has a box (a miss counts 0)."""
    ious = [box_iou(proposed.get(z), _truth(boxes, z)) for z in range(len(boxes))
            if proposed.get(z) is not None or _truth(boxes, z) is not None]
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def phantoms():
    return [chest_ct_phantom((40, 192, 192), SPACING, seed=s, lesions=bool(s % 2)) for s in (0, 1, 2)]


def test_box_iou():
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0.0
    assert box_iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(1 / 7)
    assert box_iou(None, None) == 1.0 and box_iou(None, (0, 0, 1, 1)) == 0.0


def test_volume_proposals_match_phantom_truth(phantoms):
    for ph in phantoms:
        proposed = propose_volume(ph.hu)
        assert _mean_iou(proposed, ph.boxes) >= 0.9
        assert all(0 <= a < c <= 1 and 0 <= b < d <= 1 for a, b, c, d in proposed.values())


def test_slice_proposals_match_phantom_truth(phantoms):
    for ph in phantoms:
        proposed = {z: propose_lung_box(ph.hu[z]) for z in range(ph.hu.shape[0])}
        assert _mean_iou({z: b for z, b in proposed.items() if b}, ph.boxes) >= 0.9


def test_no_box_above_the_lungs_where_only_the_trachea_is(phantoms):
    ph = phantoms[0]
    proposed = propose_volume(ph.hu)
    no_lung = [z for z in range(len(ph.boxes)) if ph.lung_mask[z].sum() == 0]
    assert no_lung and all(z not in proposed for z in no_lung)


def test_proposals_on_a_real_dicom_series(phantoms, tmp_path):
    ph = phantoms[1]
    write_dicom_series(np.round(ph.hu).astype(np.int16), tmp_path / "ct", spacing=SPACING)
    volume = load_volume(tmp_path / "ct")
    assert _mean_iou(propose_volume(volume), ph.boxes) >= 0.9


def test_no_lung_gives_none():
    air = np.full((64, 64), -1000.0)
    assert propose_lung_box(air) is None
    body = air.copy()
    body[10:54, 8:56] = 40.0  # a body without any air inside
    assert propose_lung_box(body) is None
    assert propose_volume(np.stack([body, body])) == {}


def test_air_touching_the_border_is_outside_air_not_lung():
    hu = np.full((96, 96), -1000.0)
    hu[10:86, 10:86] = 40.0
    hu[30:60, 0:40] = -1000.0  # a notch open to the outside
    assert propose_lung_box(hu) is None


def test_wrong_shapes_raise():
    with pytest.raises(VolumeError, match="2D slice"):
        propose_lung_box(np.zeros((2, 8, 8)))
    with pytest.raises(VolumeError, match="z, y, x"):
        propose_volume(np.zeros((2, 2, 8, 8)))
