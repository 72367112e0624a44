"""core.view_payload: what the browser viewer receives (raw slices, layers), the window maths it mirrors."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from core import render
from core.render import OverlayLayer
from core.view_payload import (
    INTERNAL_PRESETS,
    IntensityCoding,
    box_rows,
    check_layer,
    decode_plane,
    drag_window,
    encode_plane,
    encode_slices,
    feed_plan,
    from_raw,
    heatmap_bytes,
    initial_window,
    intensity_coding,
    layer_blob,
    layer_header,
    mask_bytes,
    pack,
    to_raw,
    unpack,
    window_grey,
    window_presets,
)


def _ct(z: int = 5, y: int = 12, x: int = 14) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1024, 3071, (z, y, x)).astype(np.float32)


def test_integer_ct_travels_exactly_as_uint16_with_an_offset():
    hu = _ct()
    coding = intensity_coding(hu)
    assert coding.slope == 1.0 and coding.intercept == hu.min() and coding.exact
    assert (coding.low, coding.high) == (hu.min(), hu.max())
    for i, blob in enumerate(encode_slices(hu, range(hu.shape[0]), coding)):
        np.testing.assert_array_equal(from_raw(decode_plane(blob, hu.shape[1:]), coding), hu[i])


def test_int16_full_range_and_uint16_offsets_stay_exact():
    wide = np.array([[[-32768, 0], [100, 32767]]], np.int16)
    coding = intensity_coding(wide)
    np.testing.assert_array_equal(from_raw(to_raw(wide[0], coding), coding), wide[0])
    shifted = np.array([[[60000, 65535], [60001, 62000]]], np.uint16)
    coding = intensity_coding(shifted)
    assert coding.intercept == 60000
    np.testing.assert_array_equal(from_raw(to_raw(shifted[0], coding), coding), shifted[0])


def test_float_mr_is_quantised_to_16_bits_of_its_range():
    rng = np.random.default_rng(1)
    mr = rng.random((3, 8, 9)).astype(np.float32) * 3.7 + 0.25
    coding = intensity_coding(mr)
    assert not coding.exact
    back = from_raw(to_raw(mr[1], coding), coding)
    assert np.abs(back - mr[1]).max() <= coding.slope / 2 + 1e-9
    assert coding.slope == pytest.approx((mr.max() - mr.min()) / 65535, rel=1e-6)


def test_non_finite_values_map_to_the_lowest_value():
    arr = np.array([[[np.nan, 5.0], [np.inf, -3.0]]], np.float32)
    coding = intensity_coding(arr)
    assert coding.intercept == -3.0 and coding.exact
    np.testing.assert_array_equal(from_raw(to_raw(arr[0], coding), coding), [[-3, 5], [-3, -3]])


def test_a_constant_volume_has_a_usable_coding():
    coding = intensity_coding(np.full((2, 3, 3), 7.0, np.float32))
    assert coding.exact and coding.value_range == 0
    np.testing.assert_array_equal(to_raw(np.full((3, 3), 7.0), coding), 0)


def test_slice_blobs_are_byte_planes_deflated():
    raw = np.array([[0x0102, 0x0304]], np.uint16)
    data = zlib.decompress(encode_plane(raw))
    assert data == bytes([0x02, 0x04, 0x01, 0x03])  # low bytes, then high bytes
    assert encode_plane(raw) == encode_plane(raw.copy())  # deterministic: payloads stay identical


def test_masks_travel_as_uint8_labels_and_heatmaps_as_0_to_255():
    mask = np.zeros((2, 3, 4), np.uint8)
    mask[1, 1, 2] = 3
    assert np.array_equal(np.frombuffer(zlib.decompress(mask_bytes(mask)), np.uint8).reshape(2, 3, 4), mask)
    as_bool = np.frombuffer(zlib.decompress(mask_bytes(mask > 0)), np.uint8)
    assert as_bool.max() == 1 and as_bool.sum() == 1
    big = np.frombuffer(zlib.decompress(mask_bytes(np.array([[300, -2]], np.int32))), np.uint8)
    np.testing.assert_array_equal(big, [255, 0])
    heat = np.array([[[0.0, 0.5], [1.0, np.nan]]], np.float32)
    sent = np.frombuffer(zlib.decompress(heatmap_bytes(heat)), np.uint8)
    np.testing.assert_array_equal(sent, [0, 128, 255, 0])
    levels = np.array([[[0, 7], [128, 255]]], np.uint8)  # a uint8 heatmap is 0-255 already: as is
    assert heatmap_bytes(levels) == heatmap_bytes(levels.astype(np.float32) / 255)


def test_boxes_travel_as_vectors_of_the_slices_that_have_one():
    arr = np.full((4, 4), np.nan, np.float32)
    arr[2] = (0.1, 0.2, 0.5, 0.6)
    assert box_rows(arr) == [[2, *(float(v) for v in arr[2])]]
    by_slice = {3: (0.1, 0.1, 0.2, 0.2), "1": (0, 0, 1, 1)}
    assert box_rows(by_slice) == [[1, 0, 0, 1, 1], [3, 0.1, 0.1, 0.2, 0.2]]
    assert box_rows(None) == []
    head = layer_header("b", OverlayLayer("boxes", arr, colour=(1, 2, 3), opacity=0.5))
    assert head["kind"] == "boxes" and head["boxes"] == box_rows(arr) and "shape" not in head
    assert layer_blob(OverlayLayer("boxes", arr)) == b""


def test_layer_header_describes_the_starting_look():
    heat = OverlayLayer("heatmap", np.zeros((2, 3, 4), np.float32), opacity=0.4, threshold=0.05, label="h")
    head = layer_header("Heatmap — x", heat)
    assert head["colormap"] == "jet" and head["shape"] == [2, 3, 4] and head["threshold"] == 0.05
    assert head["visible"] is True and head["opacity"] == 0.4


def test_check_layer_names_a_layer_that_does_not_fit_the_volume():
    assert check_layer("ok", OverlayLayer("mask", np.zeros((2, 3, 4))), (2, 3, 4)) is None
    assert check_layer("plane", OverlayLayer("mask", np.zeros((3, 4))), (2, 3, 4)) is None  # axial only
    problem = check_layer("bad", OverlayLayer("mask", np.zeros((2, 5, 4))), (2, 3, 4))
    assert "'bad'" in problem and "(2, 5, 4)" in problem


def test_reading_presets_leave_out_model_windows():
    presets = window_presets("CT")
    assert "lung" in presets and not set(INTERNAL_PRESETS) & set(presets)
    assert window_presets("MR") == {}
    assert initial_window(_ct(), "CT") == (-600.0, 1500.0)


def test_drag_window_right_widens_down_raises_the_level():
    assert drag_window(-600, 1500, 10, 0, 4000) == (-600, 1580)
    assert drag_window(-600, 1500, 0, -5, 4000) == (-640, 1500)
    assert drag_window(40, 3, -100, 0, 4000)[1] == 1.0  # never below 1
    assert drag_window(0.5, 1.0, 2, 2, 0.1) == (2.5, 3.0)  # at least 1 unit a pixel


@pytest.mark.parametrize("window", [(-600.0, 1500.0), (40.0, 400.0), (0.0, 1.0)])
def test_browser_window_table_matches_the_server_windowing(window):
    hu = _ct()[0]
    got = window_grey(hu, *window).astype(int)
    expected = render.window_to_uint8(hu, *window).astype(int)
    assert np.abs(got - expected).max() <= 1  # float64 (browser) vs float32 (numpy) rounding


def test_pack_unpack_round_trip_and_refuse_foreign_bytes():
    header, blobs = unpack(pack({"volume": "v", "indices": [4, 0]}, [b"ab", b"", b"cde"]))
    assert header["volume"] == "v" and header["sizes"] == [2, 0, 3] and blobs == [b"ab", b"", b"cde"]
    with pytest.raises(ValueError, match="not a slice-viewer payload"):
        unpack(b"\x89PNG....")


@pytest.mark.parametrize(("count", "start", "chunk"), [(133, 66, 8), (133, 0, 8), (133, 132, 8), (12, 6, 8),
                                                       (9, 8, 4), (2, 1, 8)])
def test_feed_plan_sends_every_other_slice_once_nearest_first(count, start, chunk):
    slots = (3, 6, None)
    plan = feed_plan(count, start, chunk, slots)
    assert len(plan) == len(slots)
    sent = [i for part in plan for i in part]
    assert sorted(sent) == [i for i in range(count) if i != start]
    near = {i for i in range(start - chunk, start + chunk + 1) if 0 <= i < count and i != start}
    assert near <= set(plan[0])
    far = [max(abs(i - start) for i in part) for part in plan if part]
    assert far == sorted(far)


def test_coding_header_says_whether_the_readout_is_exact():
    assert IntensityCoding(1.0, -1024.0).header()["exact"] is True
    assert IntensityCoding(0.5, 0.0).header()["exact"] is False
