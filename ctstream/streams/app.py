"""Builds the faust.App from settings. A leaf: it imports nothing else of ctstream's."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.helpers import create_ssl_context

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from ctstream.settings import KafkaSettings, Settings


def _no_key_password() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ValueError("encrypted private keys are not supported")


def kafka_ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for ``SSL`` and ``SASL_SSL``; None for the plaintext protocols.

    Here rather than in streams/security.py (which re-exports it) so that this module
    stays a leaf; the aiokafka clients of the CLI commands use the same context.
    """
    if not kafka.security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=kafka.ssl_cafile,  # None: the system's CA certificates
        certfile=kafka.ssl_certfile,
        keyfile=kafka.ssl_keyfile,
        password=_no_key_password if kafka.ssl_certfile is not None else None,
    )
    context.check_hostname = kafka.ssl_check_hostname  # the settings warned when false
    return context


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the ``[kafka]`` settings; None for plaintext.

    Faust hands them to every aiokafka client it makes (security_protocol, ssl_context,
    sasl_mechanism — PLAIN or SCRAM-SHA-256/512 —, sasl_plain_username/password).
    """
    context = kafka_ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # checked by the settings
        # SASL_SSL when a context is given, SASL_PLAINTEXT without one (faust.auth).
        credentials: CredentialsT = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
        return credentials
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: Settings, **overrides: Any) -> faust.App:
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
    return faust.App(settings.app.id, **config)
