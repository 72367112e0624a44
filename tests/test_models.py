"""Model registry and the lung localizer networks (SPEC 5A): shapes, layers, settings parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.models import FAMILY_NAMES, ModelSpec, get_spec, list_specs
from core.train.cli import TrainSettingsError, resolve_settings
from core.train.config import SettingsError, apply_overrides, validate_settings

REPO = Path(__file__).resolve().parents[1]


def test_registry_lists_lung_localizer_with_json_able_typed_defaults():
    names = [spec.name for spec in list_specs()]
    assert "lung_localizer" in names
    assert set(names) <= set(FAMILY_NAMES)
    spec = get_spec("lung_localizer")
    assert isinstance(spec, ModelSpec) and spec.task == "box_regression"
    assert json.loads(json.dumps(spec.defaults)) == spec.defaults
    assert (
        spec.defaults["image_size"] == 512
        and spec.defaults["lr"] == 1e-4
        and spec.defaults["max_epochs"] == 100
    )
    assert spec.defaults["lr_factor"] == 0.1 and spec.defaults["lr_patience"] == 10
    assert spec.defaults["save_top_k"] == 5 and spec.defaults["backbone"] == "resnet50"
    assert spec.monitor == "val_loss" and spec.monitor_mode == "min"
    assert set(spec.help) <= set(spec.defaults)
    assert spec.setting_types()["augment"] is bool


def test_unknown_family_names_the_registered_ones():
    with pytest.raises(KeyError, match="lung_localizer"):
        get_spec("no_such_family")
    with pytest.raises(TrainSettingsError, match="registered families"):
        resolve_settings("no_such_family", Path("unused"), [])


def test_registry_import_does_not_import_torch():
    code = (
        "import sys, core.models; core.models.get_spec('lung_localizer'); assert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_overrides_are_parsed_by_the_defaults_types():
    spec = get_spec("lung_localizer")
    settings = apply_overrides(spec, ["image_size=128", "lr=3e-4", "augment=false", "backbone=resnet18"])
    assert settings["image_size"] == 128 and settings["lr"] == 3e-4
    assert settings["augment"] is False and settings["backbone"] == "resnet18"
    assert spec.defaults["image_size"] == 512  # defaults untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("imagesize=128", r"unknown setting 'imagesize'.*valid keys: .*image_size"),
        ("image_size=big", r"image_size' expects int"),
        ("augment=maybe", r"augment' expects bool"),
        ("backbone=vgg16", r"not one of resnet50, efficientnet_b0"),
        ("no_equals_sign", r"key=value"),
    ],
)
def test_bad_overrides_raise_clear_errors(override, message):
    with pytest.raises(SettingsError, match=message):
        apply_overrides(get_spec("lung_localizer"), [override])
    with pytest.raises(TrainSettingsError, match=message):
        resolve_settings("lung_localizer", Path("unused"), [override])


def test_saved_settings_are_validated():
    spec = get_spec("lung_localizer")
    assert validate_settings(spec, {"lr": 1})["lr"] == 1.0
    with pytest.raises(SettingsError, match="expects int"):
        validate_settings(spec, {"batch_size": 2.5})


def test_full_resnet50_localizer_has_the_reference_layers():
    import torch

    from core.models.lung_localizer.net import build_model, model_args

    model = build_model(**model_args(get_spec("lung_localizer").defaults))
    net = model.net
    conv1 = net.conv1
    assert isinstance(conv1, torch.nn.Conv2d)
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride, conv1.padding) == (
        1,
        64,
        (7, 7),
        (2, 2),
        (3, 3),
    )
    assert conv1.bias is None
    head = net.fc
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert tuple(head[0].weight.shape) == (1024, 2048) and tuple(head[3].weight.shape) == (4, 1024)
    assert head[2].p == pytest.approx(0.2)
    assert tuple(net.layer4[-1].conv3.weight.shape) == (2048, 512, 1, 1)
    n_params = sum(p.numel() for p in model.parameters())
    assert 25_000_000 < n_params < 26_000_000  # ResNet-50 trunk (23.5 M) + the 2.1 M head


def test_efficientnet_variant_and_ensemble_shapes():
    import torch

    from core.models.lung_localizer.net import LungBoxEnsemble, build_model

    eff = build_model("efficientnet_b0", image_size=64)
    stem = eff.net.features[0][0]
    assert stem.in_channels == 1 and stem.bias is None
    assert tuple(eff.net.classifier[0].weight.shape) == (1024, 1280)
    assert tuple(eff.net.classifier[-1].weight.shape) == (4, 1024)
    ensemble = build_model("ensemble", image_size=64)
    assert isinstance(ensemble, LungBoxEnsemble) and len(ensemble.members) == 2
    ensemble.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        members = ensemble.member_boxes(x)
        boxes = ensemble(x)
    assert members.shape == (2, 2, 4) and boxes.shape == (2, 4)
    assert torch.allclose(boxes, members.mean(0))


def test_outputs_are_clamped_to_the_image_size():
    import torch

    from core.models.lung_localizer.net import build_model, init_head_bias

    model = build_model("resnet18", image_size=32).eval()
    init_head_bias(model, [-50.0, -50.0, 500.0, 500.0])
    with torch.no_grad():
        boxes = model(torch.randn(3, 1, 32, 32))
    assert boxes.shape == (3, 4)
    assert float(boxes.min()) >= 0.0 and float(boxes.max()) <= 32.0


def test_imagenet_weights_load_from_a_local_file_with_the_stem_averaged(tmp_path):
    import torch
    from torchvision import models

    from core.models.lung_localizer.net import build_model, load_imagenet_weights

    rgb = models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(rgb.state_dict(), path)
    model = build_model("resnet18", image_size=64)
    notice = load_imagenet_weights(model, str(path))
    assert "ImageNet weights" in notice
    assert torch.allclose(model.net.conv1.weight, rgb.conv1.weight.mean(dim=1, keepdim=True))
    assert torch.equal(model.net.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)


def test_without_local_weights_training_starts_from_scratch_and_says_so(tmp_path):
    from core.models.lung_localizer.net import build_model, load_imagenet_weights

    model = build_model("resnet18", image_size=64)
    notice = load_imagenet_weights(model, str(tmp_path / "missing.pth"))
    assert "training from scratch" in notice and "never downloaded" in notice


def test_presets_start_from_the_defaults_and_name_only_known_settings():
    from core import train_form
    from core.models import REFERENCE_PRESET, ModelSpec

    spec = get_spec("lung_localizer")
    assert spec.preset_names()[0] == REFERENCE_PRESET
    assert spec.preset_settings(REFERENCE_PRESET) == spec.defaults
    quick = spec.preset_settings("quick")
    assert quick["backbone"] == "resnet18" and quick["lr_patience"] == spec.defaults["lr_patience"]
    assert train_form.default_preset(spec, ["cpu"]) == "quick"
    assert train_form.default_preset(spec, ["cuda", "cpu"]) == REFERENCE_PRESET
    fields = {f.key: f.default for f in train_form.setting_fields(spec, preset="quick")}
    assert fields["image_size"] == 128 and "device" not in fields
    with pytest.raises(KeyError, match="unknown preset"):
        spec.preset_settings("fast")
    with pytest.raises(KeyError, match="unknown settings"):
        ModelSpec(name="x", task="t", title="x", defaults={"a": 1},
                  presets={"p": {"b": 2}})
