"""Builds the faust.App from settings. A leaf: it imports nothing else of ctstream's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faust

if TYPE_CHECKING:
    from ctstream.settings import Settings


def create_app(settings: Settings, **overrides: Any) -> faust.App:
    kafka = settings.kafka
    brokers = [f"kafka://{hp.strip()}" for hp in kafka.bootstrap_servers.split(",")]
    config: dict[str, Any] = {
        "broker": brokers,
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
    return faust.App(settings.app.id, **config)
