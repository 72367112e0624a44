"""The Viewer's server memory, measured with tracemalloc on real files (a DICOM series written with
pydicom, a prediction stored by core.predictions): bounds on peak allocation, not timings.

What the bounds guard (bench/bench_stepping.py measures the whole server's RSS): the reader does not
hold a second volume-sized array, the browser payloads are built one feed at a time (never the whole
compressed volume at once beside the copies Streamlit makes of each payload), and a stored heatmap is
read into the Viewer's uint8 0-255 without a whole float32 copy."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.io import load_volume
from core.io.writers import write_dicom_series
from core.memory import release_freed_memory
from core.predictions import Prediction, list_prediction_sets, load_prediction, save_prediction
from core.view_payload import decode_plane, from_raw, heatmap_to_uint8, unpack
from pages._ui.frames import CHUNK, FEED_CHUNKS, volume_view

SHAPE = (128, 192, 192)  # 18 MiB at float32; 16 feed payloads of FEED_CHUNKS runs of CHUNK slices


def _peak(fn: Callable[[], object]) -> tuple[object, int]:
    """(fn(), the peak of memory traced while it ran above what was traced before)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A CT series of noisy HU (compresses like real CT, not like a flat phantom)."""
    rng = np.random.default_rng(0)
    hu = (rng.normal(-300, 400, SHAPE)).clip(-1024, 3000).astype(np.int16)
    folder = tmp_path_factory.mktemp("viewer_memory") / "ct"
    write_dicom_series(hu, folder, spacing=(2.5, 0.7, 0.7))
    return folder, hu


def test_reading_a_series_holds_one_float32_volume_at_its_peak(series):
    folder, hu = series
    load_volume(folder)  # first-use allocations (pydicom's dictionaries) are not the reader's
    volume, peak = _peak(lambda: load_volume(folder))
    np.testing.assert_array_equal(volume.array, hu.astype(np.float32))
    # the array, headers, a slice per thread; a volume-sized boolean finite-check was 0.25x more
    assert peak < 1.2 * volume.nbytes, f"peak {peak / 2**20:.1f} MiB, volume {volume.nbytes / 2**20:.1f} MiB"


def test_feed_payloads_are_built_one_at_a_time_and_carry_every_slice_exactly(series):
    volume = load_volume(series[0])
    view, _ = volume_view("/ct", 1.0, volume, {})
    coding = view.coding
    start = 60
    assert view.feed_count == -(-SHAPE[0] // (CHUNK * FEED_CHUNKS)) >= 8

    def send_all() -> list[tuple[dict, int]]:
        seen = []
        for slot in range(view.feed_count):  # as slice_viewer_feed does: one payload alive at a time
            header, blobs = unpack(view.feed_payload(start, slot))
            for i, blob in zip(header["indices"], blobs, strict=True):
                np.testing.assert_array_equal(from_raw(decode_plane(blob, SHAPE[1:]), coding),
                                              volume.array[i])
            seen.append((header, sum(map(len, blobs))))
        return seen

    seen, peak = _peak(send_all)
    sent = sorted(i for header, _ in seen for i in header["indices"])
    assert sent == [i for i in range(SHAPE[0]) if i != start]
    whole = sum(size for _, size in seen)  # the compressed volume: what a cache of every feed held
    biggest = max(size for _, size in seen)
    # a payload, its blobs, the decoded check planes: a few times the biggest payload, not the volume
    assert peak < 4 * biggest + 2 * SHAPE[1] * SHAPE[2] * 8, f"peak {peak} for payloads of {biggest}"
    assert peak < 0.5 * whole + 2 * SHAPE[1] * SHAPE[2] * 8  # a cache of every feed: > 1x


def test_feed_payloads_are_not_kept_between_runs(series):
    volume = load_volume(series[0])
    view, _ = volume_view("/ct", 1.0, volume, {})
    first = view.feed_payload(60, 1)
    again = view.feed_payload(60, 1)
    assert first == again and first is not again  # same bytes (a reference for the browser), no cache


def test_a_stored_heatmap_is_read_as_uint8_without_a_float32_copy(series, tmp_path):
    volume = load_volume(series[0])
    rng = np.random.default_rng(1)
    heat = rng.random(SHAPE, dtype=np.float32)
    mask = (heat > 0.7).astype(np.uint8)
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"a checkpoint")
    save_prediction(volume, Prediction(family="toy", heatmap=heat, mask=mask), checkpoint,
                    runs_root=tmp_path / "runs")
    found = list_prediction_sets(volume.volume_id, tmp_path / "runs")[0]
    stored, peak = _peak(lambda: load_prediction(found, heatmap_as=heatmap_to_uint8))
    assert stored.heatmap.dtype == np.uint8 and stored.mask.dtype == np.uint8
    np.testing.assert_array_equal(stored.heatmap, heatmap_to_uint8(heat))  # what the browser gets
    np.testing.assert_array_equal(stored.mask, mask)
    # uint8 heatmap + uint8 mask, plus a slice at a time: never the float32 heatmap (4 bytes a voxel)
    assert peak < (1 + 1 + 0.5) * heat.size, f"peak {peak / 2**20:.1f} MiB"
    plain = load_prediction(found)
    assert plain.heatmap.dtype == np.float32 and np.array_equal(plain.heatmap, heat)


def test_release_freed_memory_runs_on_any_c_library():
    assert release_freed_memory() in (True, False)
    np.ones(SHAPE, np.float32)  # freed at once
    release_freed_memory()


def test_the_viewer_page_keeps_no_copy_of_the_volume_or_its_feeds_between_runs(data_root):
    """Through the page (AppTest): the run that sends the feeds, and a rerun, leave nothing volume-sized
    behind (the volume is cached once, read-only; feed payloads are not cached)."""
    from streamlit.testing.v1 import AppTest

    rng = np.random.default_rng(2)
    hu = rng.normal(-300, 400, (64, 128, 128)).clip(-1024, 3000).astype(np.int16)
    write_dicom_series(hu, data_root / "ct", spacing=(2.5, 0.7, 0.7))
    nbytes = hu.size * 4
    page = Path(__file__).resolve().parents[1] / "pages" / "viewer.py"
    at = AppTest.from_file(str(page), default_timeout=60)
    at.run()  # loads the volume, paints the opening slice
    assert not at.exception and len(at.get("bidi_component")) == 1

    def rerun() -> int:
        at.run()
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        after_feeds = rerun()  # the browser reported its first paint: this run sends every other slice
        feeds = [el for el in at.get("bidi_component") if el.proto.component_name.endswith("slice_feed")]
        after_rerun = rerun()
    finally:
        tracemalloc.stop()
    assert not at.exception and len(feeds) == -(-64 // (CHUNK * FEED_CHUNKS))
    assert sum(len(el.proto.bytes) for el in feeds) > 0.2 * nbytes  # what a cache of the feeds would hold
    assert after_feeds - before < 0.1 * nbytes, f"{(after_feeds - before) / 2**20:.1f} MiB kept"
    assert after_rerun - before < 0.1 * nbytes, f"{(after_rerun - before) / 2**20:.1f} MiB kept"
