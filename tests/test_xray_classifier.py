"""X-ray classifier (SPEC 5B): learns for real on demo-like X-rays, CAM localises the finding, heatmaps have
the image's original shape, and bad input is classified or refused naming the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from core.errors import SlicewiseError, TrainingDataError, VolumeReadError
from core.io import load_volume
from core.models import QUICK_PRESET, get_spec
from core.models.xray_classifier.synthetic import read_findings, write_xray_folder
from core.volume import Volume
from tests.conftest import scratch

COUNTS = (("train", 40), ("val", 10), ("test", 15))
SIZE = 128


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One quick-preset run on 80 training X-rays (128 px, ResNet-18 from scratch), shared by the tests."""
    from core.train.loop import fit

    with scratch(tmp_path_factory, "xray") as root:
        data = root / "xray"
        write_xray_folder(data, seed=3, counts=COUNTS, size=SIZE, progress=lambda _m: None)
        spec = get_spec("xray_classifier")
        settings = spec.preset_settings(QUICK_PRESET)
        run = root / "run"
        result = fit(spec, data, run, settings)
        yield {"data": data, "run": run, "result": result}


@pytest.mark.train
def test_learns_the_demo_xrays(trained, capsys):
    evaluation = json.loads((trained["run"] / "evaluation.json").read_text())
    summary = evaluation["summary"]
    with capsys.disabled():
        print(f"\nX-ray quick preset, test split: {summary}, fit {trained['result']['fit_seconds']} s")
    assert evaluation["split"] == "test" and summary["images"] == 30
    assert summary["accuracy"] >= 0.85, summary
    assert summary["auc"] >= 0.9, summary
    assert evaluation["confusion_matrix"]["classes"] == ["NORMAL", "PNEUMONIA"]
    assert np.sum(evaluation["confusion_matrix"]["matrix"]) == 30
    assert len(evaluation["roc"]["fpr"]) == len(evaluation["roc"]["tpr"]) >= 2
    case = evaluation["cases"][0]
    assert {"path", "true", "predicted", "probability"} <= set(case) and Path(case["path"]).is_file()
    rows = [json.loads(line) for line in (trained["run"] / "metrics.jsonl").read_text().splitlines()]
    for key in (
        "val_loss",
        "val_acc",
        "val_sensitivity",
        "val_specificity",
        "val_auc",
        "train_loss",
        "train_acc",
        "train_sensitivity",
        "train_specificity",
        "train_auc",
    ):
        assert key in rows[-1], key
    assert trained["result"]["monitor"] == "val_acc"


def _peak_hits(heatmaps, boxes, cell, transform=None) -> float:
    """Share of heatmaps whose peak lies in the finding box grown by one CAM cell."""
    hits = []
    for heat, box in zip(heatmaps, boxes, strict=True):
        h, w = heat.shape
        if transform == "flip":
            heat = heat[:, ::-1]
        elif transform == "transpose":
            heat = heat.T  # square images
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        x0, y0, x1, y1 = box[0] * w - cell, box[1] * h - cell, box[2] * w + cell, box[3] * h + cell
        hits.append(x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1)
    return float(np.mean(hits))


@pytest.mark.train
def test_cam_peak_falls_on_the_finding(trained, capsys):
    from core.infer import load_predictor

    predictor = load_predictor(trained["run"])
    findings = read_findings(trained["data"])
    paths = sorted((trained["data"] / "test" / "PNEUMONIA").glob("*.png"))
    volumes = [load_volume(p) for p in paths]
    rates = {}
    for method in ("cam", "gradcam"):
        preds = predictor.predict_many(volumes, cam_method=method)
        right = [i for i, p in enumerate(preds) if p.label == "PNEUMONIA"]
        assert len(right) >= 10
        heats = [preds[i].heatmap[0] for i in right]
        boxes = [findings[f"test/PNEUMONIA/{paths[i].name}"] for i in right]
        cell = SIZE / (predictor.members[0].image_size // 32)  # one layer4 cell in image pixels
        rates[method] = {t or "as is": _peak_hits(heats, boxes, cell, t) for t in (None, "flip", "transpose")}
        assert all(p.extras["cam_method"] == method for p in preds)
    with capsys.disabled():
        print(f"\nCAM / Grad-CAM peak inside the finding (+1 cell): {rates}")
    assert rates["cam"]["as is"] >= 0.8, rates
    assert rates["cam"]["flip"] < 0.8 and rates["cam"]["transpose"] < 0.8, rates


@pytest.mark.train
@pytest.mark.parametrize("shape", [(128, 128), (97, 211), (300, 120), (1, 1), (2, 3)])
def test_heatmap_has_the_original_shape(trained, shape):
    from core.infer import load_predictor

    predictor = load_predictor(trained["run"])
    rng = np.random.default_rng(0)
    volume = Volume(array=rng.uniform(0, 255, (1, *shape)).astype(np.float32), modality="OT")
    for method in ("cam", "gradcam", "gradcam++"):
        p = predictor.predict(volume, cam_method=method)
        assert p.heatmap.shape == (1, *shape) and p.heatmap.dtype == np.float32
        assert p.heatmap.min() >= 0 and p.heatmap.max() == pytest.approx(1.0)
        assert p.label in ("NORMAL", "PNEUMONIA") and sum(p.probabilities.values()) == pytest.approx(
            1, abs=1e-5
        )


@pytest.mark.train
def test_bad_inputs_are_classified_or_refused_by_name(trained, tmp_path):
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    from core.infer import load_predictor

    predictor = load_predictor(trained["run"])
    src = np.asarray(Image.open(next((trained["data"] / "test" / "PNEUMONIA").glob("*.png"))))
    rgb = tmp_path / "colour.jpg"
    Image.fromarray(np.stack([src, src, src], axis=-1)).save(rgb, quality=95)
    deep = tmp_path / "deep.png"
    Image.fromarray(src.astype(np.uint16) * 257).save(deep)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PhotometricInterpretation = "DX", "MONOCHROME1"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = src.shape[0], src.shape[1], 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (4095 - src.astype(np.uint16) * 16).tobytes()  # white-is-low: bone stored dark
    mono1 = tmp_path / "mono1.dcm"
    ds.save_as(mono1, enforce_file_format=True)
    reference = predictor.predict(load_volume(next((trained["data"] / "test" / "PNEUMONIA").glob("*.png"))))
    for path in (rgb, deep, mono1):
        p = predictor.predict(load_volume(path))
        assert p.heatmap.shape == (1, *src.shape)
        assert p.probabilities["PNEUMONIA"] == pytest.approx(reference.probabilities["PNEUMONIA"], abs=0.1), (
            path
        )
    assert pydicom.dcmread(mono1).PhotometricInterpretation == "MONOCHROME1"
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(SlicewiseError, match="corrupt.png"):
        load_volume(corrupt)
    stack = Volume(array=np.zeros((3, 8, 8), np.float32), modality="CT", source="/x/ct.nii.gz")
    with pytest.raises(VolumeReadError, match="ct.nii.gz"):
        predictor.predict(stack)


# ---------------------------------------------------------------- data layout (no training)


def _tiny_folder(root: Path, splits=("train", "val"), classes=("NORMAL", "PNEUMONIA"), n=3) -> Path:
    from core.io.writers import write_png

    for split in splits:
        for c in classes:
            for i in range(n):
                write_png(np.full((16, 16), (25 * i) % 256, np.uint8), root / split / c / f"{c}_{i}.png")
    return root


def test_empty_class_folder_and_one_class_are_refused_naming_the_folder(tmp_path):
    from core.models.xray_classifier.data import resolve_class_folders

    one = _tiny_folder(tmp_path / "one", classes=("NORMAL",))
    with pytest.raises(TrainingDataError, match=r"one/train.*two class folders"):
        resolve_class_folders(one)
    empty = _tiny_folder(tmp_path / "empty")
    for f in (empty / "train" / "PNEUMONIA").iterdir():
        f.unlink()
    with pytest.raises(TrainingDataError, match=r"empty/train/PNEUMONIA.*no images"):
        resolve_class_folders(empty)
    with pytest.raises(TrainingDataError, match="no train/ folder"):
        resolve_class_folders(tmp_path / "nothing")


def test_no_val_folder_gives_a_seeded_stratified_split(tmp_path):
    from core.models.xray_classifier.data import resolve_class_folders

    root = _tiny_folder(tmp_path / "d", splits=("train",), n=10)
    a = resolve_class_folders(root, 0.2, seed=1)
    b = resolve_class_folders(root, 0.2, seed=1)
    assert a.val_from_train and a.val.counts(2) == [2, 2] and a.train.counts(2) == [8, 8]
    assert a.val.paths == b.val.paths and a.classes == ["NORMAL", "PNEUMONIA"]
    assert not set(a.val.paths) & set(a.train.paths)


def test_unreadable_files_are_skipped_and_listed(tmp_path, caplog):
    from core.models.xray_classifier.train import XrayDataModule, resolve_class_folders

    root = _tiny_folder(tmp_path / "d", n=3)
    bad = root / "train" / "NORMAL" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _huge_png_header(root / "train" / "PNEUMONIA" / "huge.png")
    settings = get_spec("xray_classifier").preset_settings(QUICK_PRESET)
    dm = XrayDataModule(resolve_class_folders(root), settings)
    with caplog.at_level(logging.WARNING, logger="slicewise.train"):
        dm.setup("fit")
    assert len(dm._decode("train")[1]) == 6 and len(dm.skipped) == 2
    assert "broken.png" in caplog.text and "skipped unreadable" in caplog.text
    assert "huge.png" in caplog.text and "900000000 pixels" in caplog.text  # refused before decoding


def _huge_png_header(path: Path) -> None:
    """A 30000 x 30000 PNG header over a few bytes of data (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_spec_settings_presets_and_dataset_rule(tmp_path):
    spec = get_spec("xray_classifier")
    for key in (
        "backbone",
        "image_size",
        "freeze_backbone",
        "max_epochs",
        "batch_size",
        "lr",
        "num_workers",
        "lr_step",
        "weights_path",
        "cam_method",
    ):
        assert key in spec.defaults
    assert (
        spec.defaults["backbone"],
        spec.defaults["image_size"],
        spec.defaults["freeze_backbone"],
        spec.defaults["max_epochs"],
        spec.defaults["lr_step"],
    ) == ("resnet152", 224, True, 10, 4)
    quick = spec.preset_settings(QUICK_PRESET)
    assert quick["freeze_backbone"] is False and quick["backbone"] == "resnet18"
    assert spec.review == "image_classes" and spec.monitor == "val_acc" and spec.monitor_mode == "max"
    root = _tiny_folder(tmp_path / "d")
    assert spec.dataset_rule(root, {p.name for p in root.iterdir()})
    assert not spec.dataset_rule(root / "train", {p.name for p in (root / "train").iterdir()})


def test_frozen_backbone_trains_only_the_head_and_says_when_there_are_no_weights(tmp_path):
    from core.models.xray_classifier.train import XrayModule

    settings = {
        **get_spec("xray_classifier").defaults,
        "backbone": "resnet18",
        "weights_path": str(tmp_path / "missing.pth"),
    }
    module = XrayModule(settings, ["NORMAL", "PNEUMONIA"], 1)
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert trainable == ["net.fc.weight", "net.fc.bias"]
    assert module.model.head.in_features == 512 and "training from scratch" in module.notices[0]
    module.train()
    assert not module.model.net.bn1.training and module.model.net.fc.training


def test_demo_hook_writes_the_layout_with_finding_boxes(tmp_path):
    from core.models.xray_classifier.synthetic import write_demo

    cases = write_demo(tmp_path, seed=0, small=True, progress=lambda _m: None)
    assert {c["split"] for c in cases} == {"train", "val", "test"}
    positives = [c for c in cases if c["label"] == "PNEUMONIA"]
    assert positives and all(len(c["finding_box"]) == 4 for c in positives)
    assert all((tmp_path / c["path"]).is_file() for c in cases)
    findings = read_findings(tmp_path / "xray")
    assert len(findings) == len(positives)
    x0, y0, x1, y1 = next(iter(findings.values()))
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
