"""Every page a worker serves, put on its app by :func:`install_views`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST

from ctstream.streams.app import PipelineApp
from ctstream.web.metrics import metrics_text
from ctstream.web.pipeline_views import PipelineView, install_pipeline_views
from ctstream.web.series import SeriesRecorder
from ctstream.web.status import require_token, status_snapshot
from ctstream.web.tables import install_table_views
from ctstream.web.tables_page import TABLES_HTML

if TYPE_CHECKING:
    from ctstream.agents import Pipeline


def install_views(app: PipelineApp, pipeline: Pipeline) -> None:
    """The dashboard, the JSON API, ``/metrics`` and the tables' pages; and the sampling
    of this worker's figures for the charts."""
    web_settings = pipeline.settings.web
    if web_settings.token is not None:
        require_token(app, web_settings.token.get_secret_value())

    recorder = SeriesRecorder(pipeline, web_settings.chart_step, web_settings.chart_window)
    recorder.start(app)
    install_table_views(app, pipeline)
    install_pipeline_views(app, PipelineView(app, pipeline, recorder))

    @app.page("/api/status/")
    async def status(web: Any, request: Any) -> Any:
        return web.json(status_snapshot(pipeline))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type; the header carries it whole.
        return web.bytes(metrics_text(pipeline), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/tables/")
    async def tables(web: Any, request: Any) -> Any:
        return web.html(TABLES_HTML)

    @app.page("/tables/{name}/")
    async def table(web: Any, request: Any, name: str) -> Any:
        return web.html(TABLES_HTML)
