"""core.render: orientation, aspect, windowing, montage, overlays and readout on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from core import render
from core.render import OverlayLayer


@pytest.fixture
def ramp():
    """(z, y, x) = (4, 5, 6) with value 100*z + 10*y + x, so every voxel says where it is."""
    z, y, x = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    return (100 * z + 10 * y + x).astype(np.float32)


@pytest.mark.parametrize(
    ("orientation", "count", "shape"),
    [("axial", 4, (5, 6)), ("coronal", 5, (4, 6)), ("sagittal", 6, (4, 5))],
)
def test_slice_shapes_and_counts(ramp, orientation, count, shape):
    assert render.slice_count(ramp.shape, orientation) == count
    assert render.extract_slice(ramp, orientation, 1).shape == shape


def test_axial_is_the_z_plane_unflipped(ramp):
    np.testing.assert_array_equal(render.extract_slice(ramp, "axial", 2), ramp[2])


def test_coronal_and_sagittal_put_superior_at_the_top(ramp):
    coronal = render.extract_slice(ramp, "coronal", 3)
    assert coronal[0, 0] == 300 + 30  # top row is the last z (head end when z points superior)
    assert coronal[-1, 0] == 30
    sagittal = render.extract_slice(ramp, "sagittal", 2)
    assert sagittal[0, 1] == 300 + 10 + 2
    flipped_z = np.diag([1.0, 1.0, -1.0])
    assert render.extract_slice(ramp, "coronal", 3, flipped_z)[0, 0] == 30


def test_slice_index_out_of_range_raises(ramp):
    with pytest.raises(IndexError, match="axial slice 4 is outside 0..3"):
        render.extract_slice(ramp, "axial", 4)
    with pytest.raises(ValueError, match="orientation"):
        render.extract_slice(ramp, "oblique", 0)


def test_display_aspect_from_spacing():
    spacing = (2.5, 0.7, 0.7)
    assert render.display_aspect(spacing, "axial") == pytest.approx(1.0)
    assert render.display_aspect(spacing, "coronal") == pytest.approx(2.5 / 0.7)
    assert render.display_aspect((3.0, 0.5, 1.0), "sagittal") == pytest.approx(6.0)
    stretched = render.resample_rows(np.zeros((10, 7), np.uint8), 2.5)
    assert stretched.shape == (25, 7)


def test_resample_rows_keeps_values_of_constant_rows():
    img = np.repeat(np.array([[0], [200]], dtype=np.uint8), 3, axis=1)
    out = render.resample_rows(img, 4.0)
    assert out.shape == (8, 3)
    assert out[0, 0] == 0 and out[-1, 0] == 200


def test_window_to_uint8_maps_lung_window_ends():
    hu = np.array([[-1350.0, -600.0, 150.0, 3000.0]])
    grey = render.window_to_uint8(hu, -600, 1500)
    assert grey.dtype == np.uint8
    assert grey.tolist() == [[0, 128, 255, 255]]


def test_montage_shape_and_tile_order():
    tiles = [np.full((3, 4), i, np.uint8) for i in range(40)]
    grid = render.montage(tiles, rows=4, cols=10, gap=2)
    assert grid.shape == (4 * 3 + 3 * 2, 10 * 4 + 9 * 2)
    assert grid[0, 0] == 0 and grid[0, 6] == 1 and grid[5, 0] == 10 and grid[-1, -1] == 39


def test_montage_indices_are_evenly_spaced():
    assert render.montage_indices(100, 40)[0] == 0
    assert render.montage_indices(100, 40)[-1] == 99
    assert len(render.montage_indices(100, 40)) == 40
    assert render.montage_indices(5, 40) == [0, 1, 2, 3, 4]


def test_render_montage_of_a_volume(ramp):
    grid, indices = render.render_montage(ramp, "axial", (200, 400), rows=2, cols=3, gap=2)
    assert indices == [0, 1, 2, 3]
    assert grid.shape == (2 * 5 + 2, 3 * 6 + 4, 3)


def test_red_box_lands_on_the_right_pixels():
    grey = np.full((100, 200), 50, np.uint8)
    box = (0.25, 0.10, 0.75, 0.50)
    layer = OverlayLayer("boxes", {0: box}, colour=(255, 0, 0), opacity=1.0, line_width=1)
    rgb = render.composite(grey, [layer], "axial", 0)
    red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0)
    ys, xs = np.nonzero(red)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (50, 149, 10, 49)
    assert not red[30, 100]  # the inside stays grey
    assert render.box_to_pixels((0.25, 0.10, 0.75, 0.50), (100, 200)) == (50, 10, 149, 49)


def test_boxes_from_nan_array_and_other_slices():
    boxes = np.full((3, 4), np.nan, np.float32)
    boxes[1] = (0.1, 0.1, 0.9, 0.9)
    grey = np.zeros((20, 20), np.uint8)
    layer = OverlayLayer("boxes", boxes, opacity=1.0)
    assert render.composite(grey, [layer], "axial", 0)[..., 0].max() == 0
    assert render.composite(grey, [layer], "axial", 1)[..., 0].max() == 255
    assert render.composite(grey, [layer], "coronal", 1)[..., 0].max() == 0


def test_opacity_zero_or_hidden_leaves_the_image_unchanged():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    mask = np.ones((1, 8, 8), np.uint8)
    hidden = OverlayLayer("mask", mask, opacity=1, visible=False)
    for layer in (OverlayLayer("mask", mask, opacity=0.0), hidden):
        rgb = render.composite(grey, [layer])
        np.testing.assert_array_equal(rgb, render.grey_to_rgb(grey))


def test_fill_vs_contour():
    grey = np.zeros((10, 10), np.uint8)
    mask = np.zeros((1, 10, 10), np.uint8)
    mask[0, 2:8, 2:8] = 1
    filled = render.composite(grey, [OverlayLayer("mask", mask, (0, 255, 0), 1.0, style="fill")])
    outline = render.composite(grey, [OverlayLayer("mask", mask, (0, 255, 0), 1.0, style="contour",
                                                   line_width=1)])
    assert (filled[..., 1] == 255).sum() == 36
    assert (outline[..., 1] == 255).sum() == 36 - 16  # the 6x6 square's 1-pixel border
    assert outline[4, 4, 1] == 0 and outline[2, 4, 1] == 255 and outline[0, 0, 1] == 0


def test_half_opacity_blends():
    grey = np.full((4, 4), 100, np.uint8)
    rgb = render.composite(grey, [OverlayLayer("mask", np.ones((4, 4)), (255, 0, 0), 0.5)])
    assert tuple(rgb[0, 0]) == (178, 50, 50)


def test_heatmap_uses_jet_and_threshold():
    assert tuple(render.jet(np.array([1.0]))[0]) == (128, 0, 0)
    assert tuple(render.jet(np.array([0.0]))[0]) == (0, 0, 128)
    heat = np.zeros((1, 4, 4), np.float32)
    heat[0, 1, 1] = 1.0
    layer = OverlayLayer("heatmap", heat, opacity=1.0, threshold=0.1)
    rgb = render.composite(np.zeros((4, 4), np.uint8), [layer])
    assert tuple(rgb[1, 1]) == (128, 0, 0)
    assert rgb[0, 0].sum() == 0


def test_a_uint8_heatmap_draws_as_its_value_times_255():
    """The Viewer keeps stored heatmaps as uint8 0-255 (what the browser gets): drawn as value / 255."""
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (2, 16, 16)).astype(np.uint8)
    grey = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    as_float = OverlayLayer("heatmap", levels.astype(np.float32) / 255, opacity=0.6, threshold=0.3)
    as_uint8 = OverlayLayer("heatmap", levels, opacity=0.6, threshold=0.3)
    np.testing.assert_array_equal(render.composite(grey, [as_uint8], index=1),
                                  render.composite(grey, [as_float], index=1))
    np.testing.assert_array_equal(render.heat_values(np.array([0, 128, 255], np.uint8)),
                                  np.float32([0, 128, 255]) / np.float32(255))


def test_overlay_shape_mismatch_names_the_layer():
    with pytest.raises(ValueError, match="lung mask"):
        layer = OverlayLayer("mask", np.ones((1, 5, 5)), label="lung mask")
        render.composite(np.zeros((4, 4), np.uint8), [layer])


def test_bad_layer_kind_and_style_raise():
    with pytest.raises(ValueError, match="overlay kind"):
        OverlayLayer("polygon", None)
    with pytest.raises(ValueError, match="mask style"):
        OverlayLayer("mask", None, style="dotted")


def test_readout_maps_display_pixels_back_to_voxels(ramp):
    assert render.readout(ramp, "axial", 2, 3, 4).value == 234
    r = render.readout(ramp, "coronal", 1, 0, 5)  # top row = last z
    assert (r.z, r.y, r.x, r.value) == (3, 1, 5, 315)
    r = render.readout(ramp, "sagittal", 4, 3, 2)
    assert (r.z, r.y, r.x, r.value) == (0, 2, 4, 24)
    outside = render.readout(ramp, "axial", 0, 9, 9)
    assert not outside.inside and np.isnan(outside.value)


def test_render_slice_is_rgb_at_native_grid(ramp):
    rgb = render.render_slice(ramp, "coronal", 0, (200, 400))
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8


def test_montage_tiles_are_block_averaged_to_max_tile():
    vol = np.zeros((8, 64, 64), np.float32)
    vol[:, :32] = 1000
    grid, indices = render.render_montage(vol, "axial", (500, 1000), rows=2, cols=4, gap=0, max_tile=16)
    assert len(indices) == 8
    assert grid.shape == (2 * 16, 4 * 16, 3)
    assert grid[0, 0, 0] == 255 and grid[15, 0, 0] == 0
    assert render.downsample(np.array([[0, 255], [255, 0]], np.uint8), 2).tolist() == [[128]]


def test_window_choices_offer_reading_windows_only():
    from core.render import AUTO_WINDOW, CUSTOM_WINDOW, resolve_window, window_choices
    from core.windowing import MODEL_PRESETS, PRESETS

    options, default = window_choices("CT")
    assert options == ["lung", "mediastinum", "bone", "brain", AUTO_WINDOW, CUSTOM_WINDOW]
    assert default == "lung" and "ct_classifier" in MODEL_PRESETS and "ct_classifier" in PRESETS
    assert window_choices("MR") == (options, AUTO_WINDOW)
    # the model's window is still there for the model that uses it
    assert resolve_window("ct_classifier", np.zeros((2, 2), np.float32)) == PRESETS["ct_classifier"]
