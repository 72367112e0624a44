"""The slice viewer's binary payload: PNG frames packed after a JSON header, read back exactly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pages._ui.slice_viewer import encode_frames, pack_stack, unpack_stack


def test_pack_unpack_round_trip_keeps_every_frame():
    frames = [np.full((4, 5), i * 40, np.uint8) for i in range(3)]
    pngs = encode_frames(frames)
    header, back = unpack_stack(pack_stack({"stack": "abc", "width": 5}, pngs))
    assert header["stack"] == "abc" and header["sizes"] == [len(p) for p in pngs]
    decoded = [np.asarray(Image.open(io.BytesIO(p))) for p in back]
    for original, got in zip(frames, decoded, strict=True):
        np.testing.assert_array_equal(original, got)


def test_unpack_refuses_foreign_bytes():
    with pytest.raises(ValueError, match="not a slice-viewer payload"):
        unpack_stack(b"\x89PNG....")
