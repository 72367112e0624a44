"""Synthetic phantoms: plausible intensities per tissue, masks that match boxes, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from core.phantoms import (
    BRAIN_TISSUES,
    SEQUENCES,
    TISSUE,
    boxes_from_mask,
    brain_mri_phantom,
    chest_ct_phantom,
    chest_xray,
    xray_projection,
)

CHEST_SHAPE = (20, 96, 96)


@pytest.fixture(scope="module")
def chest():
    return chest_ct_phantom(CHEST_SHAPE, (2.5, 0.7, 0.7), seed=3, lesions=False)


@pytest.fixture(scope="module")
def chest_lesions():
    return chest_ct_phantom(CHEST_SHAPE, (2.5, 0.7, 0.7), seed=3, lesions=True)


def _mean_hu(phantom, name: str) -> float:
    return float(phantom.hu[phantom.tissue == TISSUE[name]].mean())


def test_chest_hounsfield_units_per_tissue(chest):
    assert float(chest.hu[chest.lung_mask > 0].mean()) < -700
    assert 0 < _mean_hu(chest, "soft_tissue") < 100
    assert 0 < _mean_hu(chest, "heart") < 100
    assert _mean_hu(chest, "cortical_bone") > 300
    assert _mean_hu(chest, "fat") < -50
    assert _mean_hu(chest, "air") < -950
    assert 150 < _mean_hu(chest, "table") < 450
    assert chest.hu.dtype == np.float32 and chest.hu.min() >= -1024


def test_chest_noise_is_realistic(chest):
    corner = chest.hu[:, :12, :12]  # air far from the patient, clipped at -1024 below
    assert 8 < float(corner.std()) < 25
    assert -1010 < float(corner.mean()) < -990


def test_chest_anatomy_is_in_radiological_orientation(chest):
    depth, height, width = CHEST_SHAPE
    _, _, heart_x = np.nonzero(chest.tissue == TISSUE["heart"])
    assert heart_x.mean() > width / 2  # patient's left on the image right
    _, marrow_y, _ = np.nonzero(chest.tissue == TISSUE["marrow"])
    assert marrow_y.mean() > height / 2  # spine posterior (bottom)
    table, body = chest.tissue[0] == TISSUE["table"], chest.body_mask[0] > 0
    for x in np.flatnonzero(table.any(axis=0) & body.any(axis=0)):
        assert np.flatnonzero(table[:, x]).min() > np.flatnonzero(body[:, x]).max()  # table under the body
    assert chest.body_mask[chest.lung_mask > 0].all()


def test_chest_lungs_taper_to_the_apex_and_skip_the_end_slices(chest):
    area = chest.lung_mask.sum(axis=(1, 2))
    assert area[:2].sum() == 0 and area[-2:].sum() == 0
    present = np.flatnonzero(area)
    lower, upper = np.array_split(present, 2)
    assert area[lower].mean() > area[upper].mean()  # bases (low z) larger than apices
    assert area[present[-1]] < area.max() / 3  # the apex is small


def test_chest_two_lungs_left_and_right(chest):
    z = int(np.argmax(chest.lung_mask.sum(axis=(1, 2))))
    cols = chest.lung_mask[z].any(axis=0)
    width = cols.size
    assert cols[: width // 2].any() and cols[width // 2:].any()
    assert not cols[width // 2 - 2: width // 2 + 2].any()  # mediastinum between them


def test_chest_boxes_are_the_tight_box_of_the_lung_mask(chest):
    assert chest.boxes.shape == (CHEST_SHAPE[0], 4) and chest.boxes.dtype == np.float32
    for z in range(CHEST_SHAPE[0]):
        ys, xs = np.nonzero(chest.lung_mask[z])
        if xs.size == 0:
            assert np.isnan(chest.boxes[z]).all()
            continue
        expected = [xs.min() / 96, ys.min() / 96, (xs.max() + 1) / 96, (ys.max() + 1) / 96]
        np.testing.assert_allclose(chest.boxes[z], expected, atol=1e-6)
        xmin, ymin, xmax, ymax = chest.boxes[z]
        assert 0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1


def test_boxes_from_mask_uses_pixel_edges():
    mask = np.zeros((3, 50, 100), np.uint8)
    mask[1, 5:15, 10:20] = 1
    boxes = boxes_from_mask(mask)
    np.testing.assert_allclose(boxes[1], [0.10, 0.10, 0.20, 0.30])
    assert np.isnan(boxes[0]).all() and np.isnan(boxes[2]).all()


def test_chest_is_deterministic_per_seed(chest):
    again = chest_ct_phantom(CHEST_SHAPE, (2.5, 0.7, 0.7), seed=3)
    np.testing.assert_array_equal(again.hu, chest.hu)
    np.testing.assert_array_equal(again.lung_mask, chest.lung_mask)
    other = chest_ct_phantom(CHEST_SHAPE, (2.5, 0.7, 0.7), seed=4)
    assert not np.array_equal(other.lung_mask, chest.lung_mask)
    assert not np.array_equal(other.hu, chest.hu)


def test_lesions_only_when_asked_and_inside_the_lungs(chest, chest_lesions):
    assert chest.lesion_mask.sum() == 0 and chest.label == "normal"
    lesion = chest_lesions.lesion_mask > 0
    assert lesion.sum() > 50 and chest_lesions.label == "lesion"
    assert chest_lesions.lung_mask[lesion].all()
    ground_glass = float(chest_lesions.hu[lesion].mean())
    assert -750 < ground_glass < -300
    # same anatomy with and without lesions: only the lungs change
    np.testing.assert_array_equal(chest_lesions.lung_mask, chest.lung_mask)


def test_chest_rejects_a_tiny_volume():
    with pytest.raises(ValueError, match="at least"):
        chest_ct_phantom((3, 16, 16))


def test_xray_projection_lungs_dark_bone_bright(chest):
    image = xray_projection(chest)
    assert image.shape == (CHEST_SHAPE[0], CHEST_SHAPE[2]) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1
    lungs = chest.lung_mask.any(axis=1)[::-1]  # (z, x), head at the top like the projection
    spine_column = image[:, CHEST_SHAPE[2] // 2]
    assert image[lungs].mean() < spine_column.mean() - 0.1
    outside = image[:, :3]  # air beside the patient
    assert outside.mean() < 0.05


def test_xray_projection_accepts_a_plain_array_and_rejects_2d():
    hu = np.full((4, 10, 6), -1000, np.float32)
    hu[:, 3:7, 2:4] = 0
    image = xray_projection(hu)
    assert image.shape == (4, 6) and image[:, 2:4].min() > image[:, 0].max()
    with pytest.raises(ValueError, match="volume"):
        xray_projection(np.zeros((10, 10)))


def test_chest_xray_normal_and_pneumonia():
    normal = chest_xray(128, seed=5, pneumonia=False)
    sick = chest_xray(128, seed=5, pneumonia=True)
    assert normal.label == "NORMAL" and sick.label == "PNEUMONIA"
    assert normal.image.shape == (128, 128) and 0 <= normal.image.min() and normal.image.max() <= 1
    assert normal.opacity_mask.sum() == 0 and sick.opacity_mask.sum() > 20
    lungs = sick.lung_mask > 0
    opaque = sick.opacity_mask > 0
    clear = lungs & ~opaque
    assert sick.image[opaque & lungs].mean() > sick.image[clear].mean() + 0.05
    assert normal.image[normal.lung_mask > 0].mean() < normal.image[:, 60:68].mean()  # lungs darker
    np.testing.assert_array_equal(chest_xray(128, seed=5).image, normal.image)
    assert not np.array_equal(chest_xray(128, seed=6).image, normal.image)


def test_chest_xray_rejects_tiny_size():
    with pytest.raises(ValueError, match="size"):
        chest_xray(8)


@pytest.fixture(scope="module")
def brains():
    shape = (24, 48, 48)
    return {g: [brain_mri_phantom(shape, seed=s, grade=g) for s in range(3)] for g in ("HGG", "LGG")}


def _tissue_mean(brain, sequence: str, name: str) -> float:
    return float(brain.images[sequence][brain.tissue == BRAIN_TISSUES.index(name)].mean())


def test_brain_sequences_are_coregistered_and_skull_stripped(brains):
    brain = brains["HGG"][0]
    assert set(brain.images) == set(SEQUENCES)
    outside = brain.brain_mask == 0
    for name, image in brain.images.items():
        assert image.shape == brain.seg.shape and image.dtype == np.float32, name
        assert image[outside].max() == 0 and image.min() >= 0, name


def test_brain_contrasts_per_sequence(brains):
    brain = brains["LGG"][0]
    assert _tissue_mean(brain, "t1", "csf") < _tissue_mean(brain, "t1", "white")  # CSF dark on T1
    assert _tissue_mean(brain, "t2", "csf") > _tissue_mean(brain, "t2", "white")  # bright on T2
    assert _tissue_mean(brain, "flair", "csf") < _tissue_mean(brain, "flair", "grey")  # suppressed
    assert _tissue_mean(brain, "flair", "oedema") > _tissue_mean(brain, "flair", "white")
    assert _tissue_mean(brain, "t2", "oedema") > _tissue_mean(brain, "t2", "white")


def test_brain_tumour_inside_the_brain_with_brats_labels(brains):
    for grade, cases in brains.items():
        for brain in cases:
            tumour = brain.seg > 0
            assert tumour.sum() > 50, grade
            assert brain.brain_mask[tumour].all()
            assert set(np.unique(brain.seg)) <= {0, 1, 2, 4}
            assert brain.grade == grade


def _enhancement(brain) -> float:
    """T1ce over T1 inside the tumour core: high where contrast leaks (HGG)."""
    core = np.isin(brain.seg, (1, 4))
    return float(brain.images["t1ce"][core].mean() / brain.images["t1"][core].mean())


def test_brain_grade_shows_as_enhancement(brains):
    for brain in brains["HGG"]:
        assert (brain.seg == 4).sum() > (brain.seg == 1).sum() * 0.3
        assert _enhancement(brain) > 1.5
    for brain in brains["LGG"]:
        assert (brain.seg == 4).sum() < 0.1 * (brain.seg > 0).sum()
        assert _enhancement(brain) < 1.3


def test_brain_is_deterministic_and_rejects_bad_grade(brains):
    again = brain_mri_phantom((24, 48, 48), seed=0, grade="HGG")
    np.testing.assert_array_equal(again.images["flair"], brains["HGG"][0].images["flair"])
    np.testing.assert_array_equal(again.seg, brains["HGG"][0].seg)
    assert not np.array_equal(brains["HGG"][1].seg, brains["HGG"][0].seg)
    with pytest.raises(ValueError, match="grade"):
        brain_mri_phantom(grade="GBM")
    with pytest.raises(ValueError, match="at least"):
        brain_mri_phantom((4, 48, 48))
