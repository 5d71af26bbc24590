"""Kafka's default partitioner (ctstream/streams/partitioner.py) against aiokafka's."""

from __future__ import annotations

import random
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from ctstream.agents import install
from ctstream.agents.registry import TableRegistry
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.settings import load_settings
from ctstream.streams.app import create_app
from ctstream.streams.partitioner import kafka_partitioner, murmur2


def test_murmur2_is_aiokafkas_for_every_length_and_many_keys() -> None:
    rng = random.Random(20261127)
    for length in range(70):
        for _ in range(200):
            key = rng.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key), key


def test_a_key_goes_to_the_partition_aiokafka_would_choose() -> None:
    rng = random.Random(7)
    for count in (1, 2, 3, 4, 12, 100):
        partitions = list(range(count))
        for _ in range(300):
            key = rng.randbytes(rng.randrange(1, 40))
            expected = DefaultPartitioner()(key, partitions, partitions)
            assert kafka_partitioner(key, partitions, partitions) == expected


def test_without_a_key_any_available_partition() -> None:
    chosen = {kafka_partitioner(None, [0, 1, 2, 3], [1, 2]) for _ in range(200)}
    assert chosen == {1, 2}
    assert kafka_partitioner(None, [5], []) == 5


def test_the_workers_producer_uses_it(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        app={"data_dir": str(tmp_path)},
        source={"dsn": "Driver=SQLite3;Database=./demo.db", "tables": ["items"]},
        bigquery={"project": "local", "dataset": "cdc", "endpoint": "http://127.0.0.1:9"},
    )
    app, writer = create_app(settings), BigQueryWriter(settings.bigquery)
    try:
        install(app, settings, TableRegistry({}), writer)
        assert app.producer._settings_default()["partitioner"] is kafka_partitioner
    finally:
        writer.close()
