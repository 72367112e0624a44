"""The slice viewer's binary payloads and how a stack is split among them: the start slice alone in
the viewer's payload, the rest in feed payloads, nearest first, every frame lossless."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core import render
from core.render import OverlayLayer
from core.volume import Volume
from pages._ui.frames import CHUNK, stack_frames
from pages._ui.slice_viewer import FEED_SLOTS, encode_frames, feed_plan, pack_stack, unpack_stack


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def _volume(z: int = 21, y: int = 24, x: int = 30) -> Volume:
    zz, yy, xx = np.mgrid[:z, :y, :x]
    hu = (-1000 + 60 * zz + 7 * yy + xx).astype(np.float32)  # every slice differs
    return Volume(array=hu, spacing=(2.5, 0.7, 0.7), modality="CT", volume_id="v",
                  slice_ids=[f"v#{i}" for i in range(z)])


def test_pack_unpack_round_trip_keeps_every_frame():
    frames = [np.full((4, 5), i * 40, np.uint8) for i in range(3)]
    pngs = encode_frames(frames)
    header, back = unpack_stack(pack_stack({"stack": "abc", "width": 5, "indices": [4, 0, 9]}, pngs))
    assert header["stack"] == "abc" and header["indices"] == [4, 0, 9]
    assert header["sizes"] == [len(p) for p in pngs]
    for original, got in zip(frames, back, strict=True):
        np.testing.assert_array_equal(original, _decode(got))


def test_an_empty_feed_payload_round_trips():
    header, back = unpack_stack(pack_stack({"stack": "abc", "indices": []}, []))
    assert header["sizes"] == [] and back == []


def test_unpack_refuses_foreign_bytes():
    with pytest.raises(ValueError, match="not a slice-viewer payload"):
        unpack_stack(b"\x89PNG....")


@pytest.mark.parametrize(("count", "start", "chunk"), [(133, 66, 8), (133, 0, 8), (133, 132, 8), (12, 6, 8),
                                                       (512, 255, 8), (9, 8, 4), (2, 1, 8)])
def test_feed_plan_sends_every_other_slice_once_nearest_first(count, start, chunk):
    plan = feed_plan(count, start, chunk)
    assert len(plan) == len(FEED_SLOTS)  # the page always has the same elements
    sent = [i for part in plan for i in part]
    assert sorted(sent) == [i for i in range(count) if i != start]  # each once, not the start again
    first = set(plan[0])
    assert {i for i in range(start - chunk, start + chunk + 1) if 0 <= i < count and i != start} <= first
    far = [max(abs(i - start) for i in part) for part in plan if part]
    assert far == sorted(far)  # later payloads reach further


def test_feed_plan_of_a_single_slice_is_empty():
    assert feed_plan(1, 0, 8) == [[] for _ in FEED_SLOTS]


def test_stack_frames_are_lossless_in_any_order_and_either_path():
    volume = _volume()
    window = (-600.0, 1500.0)
    frames = stack_frames("/v", 1.0, volume, "axial", window, [])
    assert frames.count == 21 and frames.chunk == CHUNK
    wanted = [20, 3, CHUNK, CHUNK - 1, 0]  # across chunks, out of order
    pngs = frames.frames(wanted)
    for i, png in zip(wanted, pngs, strict=True):
        expected = render.window_to_uint8(volume.array[i], *window)
        np.testing.assert_array_equal(_decode(png), expected)  # grey, exactly the displayed window
    assert frames.frames([3]) == [pngs[1]]  # the start slice alone encodes the same bytes


def test_stack_frames_draw_overlays_in_rgb_and_change_the_stack_id():
    volume = _volume()
    mask = np.zeros(volume.shape, np.uint8)
    mask[:, 5:15, 5:20] = 1
    layer = OverlayLayer("mask", mask, colour=(0, 200, 80), opacity=1.0, label="m")
    plain = stack_frames("/v", 1.0, volume, "coronal", (40.0, 400.0), [])
    drawn = stack_frames("/v", 1.0, volume, "coronal", (40.0, 400.0), [layer])
    assert plain.stack != drawn.stack and plain.count == drawn.count == 24
    rgb = _decode(drawn.frames([10, 11])[0])
    expected = render.render_slice(volume.array, "coronal", 10, (40.0, 400.0), [layer], volume.direction)
    np.testing.assert_array_equal(rgb, expected)
    other_window = stack_frames("/v", 1.0, volume, "coronal", (-600.0, 1500.0), [])
    assert other_window.stack != plain.stack
