"""What a BigQuery client error means for the sink: try again, split, or give up."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gexc

from ctstream.bigquery.client import classify
from ctstream.errors import RequestTooLarge, SinkError, SinkUnavailable


@pytest.mark.parametrize(
    "exc",
    [
        gexc.ServiceUnavailable("down"),
        gexc.InternalServerError("oops"),
        gexc.TooManyRequests("slow down"),
        gexc.Forbidden("quota", errors=[{"reason": "quotaExceeded"}]),
        gexc.Conflict("busy"),
        requests.exceptions.ConnectionError("reset"),
        requests.exceptions.ReadTimeout("slow"),
        TimeoutError(),
    ],
)
def test_what_may_pass_is_retriable(exc: BaseException) -> None:
    error = classify(exc, "writing 5 rows to t")
    assert type(error) is SinkUnavailable and error.retriable
    assert str(error).startswith(f"writing 5 rows to t: {type(exc).__name__}")


@pytest.mark.parametrize(
    "exc",
    [
        gexc.from_http_status(413, "big"),
        gexc.BadRequest("Request payload size exceeds the limit"),
    ],
)
def test_a_request_too_large_is_told_apart(exc: BaseException) -> None:
    assert type(classify(exc, "insert")) is RequestTooLarge


@pytest.mark.parametrize(
    "exc",
    [
        gexc.BadRequest("no such field"),
        gexc.NotFound("no table"),
        gexc.Forbidden("denied", errors=[{"reason": "accessDenied"}]),
        ValueError("bug"),
    ],
)
def test_what_will_not_pass_is_not_retriable(exc: BaseException) -> None:
    error = classify(exc, "insert")
    assert type(error) is SinkError and not error.retriable


def test_an_error_of_ctstream_is_kept_and_a_long_message_cut() -> None:
    ours = SinkUnavailable("already classified")
    assert classify(ours, "insert") is ours
    assert len(str(classify(gexc.BadRequest("x" * 5000), "insert"))) < 400
