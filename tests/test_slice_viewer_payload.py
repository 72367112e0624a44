"""The slice viewer's payloads for one volume: raw slices (exact modality values) split between the
viewer's own payload (the opening slice) and the feeds (the rest, nearest first), and the layers apart.
Nothing depends on the window or the layers' look: changing those in the browser re-sends nothing."""

from __future__ import annotations

import numpy as np

from core.render import OverlayLayer
from core.view_payload import decode_plane, from_raw, intensity_coding, unpack
from core.volume import Volume
from pages._ui.frames import CHUNK, FEED_CHUNKS, volume_view


def _volume(z: int = 21, y: int = 24, x: int = 30) -> Volume:
    zz, yy, xx = np.mgrid[:z, :y, :x]
    hu = (-1000 + 60 * zz + 7 * yy + xx).astype(np.float32)  # every slice differs
    return Volume(array=hu, spacing=(2.5, 0.7, 0.7), modality="CT", volume_id="v",
                  slice_ids=[f"v#{i}" for i in range(z)])


def _layers(volume: Volume) -> dict[str, OverlayLayer]:
    mask = np.zeros(volume.shape, np.uint8)
    mask[:, 5:15, 5:20] = 1
    heat = np.zeros(volume.shape, np.float32)
    heat[:, 2:6, 2:9] = 0.75
    boxes = np.full((volume.shape[0], 4), np.nan, np.float32)
    boxes[4] = (0.1, 0.1, 0.5, 0.5)
    return {"m": OverlayLayer("mask", mask, colour=(0, 200, 80), opacity=1.0, label="m"),
            "h": OverlayLayer("heatmap", heat, opacity=0.5, label="h", threshold=0.05),
            "b": OverlayLayer("boxes", boxes, label="b")}


def test_slices_are_exact_in_any_order_and_either_path():
    volume = _volume()
    view, problems = volume_view("/v", 1.0, volume, {})
    assert not problems and view.count == 21
    coding = intensity_coding(volume.array)
    wanted = [20, 3, CHUNK, CHUNK - 1, 0]  # across runs, out of order
    blobs = view.slices(wanted)
    for i, blob in zip(wanted, blobs, strict=True):
        np.testing.assert_array_equal(from_raw(decode_plane(blob, volume.shape[1:]), coding), volume.array[i])
    assert view.slices([3]) == [blobs[1]]  # the opening slice alone encodes the same bytes


def test_the_header_carries_geometry_window_presets_and_the_layers_look():
    volume = _volume()
    view, _ = volume_view("/v", 1.0, volume, _layers(volume))
    axial, coronal = view.header("axial"), view.header("coronal")
    assert axial["shape"] == [21, 24, 30] and axial["window"] == [-600.0, 1500.0] and axial["unit"] == "HU"
    assert axial["aspect"] == 1.0 and coronal["aspect"] == 2.5 / 0.7 and coronal["flip"] and not axial["flip"]
    assert "ct_classifier" not in {p["name"] for p in axial["presets"]}
    kinds = {layer["name"]: layer["kind"] for layer in axial["layers"]}
    assert kinds == {"m": "mask", "h": "heatmap", "b": "boxes"}
    assert [row[0] for row in next(x for x in axial["layers"] if x["name"] == "b")["boxes"]] == [4]


def test_layers_feed_apart_and_the_volume_key_ignores_window_and_look():
    volume = _volume()
    layers = _layers(volume)
    view, _ = volume_view("/v", 1.0, volume, layers)
    feeds = view.layer_payloads()
    assert len(feeds) == 2  # mask and heatmap; boxes travel in the header
    assert view.feed_payload(10, 0) == view.feed_payload(10, 0)  # the same bytes every rerun: a reference
    faded = {**layers, "m": OverlayLayer("mask", layers["m"].data, opacity=0.1, label="m")}
    again, _ = volume_view("/v", 1.0, volume, faded)
    assert again.volume_key == view.volume_key and again.layer_payloads() == feeds
    assert volume_view("/v", 2.0, volume, layers)[0].volume_key != view.volume_key  # a new file version


def test_a_layer_of_another_shape_is_left_out_with_a_problem_naming_it():
    volume = _volume()
    bad = OverlayLayer("mask", np.zeros((21, 10, 10), np.uint8), label="wrong")
    view, problems = volume_view("/v", 1.0, volume, {"wrong": bad})
    assert not view.layers and len(problems) == 1 and "'wrong'" in problems[0]


def test_the_feeds_carry_every_slice_but_the_start_once_exactly():
    volume = _volume()
    view, _ = volume_view("/v", 1.0, volume, {})
    coding = intensity_coding(volume.array)
    payloads = [unpack(view.feed_payload(10, slot)) for slot in range(view.feed_count)]
    assert view.feed_count == -(-21 // (CHUNK * FEED_CHUNKS))
    assert {h["volume"] for h, _ in payloads} == {view.volume_key}
    sent = {i: b for h, blobs in payloads for i, b in zip(h["indices"], blobs, strict=True)}
    assert sorted(sent) == [i for i in range(21) if i != 10]
    for i, blob in sent.items():
        np.testing.assert_array_equal(from_raw(decode_plane(blob, volume.shape[1:]), coding), volume.array[i])
    assert set(payloads[0][0]["indices"]) >= {i for i in range(CHUNK, 2 * CHUNK) if i != 10}  # its own run
    far = [max(abs(i - 10) for i in h["indices"]) for h, _ in payloads]
    assert len(payloads) >= 2 and far == sorted(far)  # nearest runs first
