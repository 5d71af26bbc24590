"""Builds the worker's faust App (``PipelineApp``) from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faust

from ctstream.streams.in_flight import InFlightBatches
from ctstream.streams.security import broker_credentials

if TYPE_CHECKING:
    from ctstream.settings import Settings


class PipelineApp(faust.App):
    """faust's App, owning the state ctstream's agents and faust patches share.

    ``in_flight``: the batches the agents are running, below which commits are capped.
    """

    def __init__(self, id: str, **options: Any) -> None:
        super().__init__(id, **options)
        self.in_flight = InFlightBatches()


def create_app(settings: Settings, **overrides: Any) -> PipelineApp:
    """The worker's app, configured from ``settings`` (``overrides``: faust settings)."""
    kafka = settings.kafka
    brokers = [f"kafka://{hp.strip()}" for hp in kafka.bootstrap_servers.split(",")]
    config: dict[str, Any] = {
        "broker": brokers,
        "broker_credentials": broker_credentials(kafka),
        "store": "memory://",
        "datadir": str(settings.app.data_dir),
        "topic_partitions": kafka.partitions,
        "topic_replication_factor": kafka.replication_factor,
        "topic_allow_declare": True,
        "topic_disable_leader": False,
        # Wait for every in-sync replica: an acknowledged event is a durable event.
        "producer_acks": -1,
        "producer_linger_ms": 5,
        "producer_max_batch_size": 512 * 1024,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_every": 10_000,
        "broker_commit_interval": 1.0,
        # Short session timeouts: a crashed worker's partitions move on quickly.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 2.0,
        "broker_rebalance_timeout": 30.0,
        "stream_buffer_maxsize": 8192,
        # Bounds on what a worker holds fetched but unprocessed. aiokafka hands out every
        # buffered record of a partition per poll unless capped (measured: 40,000 records
        # of one partition in one poll, all as objects); the embedded broker also answers
        # a partition fetch with several times the 1 MB default. Small fetches cost little
        # here: the broker answers the next one while the worker processes this one.
        "broker_max_poll_records": 2000,
        "consumer_max_fetch_size": 256 * 1024,
        # Do not wait for every delivered message at shutdown or rebalance: a sink retrying
        # through a BigQuery outage would block both. Nothing unfinished is committed
        # anyway — finished batches are acknowledged, unfinished ones withheld
        # (agents/batches.py), and messages never handed to an agent are not acknowledged.
        "stream_wait_empty": False,
        "table_cleanup_interval": 30.0,
        "web_enabled": settings.web.enabled,
        "web_bind": settings.web.host,
        "web_host": settings.web.host,
        "web_port": settings.web.port,
        "web_in_thread": False,
        "autodiscover": False,
        "logging_config": None,
    }
    config.update(overrides)
    return PipelineApp(settings.app.id, **config)
