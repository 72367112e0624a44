"""BoxStore: schema, validation, atomic writes, broken files, change log, undo/redo."""

from __future__ import annotations

import csv
import json
from datetime import datetime

import pytest

from core.annotations import COLUMNS, BoxStore, InvalidBoxError
from core.errors import AnnotationFormatError, SlicewiseError

HEADER = ",".join(COLUMNS)


@pytest.fixture
def store(tmp_path):
    return BoxStore(tmp_path / "annotations" / "lung_bbox.csv")


def _upsert(store, image="1.2.3.1", box=(0.1, 0.2, 0.8, 0.9), z=0, who="ana"):
    return store.upsert(image, *box, volume="1.2.3", slice=z, annotator=who)


def test_empty_store_has_no_rows_and_no_file(store):
    assert store.rows() == []
    assert store.get("x") is None
    assert not store.path.exists()


def test_upsert_writes_the_spec_columns_in_order(store):
    _upsert(store)
    with open(store.path, newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == list(COLUMNS)
        fields = next(reader)
    assert fields[:7] == ["1.2.3.1", "0.100000", "0.200000", "0.800000", "0.900000", "1.2.3", "0"]
    assert fields[7] == "ana"
    updated = datetime.fromisoformat(fields[8])
    assert updated.utcoffset().total_seconds() == 0
    row = store.rows()[0]
    assert list(row) == list(COLUMNS)
    assert row["Xmin"] == 0.1 and row["Slice"] == 0


def test_pandas_reads_the_first_five_columns_like_the_reference(store):
    pd = pytest.importorskip("pandas")
    _upsert(store)
    df = pd.read_csv(store.path)
    assert list(df.columns[:5]) == ["Image", "Xmin", "Ymin", "Xmax", "Ymax"]
    assert df.loc[0, "Xmax"] * 512 == pytest.approx(409.6)


def test_upsert_replaces_the_row_of_the_same_slice(store):
    _upsert(store, box=(0.1, 0.1, 0.5, 0.5))
    _upsert(store, image="1.2.3.2", z=1)
    _upsert(store, box=(0.2, 0.3, 0.6, 0.7), who="bob")
    rows = store.rows()
    assert [r["Image"] for r in rows] == ["1.2.3.1", "1.2.3.2"]
    assert store.get("1.2.3.1")["Xmin"] == 0.2 and store.get("1.2.3.1")["Annotator"] == "bob"


def test_delete_removes_the_row(store):
    _upsert(store)
    _upsert(store, image="b", z=1)
    assert store.delete("1.2.3.1") is True
    assert [r["Image"] for r in store.rows()] == ["b"]
    assert store.delete("1.2.3.1") is False


def test_coordinates_are_clipped_to_unit_range(store):
    row = _upsert(store, box=(-0.2, 0.1, 1.4, 0.9))
    assert (row["Xmin"], row["Xmax"]) == (0.0, 1.0)


@pytest.mark.parametrize(
    "box",
    [
        (0.5, 0.1, 0.5, 0.9),  # zero width
        (0.6, 0.1, 0.4, 0.9),  # reversed
        (0.1, 0.9, 0.8, 0.2),
        (1.2, 0.1, 1.5, 0.9),  # empty after clipping
        (float("nan"), 0.1, 0.5, 0.9),
        (0.1, float("inf"), 0.5, 0.9),
        ("a", 0.1, 0.5, 0.9),
        (None, 0.1, 0.5, 0.9),
    ],
)
def test_degenerate_or_invalid_boxes_raise(store, box):
    with pytest.raises(InvalidBoxError) as info:
        _upsert(store, box=box)
    assert isinstance(info.value, SlicewiseError)
    assert str(store.path) in str(info.value)
    assert not store.path.exists()


def test_bad_slice_and_empty_image_raise(store):
    with pytest.raises(InvalidBoxError, match="Slice"):
        store.upsert("a", 0.1, 0.1, 0.5, 0.5, volume="v", slice=-1, annotator="x")
    with pytest.raises(InvalidBoxError, match="Slice"):
        store.upsert("a", 0.1, 0.1, 0.5, 0.5, volume="v", slice="two", annotator="x")
    with pytest.raises(InvalidBoxError, match="Image"):
        store.upsert(" ", 0.1, 0.1, 0.5, 0.5, volume="v", slice=0, annotator="x")


def test_ids_with_commas_and_quotes_round_trip(store):
    store.upsert('scans/a,b "x".nii.gz#3', 0.1, 0.1, 0.5, 0.5, volume='scans/a,b "x".nii.gz',
                 slice=3, annotator="Dr. O'Neil, MD")
    fresh = BoxStore(store.path)
    row = fresh.get('scans/a,b "x".nii.gz#3')
    assert row["Volume"] == 'scans/a,b "x".nii.gz' and row["Annotator"] == "Dr. O'Neil, MD"


BROKEN = {
    "wrong header": ("Image,Xmin,Ymin,Xmax,Ymax\nA,0.1,0.1,0.5,0.5\n", 1),
    "non-numeric": (f"{HEADER}\nA,0.1,0.1,0.5,0.5,v,0,a,t\nB,0.1,zero,0.5,0.5,v,1,a,t\n", 3),
    "too few fields": (f"{HEADER}\nA,0.1,0.1,0.5,0.5,v,0,a\n", 2),
    "too many fields": (f"{HEADER}\nA,0.1,0.1,0.5,0.5,v,0,a,t\nB,0.1,0.1,0.5,0.5,v,1,a,t,x\n", 3),
    "duplicate image": (f"{HEADER}\nA,0.1,0.1,0.5,0.5,v,0,a,t\n\nA,0.2,0.1,0.5,0.5,v,0,a,t\n", 4),
    "reversed box": (f"{HEADER}\nA,0.6,0.1,0.5,0.5,v,0,a,t\n", 2),
    "out of range": (f"{HEADER}\nA,0.1,0.1,1.5,0.5,v,0,a,t\n", 2),
    "bad slice": (f"{HEADER}\nA,0.1,0.1,0.5,0.5,v,zero,a,t\n", 2),
    "empty image": (f"{HEADER}\n,0.1,0.1,0.5,0.5,v,0,a,t\n", 2),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_hand_broken_csv_names_file_and_line_and_is_never_overwritten(store, name):
    text, line = BROKEN[name]
    store.path.parent.mkdir(parents=True)
    store.path.write_text(text)
    with pytest.raises(AnnotationFormatError) as info:
        store.rows()
    assert str(store.path) in str(info.value) and f"line {line}" in str(info.value)
    with pytest.raises(AnnotationFormatError):
        _upsert(store)
    with pytest.raises(AnnotationFormatError):
        store.delete("A")
    with pytest.raises(AnnotationFormatError):
        store.undo()
    assert store.path.read_text() == text
    assert not store.log_path.exists()


def test_not_utf8_is_a_format_error(store):
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(HEADER.encode() + b"\n\xff\xfe,0.1\n")
    with pytest.raises(AnnotationFormatError, match="UTF-8"):
        store.rows()


def test_empty_file_counts_as_empty_store(store):
    store.path.parent.mkdir(parents=True)
    store.path.write_text("")
    assert store.rows() == []
    _upsert(store)
    assert len(store) == 1


def test_cache_sees_writes_from_another_store_object(store):
    other = BoxStore(store.path)
    _upsert(store)
    assert other.get("1.2.3.1")["Xmin"] == 0.1
    _upsert(other, box=(0.3, 0.3, 0.4, 0.4))
    assert store.get("1.2.3.1")["Xmin"] == 0.3


def test_write_leaves_no_temp_file_and_cleans_stale_ones(store):
    store.path.parent.mkdir(parents=True)
    stale = store.path.parent / f".{store.path.name}.abc.tmp"
    stale.write_text("half a row")
    _upsert(store)
    assert sorted(p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_change_log_records_every_change(store):
    _upsert(store, who="ana")
    _upsert(store, box=(0.2, 0.2, 0.7, 0.7), who="bob")
    store.delete("1.2.3.1", annotator="cy")
    log = [json.loads(line) for line in store.log_path.read_text().splitlines()]
    log = [{k: v for k, v in e.items() if k != "pending"} for e in log if "commit" not in e]
    assert [e["action"] for e in log] == ["upsert", "upsert", "delete"]
    assert [e["annotator"] for e in log] == ["ana", "bob", "cy"]
    assert log[0]["old"] is None and log[1]["old"]["Xmin"] == 0.1 and log[2]["new"] is None
    assert store.history("1.2.3.1") == log
    assert store.history("other") == []


def test_undo_and_redo_restore_previous_states(store):
    _upsert(store, box=(0.1, 0.1, 0.5, 0.5))
    _upsert(store, box=(0.2, 0.2, 0.6, 0.6))
    store.delete("1.2.3.1")
    assert store.undo() == ["1.2.3.1"]
    assert store.get("1.2.3.1")["Xmin"] == 0.2
    assert store.undo() == ["1.2.3.1"]
    assert store.get("1.2.3.1")["Xmin"] == 0.1
    assert store.undo() == ["1.2.3.1"]
    assert store.get("1.2.3.1") is None
    assert store.undo() == []
    assert store.redo() == ["1.2.3.1"]
    assert store.get("1.2.3.1")["Xmin"] == 0.1
    assert store.redo() == ["1.2.3.1"]
    assert store.get("1.2.3.1")["Xmin"] == 0.2
    assert [e["action"] for e in store.history()][-5:] == ["undo", "undo", "undo", "redo", "redo"]


def test_a_new_change_clears_redo(store):
    _upsert(store)
    store.undo()
    assert store.can_redo()
    _upsert(store, image="other", z=2)
    assert not store.can_redo() and store.redo() == []
    assert store.undo() == ["other"]
    assert store.undo() == []  # the first upsert was already undone


def test_upsert_many_is_one_undo_step(store):
    boxes = [{"Image": f"s{z}", "Xmin": 0.1, "Ymin": 0.1, "Xmax": 0.9, "Ymax": 0.9, "Volume": "v",
              "Slice": z} for z in range(5)]
    assert store.upsert_many(boxes, annotator="auto") == 5
    assert {r["Annotator"] for r in store.rows()} == {"auto"}
    assert sorted(store.undo()) == [f"s{z}" for z in range(5)]
    assert store.rows() == []
    assert len(store.redo()) == 5 and len(store) == 5


def test_upsert_many_validates_everything_before_writing(store):
    boxes = [{"Image": "a", "Xmin": 0.1, "Ymin": 0.1, "Xmax": 0.9, "Ymax": 0.9, "Volume": "v", "Slice": 0},
             {"Image": "b", "Xmin": 0.9, "Ymin": 0.1, "Xmax": 0.1, "Ymax": 0.9, "Volume": "v", "Slice": 1}]
    with pytest.raises(InvalidBoxError):
        store.upsert_many(boxes, annotator="auto")
    assert store.rows() == []


def test_torn_last_log_line_is_skipped_and_repaired(store):
    _upsert(store)
    with open(store.log_path, "a") as handle:
        handle.write('{"time": "2024-01-01", "act')  # writer killed mid-line
    assert len(store.history()) == 1
    _upsert(store, image="b", z=1)
    assert [e["image"] for e in store.history()] == ["1.2.3.1", "b"]
    assert store.undo() == ["b"]


def test_for_volume_maps_slice_index_to_row(store):
    _upsert(store, image="a", z=3)
    store.upsert("b", 0.1, 0.1, 0.5, 0.5, volume="other", slice=1, annotator="x")
    assert list(store.for_volume("1.2.3")) == [3]


# --------------------------------- Annotate page logic (core.annotate; the canvas: test_annotate_canvas.py)

def test_next_slice_without_a_box_wraps_round():
    from core.annotate import next_without_box

    assert next_without_box(5, {1, 2}, 0) == 3
    assert next_without_box(5, {3, 4, 0}, 2) == 1
    assert next_without_box(3, {0, 1, 2}, 1) is None



def test_upsert_many_replace_is_decided_under_the_lock(tmp_path):
    """A box stored between a caller reading the store and its batch write (a person's drag while
    proposals were computed) is kept when `replace` says so; other slices are written."""
    store = BoxStore(tmp_path / "lung_bbox.csv")
    store.upsert("a", 0.1, 0.1, 0.5, 0.5, volume="v", slice=0, annotator="auto")
    # ... the proposal batch is computed here, while a person draws on slice b ...
    store.upsert("b", 0.2, 0.2, 0.6, 0.6, volume="v", slice=1, annotator="alice")
    batch = [{"Image": image, "Xmin": 0.3, "Ymin": 0.3, "Xmax": 0.7, "Ymax": 0.7, "Volume": "v", "Slice": z}
             for z, image in enumerate(("a", "b", "c"))]
    written = store.upsert_many(batch, annotator="auto", replace=lambda row: row["Annotator"] == "auto")
    rows = {r["Image"]: r for r in store.rows()}
    assert written == 2
    assert rows["b"]["Annotator"] == "alice" and rows["b"]["Xmin"] == 0.2
    assert rows["a"]["Xmin"] == 0.3 and rows["c"]["Xmin"] == 0.3
    store.undo(annotator="alice")  # one undo step removes exactly the batch
    rows = {r["Image"]: r for r in store.rows()}
    assert set(rows) == {"a", "b"} and rows["a"]["Xmin"] == 0.1
