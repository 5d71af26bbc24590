"""``/``, ``/api/pipeline/`` and ``/api/series/``: the pipeline as all workers see it.

Each asks the other workers of its group (``?scope=local``, so they do not ask on in
turn) and combines their answers with its own; ``?scope=local`` here gives this worker's
own figures only.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson

from ctstream.streams.app import PipelineApp
from ctstream.web.figures import recent_figures
from ctstream.web.page import PageData, TableLinks, Thresholds, render_main, render_page
from ctstream.web.pipeline import (
    PEER_TIMEOUT_S,
    WorkerBook,
    combine_tables,
    gather_workers,
    member_urls,
    same_url,
)
from ctstream.web.series import SeriesRecorder, merge_series, series_json
from ctstream.web.status import status_snapshot

if TYPE_CHECKING:
    from ctstream.agents import Pipeline


CONSOLE = "https://console.cloud.google.com/bigquery"


class PipelineView:
    """What the pipeline-wide pages need: this worker's figures, a way to ask the others,
    and the workers seen lately."""

    def __init__(self, app: PipelineApp, pipeline: Pipeline, recorder: SeriesRecorder) -> None:
        self.app = app
        self.pipeline = pipeline
        self.recorder = recorder
        self.book = WorkerBook()
        token = pipeline.settings.web.token
        self._headers = (
            {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
        )

    @property
    def url(self) -> str:
        return str(self.app.conf.canonical_url)

    async def _fetch(self, url: str, path: str) -> Any:
        client: Any = self.app.http_client
        async with client.get(url.rstrip("/") + path, headers=self._headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status} from {path}")
            return orjson.loads(await response.read())

    async def status(self) -> dict[str, Any]:
        """Workers and tables, every live worker's figures combined."""
        own = status_snapshot(self.pipeline)
        members = member_urls(self.app.assignor)
        workers, statuses = await gather_workers(
            self.url, own, members, self.book, self._fetch, "/api/status/"
        )
        return {
            "app": own["app"],
            "time": own["time"],
            "workers": workers,
            "tables": combine_tables(statuses),
        }

    async def series(self, workers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """This worker's series merged with those of the workers that answer."""
        own = series_json(self.recorder)
        urls = [
            w["url"]
            for w in (workers or [])
            if w["state"] == "up" and not same_url(w["url"], self.url)
        ]
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(self._fetch(url, "/api/series/?scope=local"), PEER_TIMEOUT_S)
                for url in urls
            ),
            return_exceptions=True,
        )
        # A worker that does not answer in time leaves a gap (its status says why); one
        # sampling at another step (another config) cannot be merged and is left out.
        docs = [own] + [
            doc
            for doc in answers
            if isinstance(doc, dict) and doc.get("step") in (None, own["step"])
        ]
        return merge_series(docs)

    def links(self) -> dict[str, TableLinks]:
        settings = self.pipeline.settings.bigquery
        ref = self.pipeline.writer.ref
        out = {}
        for name, spec in self.pipeline.specs.items():
            names = [spec.bq_table, f"{spec.bq_table}_latest"]
            if spec.restricted:
                names += [spec.restricted_copy().bq_table]
            # An endpoint is an emulator's (or a proxy's): no console page to link to.
            bigquery = [
                (
                    ref(n),
                    None if settings.endpoint else _console(settings.project, settings.dataset, n),
                )
                for n in names
            ]
            out[name] = TableLinks(f"/tables/ct-versions/?key={quote(name, safe='')}", bigquery)
        return out


def _console(project: str, dataset: str, table: str) -> str:
    """The BigQuery console's page of ``project.dataset.table``."""
    query = {"project": project, "p": project, "d": dataset, "t": table, "page": "table"}
    return f"{CONSOLE}?{urlencode(query)}"


def install_pipeline_views(app: PipelineApp, view: PipelineView) -> None:
    web_settings = view.pipeline.settings.web
    thresholds = Thresholds(web_settings.alert_latency_p99_s, web_settings.alert_consumer_lag)

    @app.page("/api/pipeline/")
    async def pipeline_status(web: Any, request: Any) -> Any:
        if request.query.get("scope") == "local":
            return web.json(status_snapshot(view.pipeline))
        status = await view.status()
        series = await view.series(status["workers"])
        status["figures"] = {
            name: vars(recent_figures(series, name, status["time"])) for name in status["tables"]
        }
        status["figures_pipeline"] = vars(recent_figures(series, None, status["time"]))
        return web.json(status)

    @app.page("/api/series/")
    async def series(web: Any, request: Any) -> Any:
        if request.query.get("scope") == "local":
            return web.json(series_json(view.recorder))
        status = await view.status()
        return web.json(await view.series(status["workers"]))

    @app.page("/")
    async def dashboard(web: Any, request: Any) -> Any:
        status = await view.status()
        series = await view.series(status["workers"])
        now = time.time()
        focus = request.query.get("table") or None
        token = request.query.get("token")
        data = PageData(
            app=status["app"],
            now=now,
            workers=status["workers"],
            tables=status["tables"],
            series=series,
            thresholds=thresholds,
            links=view.links(),
            query=f"?{urlencode({'token': token})}" if token else "",
            focus=focus,
            figures={name: recent_figures(series, name, now) for name in status["tables"]},
        )
        if request.query.get("fragment") == "main":
            return web.html(render_main(data))
        return web.html(render_page(data))
