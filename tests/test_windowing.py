import numpy as np
import pytest

from core.windowing import PRESETS, apply_window, auto_window, default_window, to_uint8


def test_presets_match_spec():
    assert PRESETS["lung"] == (-600.0, 1500.0)
    assert PRESETS["mediastinum"] == (40.0, 400.0)
    assert PRESETS["bone"] == (400.0, 1800.0)
    assert PRESETS["brain"] == (40.0, 80.0)
    c, w = PRESETS["ct_classifier"]
    assert (c - w / 2, c + w / 2) == (-1000.0, 400.0)


def test_apply_window_maps_linearly_and_clips():
    hu = np.array([-2000, -1350, -600, 150, 3000], dtype=np.int16)
    out = apply_window(hu, -600, 1500)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_ct_classifier_window_is_the_hu_clip():
    hu = np.linspace(-1500, 900, 97).astype(np.float32)
    c, w = PRESETS["ct_classifier"]
    expected = (np.clip(hu, -1000, 400) + 1000) / 1400
    np.testing.assert_allclose(apply_window(hu, c, w), expected, atol=1e-6)


def test_zero_or_negative_width_is_a_threshold():
    arr = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(apply_window(arr, 0.0, 0.0), [0, 1, 1])
    np.testing.assert_array_equal(apply_window(arr, 0.0, -5.0), [0, 1, 1])


def test_non_finite_window_is_refused():
    with pytest.raises(ValueError, match="finite"):
        apply_window(np.zeros(3), float("nan"), 10)


def test_auto_window_ignores_background_and_handles_constant():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), np.float32)
    img[16:48, 16:48] = rng.normal(500, 50, (32, 32))
    center, width = auto_window(img)
    assert 350 < center < 650 and 100 < width < 600
    assert auto_window(np.full((8, 8), 7.0)) == (7.0, 1.0)
    assert auto_window(np.full((8, 8), np.nan)) == (0.0, 1.0)


def test_default_window_per_modality():
    assert default_window(np.zeros((2, 2)), "CT") == PRESETS["lung"]
    assert default_window(np.arange(100.0).reshape(10, 10), "MR")[1] > 0


def test_to_uint8_rounds():
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 0.5, 1.0])), [0, 128, 255])
