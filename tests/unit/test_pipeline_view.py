"""The pipeline-wide view: workers' statuses combined, the worker list, the page."""

from __future__ import annotations

import asyncio
import html.parser
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ctstream.web.figures import Figures, chart_window, recent_figures, span_text
from ctstream.web.page import PageData, TableLinks, Thresholds, attention, render_page
from ctstream.web.pipeline import (
    REMEMBER_GONE_S,
    WorkerBook,
    combine_tables,
    gather_workers,
    member_urls,
    partition_kinds,
)


def status(tables: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "app": "app",
        "roles": ["poll", "dedup", "sink"],
        "time": 1000.0,
        "tables": tables,
        "partitions": [],
        "sink": {"retries": 0, "last_batch_at": None, "last_batch_rows": 0},
        "consumer_lag_total": 0,
        **extra,
    }


def test_counters_are_summed_and_the_poller_s_figures_kept() -> None:
    a = status(
        {
            "items": {
                "state": "streaming",
                "polls": 10,
                "events_produced": 100,
                "rows_written": 40,
                "saved_version": 77,
                "poll_failures": {"timeout": 1},
                "source_version_lag": 3,
            }
        }
    )
    b = status(
        {
            "items": {
                "state": "waiting",
                "polls": 0,
                "events_produced": 0,
                "rows_written": 60,
                "duplicates_dropped": 5,
                "saved_version": None,
                "poll_failures": {"timeout": 2, "refused": 1},
            }
        }
    )
    combined = combine_tables([a, b])["items"]
    assert combined["rows_written"] == 100
    assert combined["events_produced"] == 100
    assert combined["duplicates_dropped"] == 5
    assert combined["poll_failures"] == {"timeout": 3, "refused": 1}
    assert combined["state"] == "streaming"
    assert combined["saved_version"] == 77 and combined["source_version_lag"] == 3


def test_the_most_telling_state_wins_with_its_reason() -> None:
    a = status({"items": {"state": "streaming"}})
    b = status({"items": {"state": "stopped", "stopped_reason": "run ctstream snapshot"}})
    combined = combine_tables([a, b])["items"]
    assert combined["state"] == "stopped" and combined["reason"] == "run ctstream snapshot"


def test_partitions_are_counted_by_kind() -> None:
    parts = [
        {"topic": "p.items.raw", "partition": 0},
        {"topic": "p.items.raw", "partition": 1},
        {"topic": "p.kv.deduped", "partition": 0},
        {"topic": "app-ct-versions-changelog", "partition": 0},
        {"topic": "app-__assignor-__leader", "partition": 0},
        {"topic": "p.poll-ticks", "partition": 0},
    ]
    assert partition_kinds(parts, "app") == {
        "ct-versions changelog": 1,
        "deduped": 1,
        "leader": 1,
        "poll-ticks": 1,
        "raw": 2,
    }


def test_members_come_from_both_distributions() -> None:
    class Assignor:
        changelog_distribution = {"http://a:1/": {}, "http://b:2/": {"t": [0]}}
        external_topic_distribution = {"http://c:3/": {}}

    assert member_urls(Assignor()) == {"http://a:1/", "http://b:2/", "http://c:3/"}


def test_a_worker_that_does_not_answer_is_listed_and_remembered() -> None:
    book = WorkerBook()
    own = status({"items": {"state": "streaming", "rows_written": 1}})
    peer = status({"items": {"state": "waiting", "rows_written": 2}})
    answers: dict[str, Any] = {"http://b/": peer}

    async def fetch(url: str, path: str) -> Any:
        answer = answers.get(url)
        if answer is None:
            raise ConnectionRefusedError("refused")
        return answer

    async def gather(members: set[str], now: float) -> list[dict[str, Any]]:
        rows, statuses = await gather_workers("http://a/", own, members, book, fetch, now=now)
        assert statuses[0] is own
        return rows

    rows = asyncio.run(gather({"http://a/", "http://b/"}, 0.0))
    assert [(r["url"], r["state"]) for r in rows] == [("http://a/", "up"), ("http://b/", "up")]
    del answers["http://b/"]  # killed: still a member until the group notices
    rows = asyncio.run(gather({"http://a/", "http://b/"}, 10.0))
    assert rows[1]["state"] == "not answering" and rows[1]["in_group"]
    assert "ConnectionRefusedError" in rows[1]["error"]
    rows = asyncio.run(gather({"http://a/"}, 20.0))  # left the group: still shown
    assert rows[1]["state"] == "not answering" and not rows[1]["in_group"]
    assert "left the group" in rows[1]["error"] and rows[1]["last_seen"] == 10.0
    rows = asyncio.run(gather({"http://a/"}, 10.0 + REMEMBER_GONE_S + 1))
    assert [r["url"] for r in rows] == ["http://a/"]


def test_a_slow_worker_is_not_waited_for_forever() -> None:
    async def fetch(url: str, path: str) -> Any:
        await asyncio.sleep(3600)

    async def run() -> list[dict[str, Any]]:
        rows, _ = await gather_workers(
            "http://a/", status({}), {"http://b/"}, WorkerBook(), fetch, now=0.0
        )
        return rows

    rows = asyncio.run(asyncio.wait_for(run(), 10))
    assert rows[1]["state"] == "not answering" and "no answer within" in rows[1]["error"]


def series_doc(points: list[dict[str, Any]]) -> dict[str, Any]:
    return {"step": 5.0, "window": 900.0, "points": points}


def test_recent_figures_cover_the_last_minute() -> None:
    old = {"t": 900.0, "pipeline": {}, "tables": {"items": {"rows_out": 1000.0, "lag": 9}}}
    new = [
        {
            "t": 960.0 + 5 * i,
            "pipeline": {},
            "tables": {
                "items": {
                    "rows_in": 10.0,
                    "rows_out": 20.0,
                    "lag": i,
                    "error_rows": 1,
                    "latency_hist": {"90": 3},
                }
            },
        }
        for i in range(4)
    ]
    figures = recent_figures(series_doc([old, *new]), "items", now=1000.0)
    assert figures.rows_out_per_s == 20.0 and figures.rows_in_per_s == 10.0
    assert figures.lag == 3 and figures.error_rows == 4
    assert figures.latency_p99_s is not None and figures.latency_p99_s > 0
    assert recent_figures(series_doc([]), "items", now=1000.0) == Figures()


def test_the_chart_window_starts_near_the_first_point() -> None:
    doc = series_doc([{"t": 950.0, "pipeline": {}, "tables": {}}])
    assert chart_window(doc, 1000.0) == (940.0, 1000.0)
    assert chart_window(series_doc([]), 1000.0) == (100.0, 1000.0)
    assert span_text(0, 40) == "40 seconds" and span_text(0, 900) == "15 minutes"


THRESHOLDS = Thresholds(latency_p99_s=5.0, consumer_lag=100)


def test_attention_names_what_is_beyond_its_threshold() -> None:
    assert attention({"state": "streaming"}, Figures(latency_p99_s=1.0, lag=5), THRESHOLDS) == []
    reasons = attention({"state": "streaming"}, Figures(latency_p99_s=7.5, lag=500), THRESHOLDS)
    assert any("latency p99 7.50 s > 5 s" in r for r in reasons)
    assert any("consumer lag 500 > 100" in r for r in reasons)
    stopped = attention({"state": "stopped", "reason": "too old"}, Figures(), THRESHOLDS)
    assert stopped == ["stopped: too old"]


def page_data(tables: dict[str, dict[str, Any]], figures: dict[str, Figures]) -> PageData:
    return PageData(
        app="app",
        now=1000.0,
        workers=[
            {"url": "http://a/", "state": "up", "this_worker": True, "roles": ["poll"]},
            {"url": "http://b/", "state": "not answering", "error": "refused"},
        ],
        tables=tables,
        series=series_doc([]),
        thresholds=THRESHOLDS,
        links={
            name: TableLinks(f"/tables/ct-versions/?key={name}", [(f"p.d.{name}", None)])
            for name in tables
        },
        query="?token=abc",
        figures=figures,
    )


class Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_title = tag == "title" and "svg" not in self.tags

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def test_the_title_counts_the_tables_needing_attention() -> None:
    tables = {
        "ok": {"state": "streaming"},
        "slow": {"state": "streaming"},
        "dead": {"state": "stopped", "reason": "run ctstream snapshot"},
    }
    page = render_page(page_data(tables, {"slow": Figures(latency_p99_s=9.0)}))
    parsed = Elements()
    parsed.feed(page)
    assert parsed.title.endswith("2 need attention"), parsed.title
    assert page.count('class="attention"') == 3  # two tables and the worker not answering
    assert "/tables/ct-versions/?key=ok&amp;token=abc" in page


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_hostile_table_names_never_make_markup(name: str) -> None:
    tables = {name: {"state": "stopped", "reason": name, "schema_notes": [name]}}
    page = render_page(page_data(tables, {}))
    baseline = render_page(page_data({"x": {"state": "stopped", "reason": "x"}}, {}))
    parsed, expected = Elements(), Elements()
    parsed.feed(page)
    expected.feed(baseline)
    assert parsed.tags == expected.tags


def test_a_snapshot_under_way_shows_a_progress_bar_rate_and_eta() -> None:
    progress = {
        "phase": "reading",
        "rows": 30_000,
        "chunks": 3,
        "rows_estimate": 100_000,
        "rows_per_s": 12_000.0,
        "eta_s": 6.0,
    }
    page = render_page(page_data({"big": {"state": "snapshotting", "snapshot": progress}}, {}))
    assert '<progress value="30000" max="100000"></progress>' in page
    assert "reading: 30,000 rows, 3 chunks, 12,000 rows/s, ETA 6 s" in page


def test_the_poller_s_state_wins_over_a_stale_one() -> None:
    stale = status(
        {"items": {"state": "snapshotting", "snapshot": {"phase": "reading", "rows": 5}}}
    )
    poller = status({"items": {"state": "streaming", "polled_here": True}})
    for order in ([stale, poller], [poller, stale]):
        combined = combine_tables(order)["items"]
        assert combined["state"] == "streaming" and combined["snapshot"] is None, order
        assert "_from_poller" not in combined


def test_an_unknown_table_is_said_to_be_unknown() -> None:
    data = page_data({"items": {"state": "streaming"}}, {})
    data.focus = "<nope>"
    page = render_page(data)
    assert "No table '&lt;nope&gt;' in this pipeline." in page
    assert 'data-table="items"' not in page


def test_the_newest_merge_is_shown_and_a_failed_one_needs_attention() -> None:
    older = {"merged_to": 700.0, "merged_at": 850.0, "last_rows_merged": 5, "error": None}
    newer = {
        "merged_to": 880.0,
        "merged_at": 990.0,
        "last_rows_merged": 1234,
        "last_seconds": 2.5,
        "error": None,
    }
    # The leader changed: the worker that merged last wins, whichever answered first.
    for statuses in (
        [status({"t": {"compaction": older}}), status({"t": {"compaction": newer}})],
        [status({"t": {"compaction": newer}}), status({"t": {"compaction": None}})],
    ):
        assert combine_tables(statuses)["t"]["compaction"]["merged_to"] == 880.0
    page = render_page(page_data({"t": {"state": "streaming", "compaction": newer}}, {}))
    assert "up to 2 min ago, 1,234 rows in 2.5 s" in page
    failed = {**newer, "error": "403 Access Denied"}
    reasons = attention({"state": "streaming", "compaction": failed}, Figures(), THRESHOLDS)
    assert reasons == ["last merge into its _current table failed: 403 Access Denied"]
