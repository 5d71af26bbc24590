"""The exactly-once sink's record: ids written per partition and topic, streams per partition.

The faust table is stood in for as in test_seen_ids.py; the pipeline tests run the real one.
"""

from __future__ import annotations

from ctstream.streams.written_ids import StreamRecord, WrittenIds
from tests.unit.test_seen_ids import TableStandIn


def test_an_id_written_for_the_main_table_is_not_one_written_for_its_restricted_copy() -> None:
    written = WrittenIds(TableStandIn(), window=60.0)
    main = written.digest("p.items.deduped", "items|1|7")
    restricted = written.digest("p.items.restricted", "items|1|7")
    assert main != restricted
    written.remember(0, [(1000.0, main)])
    assert written.written(0, 1000.0, main)
    assert not written.written(0, 1000.0, restricted)
    assert not written.written(1, 1000.0, main)  # another partition's record


def test_ids_of_one_call_in_two_windows_are_remembered_in_both() -> None:
    written = WrittenIds(TableStandIn(), window=60.0)
    a, b = written.digest("t", "a"), written.digest("t", "b")
    written.remember(0, [(59.0, a), (61.0, b)])
    assert written.written(0, 59.0, a) and written.written(0, 61.0, b)
    assert written.written(0, 61.0, a)  # the window before is looked at too


def test_streams_are_listed_per_topic_partition_oldest_first_and_dropped() -> None:
    table = TableStandIn()
    written = WrittenIds(table, window=60.0)
    newer = StreamRecord("t", 0, "projects/p/datasets/d/tables/x/streams/b", 5, 20.0)
    older = StreamRecord("t", 0, "projects/p/datasets/d/tables/x/streams/a", 3, 10.0)
    other = StreamRecord("t", 1, "projects/p/datasets/d/tables/x/streams/c", 1, 5.0)
    for record in (newer, older, other):
        written.save(record)
    assert written.streams("t", 0) == [older, newer]
    written.drop(older)
    assert written.streams("t", 0) == [newer]
    assert written.streams("t", 1) == [other]
    # The stream entries are not read as id entries.
    assert written.ids.count() == 0
