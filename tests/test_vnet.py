"""VNet family without training: losses and schedule by hand, metrics in mm, geometry, data checks, shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import TrainingDataError
from core.io.writers import write_nifti, write_nrrd

# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def test_signed_distance_by_hand():
    from core.models.vnet.losses import signed_distance

    label = np.zeros((1, 1, 7), np.uint8)
    label[0, 0, 2:5] = 1
    # outside: distance to the nearest foreground voxel; inside: -(distance to background - 1)
    assert signed_distance(label)[0, 0].tolist() == [2, 1, 0, -1, 0, 1, 2]
    assert not signed_distance(np.zeros((2, 2, 2))).any()


def test_boundary_loss_by_hand():
    import torch

    from core.models.vnet.losses import boundary_loss, signed_distance

    phi = torch.from_numpy(signed_distance(np.array([[[0, 0, 1, 1, 1, 0, 0]]])))
    exact = torch.tensor([[[0, 0, 1, 1, 1, 0, 0]]], dtype=torch.float32)
    assert boundary_loss(exact, phi).item() == pytest.approx(-1 / 7)
    assert boundary_loss(torch.full_like(exact, 0.5), phi).item() == pytest.approx(0.5 * 5 / 7)
    assert boundary_loss(1 - exact, phi).item() == pytest.approx(6 / 7)  # everything wrong costs most


def test_hybrid_schedule_by_hand():
    from core.models.vnet.losses import HybridSchedule

    late = HybridSchedule(start_epoch=10, dice_threshold=0.7, step=0.1, max_weight=0.3)
    assert [late.weight(e) for e in (0, 9, 10, 11, 12, 13, 50)] == pytest.approx(
        [0, 0, 0.1, 0.2, 0.3, 0.3, 0.3]
    )
    early = HybridSchedule(start_epoch=10, dice_threshold=0.7, step=0.1, max_weight=0.3)
    early.observe(2, 0.65)  # below the threshold: nothing changes
    early.observe(3, 0.75)  # reached at epoch 3: the weight grows from epoch 4
    early.observe(5, 0.9)
    assert early.started_at == 4
    assert [early.weight(e) for e in (3, 4, 5, 6)] == pytest.approx([0, 0.1, 0.2, 0.3])


def test_hybrid_loss_value_by_hand():
    import torch

    from core.models.vnet.losses import HybridSchedule, SegmentationLoss, signed_distance

    label = np.array([0, 0, 1, 1, 1, 0, 0], np.float32).reshape(1, 1, 1, 1, 7)  # (batch, channel, z, y, x)
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.4, 0.1], np.float32)
    logits = torch.from_numpy(np.log(p / (1 - p)).reshape(1, 1, 1, 1, 7))
    phi = torch.from_numpy(signed_distance(label[0, 0])[None, None])
    dice = 1 - 2 * (0.9 + 0.8 + 0.7) / (p.sum() + 3 + 1e-5)
    boundary = float((p * np.array([2, 1, 0, -1, 0, 1, 2])).mean())
    schedule = HybridSchedule(start_epoch=2, step=0.25, max_weight=1.0)
    loss = SegmentationLoss("hybrid", schedule=schedule)
    target = torch.from_numpy(label)
    assert loss(logits, target, phi, epoch=0).item() == pytest.approx(dice, abs=1e-5)
    assert loss(logits, target, phi, epoch=3).item() == pytest.approx(dice + 0.5 * boundary, abs=1e-5)
    assert SegmentationLoss("boundary")(logits, target, phi).item() == pytest.approx(boundary, abs=1e-6)
    assert SegmentationLoss("dice")(logits, target).item() == pytest.approx(dice, abs=1e-5)
    assert SegmentationLoss("focal")(logits, target).item() > 0
    with pytest.raises(ValueError, match="signed distance"):
        loss(logits, target, None)
    with pytest.raises(ValueError, match="unknown loss"):
        SegmentationLoss("jaccard")


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_hausdorff_in_mm_on_anisotropic_spacing():
    from core.models.vnet.metrics import case_metrics, hausdorff_mm

    truth, pred = np.zeros((4, 4, 6), np.uint8), np.zeros((4, 4, 6), np.uint8)
    truth[1, 1, 1], pred[2, 1, 3] = 1, 1  # one slice (3 mm) and two columns (2 x 0.5 mm) apart
    assert hausdorff_mm(pred, truth, (3.0, 0.5, 0.5)) == pytest.approx(math.sqrt(3.0**2 + 1.0**2), rel=1e-5)
    # a block and the same block grown by one slice: HD = one slice thickness; overlap by voxel counts
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:5, 2:6, 2:6] = 1
    pred = truth.copy()
    pred[5] = pred[4]
    scores = case_metrics(pred, truth, (2.5, 0.7, 0.7))
    assert scores["hausdorff_mm"] == pytest.approx(2.5) and scores["hd95_mm"] == pytest.approx(2.5)
    assert scores["dice"] == pytest.approx(2 * 48 / (48 + 64))
    assert scores["iou"] == pytest.approx(48 / 64)
    assert scores["precision"] == pytest.approx(48 / 64) and scores["recall"] == 1.0
    assert hausdorff_mm(np.zeros_like(truth), truth, (1, 1, 1)) is None


def test_summary_mean_and_sd():
    from core.models.vnet.metrics import summarise

    rows = [{"dice": 0.8, "hd": None}, {"dice": 0.9, "hd": 3.0}]
    out = summarise(rows, ("dice", "hd"))
    assert out["dice_mean"] == pytest.approx(0.85) and out["dice_sd"] == pytest.approx(0.05)
    assert out["hd_mean"] == 3.0 and out["hd_sd"] == 0.0


# ---------------------------------------------------------------------------------------------
# Geometry of the two stages
# ---------------------------------------------------------------------------------------------


def test_crop_geometry():
    from core.models.vnet import stages

    assert stages.parse_scale("0.5,0.25,0.25") == (0.5, 0.25, 0.25)
    with pytest.raises(ValueError, match="locator_scale"):
        stages.parse_scale("0.5,2,1")
    # a low-res voxel covers 1/scale full voxels: box (2..3) at scale 0.25 -> full 8..15
    assert stages.scale_box_up(((1, 2, 2), (1, 3, 3)), (0.5, 0.25, 0.25), (10, 40, 40)) == (
        (2, 8, 8),
        (3, 15, 15),
    )
    assert stages.widen(((2, 8, 8), (3, 15, 15)), 5, (10, 40, 40)) == ((0, 3, 3), (8, 20, 20))
    assert stages.crop_size_for([((0, 0, 0), (4, 9, 9)), ((0, 0, 0), (2, 12, 3))], 2, (16, 64, 64), 8) == [
        16,
        24,
        16,
    ]
    where = stages.window(((0, 30, 30), (3, 39, 39)), (8, 16, 16), (10, 40, 40))
    assert where == (slice(0, 8), slice(24, 40), slice(24, 40))  # centred, then moved inside
    mask = np.zeros((10, 40, 40), np.uint8)
    mask[0:2, 30:34, 30:34] = 1
    assert stages.inside_share(mask, where) == 1.0
    assert stages.inside_share(mask, (slice(0, 1), slice(0, 40), slice(0, 40))) == 0.5


def test_segment_volume_larger_than_the_pad_size_uses_a_sliding_window():
    import torch

    from core.models.vnet.net import TwoStage
    from core.models.vnet.stages import segment_volume

    torch.manual_seed(0)
    args = {"width": 2, "levels": 1, "kernel_size": 3}
    model = TwoStage(args, args).eval()
    with torch.no_grad():  # a locator that sees everything: the region exceeds the crop size
        model.locator.head.bias.fill_(10.0)
    description = {
        "pad_size": [8, 16, 16],
        "crop_size": [8, 16, 16],
        "locator_scale": [0.5, 0.5, 0.5],
        "buffer": 2,
    }
    image = np.random.default_rng(0).random((12, 24, 20)).astype(np.float32)
    result = segment_volume(model, image, description, "cpu")
    assert result.mask.shape == image.shape and result.mask.dtype == np.uint8
    assert result.sliding_window and result.located is not None
    small = segment_volume(model, image[:6, :10, :10], description, "cpu")  # padded up, then unpadded
    assert small.mask.shape == (6, 10, 10) and not small.sliding_window


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"width": 2, "levels": 1, "kernel_size": 3}, (5, 9, 7)),
        (
            {"width": 4, "levels": 3, "kernel_size": 3, "attention": True, "attention_dilation": 3},
            (8, 20, 12),
        ),
        ({"width": 2, "levels": 4, "kernel_size": 5}, (16, 16, 16)),
    ],
)
def test_vnet_shapes(kwargs, shape):
    import torch

    from core.models.vnet.net import VNet

    out = VNet(**kwargs)(torch.zeros(2, 1, *shape))
    assert out.shape == (2, 1, *shape)


def test_parameter_counts_against_the_reference():
    from core.models.vnet.net import VNet, build_network, parameter_count

    assert 10.5e6 < parameter_count(VNet(width=8)) < 12e6  # reference: 10.75 M
    assert 45e6 < parameter_count(build_network("monai")) < 46e6  # MONAI's VNet, width fixed at 16
    assert parameter_count(VNet(width=4, attention=True)) > parameter_count(VNet(width=4))
    with pytest.raises(ValueError, match="levels"):
        VNet(levels=7)


# ---------------------------------------------------------------------------------------------
# Data: layouts and bad input
# ---------------------------------------------------------------------------------------------


def _case(
    folder,
    image_name="image.nrrd",
    label_name="label.nrrd",
    shape=(6, 12, 12),
    label=True,
    label_shape=None,
    fg=True,
    writer=write_nrrd,
):
    image = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    writer(image, folder / image_name, spacing=(2.0, 1.0, 1.0))
    if label:
        lab = np.zeros(label_shape or shape, np.uint8)
        if fg:
            lab[1:3, 3:6, 3:6] = 255
        writer(lab, folder / label_name, spacing=(2.0, 1.0, 1.0))


def test_bad_cases_are_named_and_skipped(tmp_path):
    from core.models.vnet.data import load_cases

    _case(tmp_path / "good1")
    _case(tmp_path / "good2", "lgemri.nrrd", "laendo.nrrd")
    _case(tmp_path / "good3", "scan.nii.gz", "seg.nii.gz", writer=write_nifti)
    _case(tmp_path / "empty_label", fg=False)
    _case(tmp_path / "other_shape", label_shape=(6, 12, 10))
    _case(tmp_path / "no_label", label=False)
    _case(tmp_path / "flat2d", shape=(1, 12, 12))
    cases, skipped = load_cases(tmp_path)
    assert sorted(c.case_id for c in cases) == ["good1", "good2", "good3"]
    text = "\n".join(skipped)
    assert "empty_label" in text and "no foreground" in text
    assert "other_shape" in text and "shape" in text
    assert "no_label" in text and "image without label" in text
    assert "flat2d" in text and "2D image in a 3D set" in text
    good = cases[0]
    assert good.image.dtype == np.float32 and 0 <= good.image.min() and good.image.max() <= 1
    assert set(np.unique(good.label)) == {0, 1}  # 0/255 read as 0/1


def test_flat_pairs_and_unpaired_files(tmp_path):
    from core.models.vnet.data import find_cases, looks_like_dataset

    for name in ("a", "b"):
        _case(tmp_path, f"{name}_image.nrrd", f"{name}_label.nrrd")
    _case(tmp_path, "c_image.nrrd", label=False)
    listing = find_cases(tmp_path)
    assert [c.case_id for c in listing.cases] == ["a", "b"]
    assert any("c_image.nrrd" in s and "no matching label" in s for s in listing.skipped)
    assert looks_like_dataset(tmp_path, {p.name for p in tmp_path.iterdir()})
    assert not looks_like_dataset(tmp_path / "nothing", set())


def test_too_few_cases_is_a_clear_error(tmp_path):
    from core.models.vnet.data import load_cases

    _case(tmp_path / "only")
    _case(tmp_path / "bad", fg=False)
    with pytest.raises(TrainingDataError, match="at least 2 usable.*no foreground"):
        load_cases(tmp_path)


def test_split_is_seeded_and_keeps_both_sides():
    from core.models.vnet.data import split_cases

    ids = [f"c{i}" for i in range(10)]
    assert split_cases(ids, 0.2, 0) == split_cases(list(reversed(ids)), 0.2, 0)
    train, val = split_cases(ids, 0.2, 0)
    assert len(val) == 2 and not set(train) & set(val) and len(train) == 8
    assert len(split_cases(ids[:2], 0.9, 0)[0]) == 1


def test_demo_folder_is_a_dataset(tmp_path):
    from core.models import get_spec
    from core.models.vnet.data import find_cases
    from core.models.vnet.demo import write_demo

    cases = write_demo(tmp_path, seed=0, small=True, progress=lambda _: None)
    folder = tmp_path / "segmentation"
    assert len(cases) == 4 and {c["kind"] for c in cases} == {"segmentation"}
    spec = get_spec("vnet")
    assert spec.dataset_rule(folder, {p.name for p in folder.iterdir()})
    assert len(find_cases(tmp_path).cases) == 4  # the demo root stands for its segmentation folder
    assert spec.monitor == "val_dice" and spec.monitor_mode == "max" and spec.review == "mask"


# ---------------------------------------------------------------------------------------------
# Export with the source geometry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mask.nrrd", "mask.nii.gz"])
def test_write_like_round_trip_keeps_the_source_geometry(tmp_path, name):
    from core.io import load_volume
    from core.io.writers import WriteError, write_like
    from core.prediction_files import write_array_like
    from core.volume import Volume

    theta = np.deg2rad(12.0)  # oblique: a rotation about z
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    mask = np.zeros((5, 8, 9), np.uint8)
    mask[1:4, 2:5, 3:7] = 1
    source = Volume(
        np.zeros(mask.shape), spacing=(2.5, 0.7, 0.8), origin=(-10.5, 20.25, 33.0), direction=direction
    )
    for path in (
        write_like(source, mask, tmp_path / name),
        write_array_like(source, mask, tmp_path / f"b_{name}"),
    ):
        back = load_volume(path)
        assert back.shape == source.shape and np.array_equal(back.array, mask)
        assert np.allclose(back.spacing, source.spacing, atol=1e-5)
        assert np.allclose(back.origin, source.origin, atol=1e-4)
        assert np.allclose(back.direction, direction, atol=1e-5)
    with pytest.raises(WriteError, match="shape"):
        write_like(source, mask[:2], tmp_path / name)
    with pytest.raises(WriteError, match="writes"):
        write_like(source, mask, tmp_path / "mask.png")


def test_dicom_seg_frames_map_back_to_their_source_slices(tmp_path):
    import highdicom as hd
    import pydicom
    from pydicom import config

    from core.io import load_volume
    from core.io.writers import WriteError, write_dicom_seg, write_dicom_series
    from core.mask_review import export_formats, mask_file_bytes
    from core.volume import Volume

    hu = np.random.default_rng(0).integers(-1000, 400, (6, 16, 20)).astype(np.int16)
    write_dicom_series(hu, tmp_path / "series", spacing=(2.5, 0.7, 0.7), origin=(-5.0, 3.0, 10.0))
    volume = load_volume(tmp_path / "series")
    mask = np.zeros(volume.shape, np.uint8)
    mask[2:4, 3:9, 5:12] = 1
    mask[2, 3, 5] = 0
    path = write_dicom_seg(volume, mask, tmp_path / "seg.dcm", segment_label="atrium")
    seg = hd.seg.segread(str(path))
    assert seg.number_of_frames == 2 and seg.SegmentSequence[0].SegmentLabel == "atrium"
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=volume.slice_ids, segment_numbers=[1])
    assert np.array_equal(frames[..., 0], mask)  # each frame over the slice it was cut from
    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        ds = pydicom.dcmread(path)
        assert (
            ds.Modality == "SEG"
            and ds.FrameOfReferenceUID == pydicom.dcmread(volume.meta["files"][0]).FrameOfReferenceUID
        )
    finally:
        config.settings.reading_validation_mode = previous
    assert "DICOM SEG (.dcm)" in export_formats(volume)
    assert mask_file_bytes(volume, mask, "_seg.dcm")[128:132] == b"DICM"
    not_dicom = Volume(np.zeros((2, 3, 3)))
    assert "DICOM SEG (.dcm)" not in export_formats(not_dicom)
    with pytest.raises(WriteError, match="DICOM series"):
        write_dicom_seg(not_dicom, np.zeros((2, 3, 3), np.uint8), tmp_path / "x.dcm")
