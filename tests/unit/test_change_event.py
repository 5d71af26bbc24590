"""ChangeEvent payloads and the normalisation of database values."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import uuid
from typing import Any

import orjson
import pytest

from ctstream.errors import BadEvent
from ctstream.models.change_event import (
    FIELDS,
    ChangeEvent,
    parse_payload,
    peek_unique_id,
)
from ctstream.models.unique_id import unique_id
from ctstream.models.values import normalise


def make_event(**changes: Any) -> ChangeEvent:
    fields: dict[str, Any] = {
        "message_unique_id": unique_id("items", [1, "a,b"], 17),
        "table_name": "items",
        "changetrack_interval": 1.25,
        "changetrack_start_time": "2024-05-01T12:00:00.000000Z",
        "changetrack_type": "U",
        "changetrack_ver": 17,
        "key": [1, "a,b"],
        "row": {"id": 1, "code": "a,b", "price": "12.50", "blob": "AAE=", "gone": None},
    }
    fields.update(changes)
    return ChangeEvent(**fields)


def payload(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(make_event().to_bytes())
    obj.update(changes)
    return obj


def test_round_trip() -> None:
    event = make_event()
    data = event.to_bytes()
    assert isinstance(data, bytes)
    back = ChangeEvent.from_bytes(data)
    assert back == event
    assert back.to_bytes() == data


def test_a_parsed_event_is_as_frozen_as_a_constructed_one() -> None:
    # from_bytes builds events without the dataclass's __init__ (a speed path).
    back = ChangeEvent.from_bytes(make_event().to_bytes())
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.row = {}  # type: ignore[misc]
    assert repr(back) == repr(make_event())


@pytest.mark.parametrize("op", ["I", "U", "D"])
def test_round_trip_every_operation(op: str) -> None:
    event = make_event(changetrack_type=op, row={"id": 1} if op == "D" else {"id": 1, "x": 2})
    assert ChangeEvent.from_bytes(event.to_bytes()) == event


def test_round_trip_unicode_and_big_version() -> None:
    event = make_event(table_name="日本", changetrack_ver=2**62, row={"ü": "😀\n\\"})
    assert ChangeEvent.from_bytes(event.to_bytes()) == event


def test_the_checked_payload_is_the_events_fields() -> None:
    event = make_event()
    assert parse_payload(event.to_bytes()) == event.as_payload()
    assert list(event.as_payload()) == list(FIELDS)  # to_bytes' order: the id first
    with pytest.raises(BadEvent, match="missing field 'row'"):
        parse_payload(orjson.dumps({k: v for k, v in payload().items() if k != "row"}))


def test_integer_interval_is_accepted_as_float() -> None:
    back = ChangeEvent.from_bytes(orjson.dumps(payload(changetrack_interval=2)))
    assert back.changetrack_interval == 2.0
    assert isinstance(back.changetrack_interval, float)


@pytest.mark.parametrize(
    ("uid", "table"),
    [
        (unique_id("items", [1, "a,b"], 17), "items"),
        (unique_id("日本", ["ü😀", 2], 2**62), "日本"),
        ("plain", 'odd"name'),
        ('"', "items"),
    ],
)
def test_peek_unique_id_reads_the_id_of_an_event_as_written(uid: str, table: str) -> None:
    data = make_event(message_unique_id=uid, table_name=table).to_bytes()
    assert peek_unique_id(data, table) == uid.encode("utf-8")


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"",
        b"not json",
        make_event(message_unique_id="a\\b").to_bytes(),  # another escape than a quote's
        make_event(message_unique_id='a\\"b').to_bytes(),
        make_event(message_unique_id="a\nb").to_bytes(),
        make_event(message_unique_id="a\u0001").to_bytes(),
        make_event(message_unique_id="").to_bytes(),
        make_event(table_name="other").to_bytes(),
        make_event(table_name="items2").to_bytes(),  # the table name is matched whole
        orjson.dumps({"table_name": "items", **payload()}),  # another field order
        orjson.dumps(payload(), option=orjson.OPT_INDENT_2),
        b'{"message_unique_id":"abc',
        # the marker found later, in the row: the "id" would hold an unescaped quote
        b'{"message_unique_id":"a","x":{"b","table_name":"items",',
    ],
)
def test_peek_unique_id_leaves_anything_else_to_the_full_parse(data: bytes | None) -> None:
    assert peek_unique_id(data, "items") is None


def test_peek_and_full_parse_agree_on_the_id() -> None:
    for uid in ["k1", "ü:😀", 'q"uote', '""', "back\\slash", 'm\\"x', "tab\t"]:
        data = make_event(message_unique_id=uid).to_bytes()
        parsed = ChangeEvent.from_bytes(data).message_unique_id.encode("utf-8")
        assert peek_unique_id(data, "items") in (None, parsed)


def test_none_value_is_bad() -> None:
    with pytest.raises(BadEvent, match=r"empty|no value"):
        ChangeEvent.from_bytes(None)


def test_not_json_is_bad() -> None:
    with pytest.raises(BadEvent, match="not JSON"):
        ChangeEvent.from_bytes(b"\xff\x00")


def test_truncated_json_is_bad() -> None:
    with pytest.raises(BadEvent, match="not JSON"):
        ChangeEvent.from_bytes(make_event().to_bytes()[:-5])


@pytest.mark.parametrize("data", [b"[1, 2]", b"[]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_is_bad(data: bytes) -> None:
    with pytest.raises(BadEvent, match="not a JSON object"):
        ChangeEvent.from_bytes(data)


@pytest.mark.parametrize(
    "field",
    [
        "message_unique_id",
        "table_name",
        "changetrack_interval",
        "changetrack_start_time",
        "changetrack_type",
        "changetrack_ver",
        "key",
        "row",
    ],
)
def test_missing_field_is_named(field: str) -> None:
    obj = payload()
    del obj[field]
    with pytest.raises(BadEvent, match="missing field") as info:
        ChangeEvent.from_bytes(orjson.dumps(obj))
    assert field in str(info.value)


@pytest.mark.parametrize("op", ["X", "i", "", "INSERT", None, 1])
def test_bad_changetrack_type(op: Any) -> None:
    with pytest.raises(BadEvent, match="changetrack_type"):
        ChangeEvent.from_bytes(orjson.dumps(payload(changetrack_type=op)))


@pytest.mark.parametrize("op", [["I"], {"op": "I"}])
def test_unhashable_changetrack_type_is_bad_event(op: Any) -> None:
    with pytest.raises(BadEvent, match="changetrack_type"):
        ChangeEvent.from_bytes(orjson.dumps(payload(changetrack_type=op)))


@pytest.mark.parametrize("ver", ["17", 17.0, 17.5, None, [17]])
def test_non_int_version_is_bad(ver: Any) -> None:
    with pytest.raises(BadEvent, match="changetrack_ver"):
        ChangeEvent.from_bytes(orjson.dumps(payload(changetrack_ver=ver)))


@pytest.mark.parametrize("ver", [True, False])
def test_bool_version_is_bad(ver: bool) -> None:
    with pytest.raises(BadEvent, match="changetrack_ver"):
        ChangeEvent.from_bytes(orjson.dumps(payload(changetrack_ver=ver)))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"message_unique_id": ""}, "message_unique_id"),
        ({"message_unique_id": 5}, "message_unique_id"),
        ({"table_name": ""}, "table_name"),
        ({"table_name": None}, "table_name"),
        ({"changetrack_interval": "1s"}, "changetrack_interval"),
        ({"changetrack_interval": True}, "changetrack_interval"),
        ({"changetrack_start_time": 0}, "changetrack_start_time"),
        ({"key": "1"}, "key"),
        ({"row": [1]}, "row"),
    ],
)
def test_other_bad_fields(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadEvent, match=reason):
        ChangeEvent.from_bytes(orjson.dumps(payload(**changes)))


def test_bad_event_is_a_value_error() -> None:
    assert issubclass(BadEvent, ValueError)


# --- normalise -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, False, 0, -5, 2**63 - 1, "", "text", 1.5])
def test_json_native_values_pass_through(value: Any) -> None:
    out = normalise(value)
    assert out == value
    assert type(out) is type(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (decimal.Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789"),
        (decimal.Decimal("0.10"), "0.10"),  # trailing zero kept, not 0.1
        (decimal.Decimal("-1.005"), "-1.005"),
        (decimal.Decimal("99999999999999999999999999999.999999999"), None),
    ],
)
def test_decimal_is_exact_text(value: decimal.Decimal, expected: str | None) -> None:
    out = normalise(value)
    assert isinstance(out, str)
    if expected is not None:
        assert out == expected
    assert decimal.Decimal(out) == value


@pytest.mark.parametrize(
    "value", [b"", b"\x00\x01\xff", bytearray(b"abc"), memoryview(b"\xde\xad\xbe\xef")]
)
def test_bytes_become_base64(value: bytes | bytearray | memoryview) -> None:
    out = normalise(value)
    assert isinstance(out, str)
    assert base64.b64decode(out, validate=True) == bytes(value)


def test_aware_datetime_becomes_utc_z() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    value = dt.datetime(2024, 1, 1, 1, 2, 3, 4000, tzinfo=plus2)
    assert normalise(value) == "2023-12-31T23:02:03.004000Z"


def test_aware_datetimes_for_the_same_instant_agree() -> None:
    utc = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
    other = utc.astimezone(dt.timezone(dt.timedelta(hours=-5, minutes=-30)))
    assert normalise(utc) == normalise(other) == "2024-06-01T12:00:00.000000Z"


def test_aware_datetime_before_year_1000_has_four_digit_year() -> None:
    value = dt.datetime(999, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert normalise(value) == "0999-01-02T03:04:05.000000Z"


def test_naive_datetime_keeps_microseconds() -> None:
    assert normalise(dt.datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000000"  # noqa: DTZ001
    assert normalise(dt.datetime(2024, 1, 2, 3, 4, 5, 7)) == "2024-01-02T03:04:05.000007"  # noqa: DTZ001


def test_date_and_time() -> None:
    assert normalise(dt.date(2024, 2, 29)) == "2024-02-29"
    assert normalise(dt.time(23, 59, 1)) == "23:59:01"


def test_uuid_is_text() -> None:
    value = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
    out = normalise(value)
    assert isinstance(out, str)
    assert uuid.UUID(out) == value
    assert out == "0F8FAD5B-D9CB-469F-A165-70867728950E"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity")],
)
def test_non_finite_floats_become_strings(value: float, expected: str) -> None:
    assert normalise(value) == expected


@pytest.mark.parametrize("value", [object(), [1], {"a": 1}, {1}, complex(1, 2)])
def test_unsupported_type_is_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="cannot represent"):
        normalise(value)


def test_normalised_values_serialise() -> None:
    values = [
        decimal.Decimal("1.10"),
        b"\x00",
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        dt.date(2024, 1, 1),
        uuid.UUID(int=1),
        float("nan"),
    ]
    out = [normalise(v) for v in values]
    assert orjson.loads(orjson.dumps(out)) == out
