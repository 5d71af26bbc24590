"""After a take-over, rows found by look-up are counted against the finalized streams that
hold them, oldest first; a stream's record goes once all its rows are found."""

from __future__ import annotations

from ctstream.agents.exactly_once import ExactlyOnceWrites, _Partition
from ctstream.bigquery.committed_streams import WriteStream
from ctstream.streams.written_ids import StreamRecord


def state(unknown: int, *finalized: tuple[int, int | None]) -> _Partition:
    records = [
        (StreamRecord("t", 0, f"s{i}", rows, float(i)), holds)
        for i, (rows, holds) in enumerate(finalized)
    ]
    current = StreamRecord("t", 0, "new", 0, 9.0)
    return _Partition(current, WriteStream("new"), unknown, 0.0, 0, records)


def names(records: list[StreamRecord]) -> list[tuple[str, int]]:
    return [(r.name, r.rows) for r in records]


def test_found_rows_fill_the_oldest_stream_first_and_its_record_goes_when_full() -> None:
    s = state(5, (10, 12), (0, 3))  # 2 + 3 rows not recorded
    s.unknown -= 3  # as _look_up does
    save, drop = ExactlyOnceWrites._count_found(s, 3)
    assert names(save) == [("s1", 1)]
    assert names(drop) == [("s0", 12)]
    assert [r.name for r, _ in s.finalized] == ["s1"]
    s.unknown -= 2
    save, drop = ExactlyOnceWrites._count_found(s, 2)
    assert (names(save), names(drop)) == ([], [("s1", 3)])
    assert s.finalized == []


def test_a_gone_stream_is_dropped_only_when_the_look_up_ends() -> None:
    s = state(100, (4, None))
    s.unknown -= 7
    save, drop = ExactlyOnceWrites._count_found(s, 7)
    assert (names(save), drop) == ([("s0", 11)], [])
    s.unknown = 0  # the look-up limit was reached
    save, drop = ExactlyOnceWrites._count_found(s, 0)
    assert (save, names(drop)) == ([], [("s0", 11)])
