"""The local stack launcher against the real broker binary and BigQuery emulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import google.auth.credentials
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from google.cloud import bigquery

from ctstream.devstack import detached_stack, probes
from ctstream.devstack.detached_stack import stack_down, stack_up, state_path
from ctstream.devstack.local_stack import (
    BROKER_LOG,
    EMULATOR_LOG,
    LocalStack,
    StackInfo,
    running_stack,
    stack_running,
)
from ctstream.errors import StackError

pytestmark = pytest.mark.integration

T = TypeVar("T")
STEP_TIMEOUT = 60.0


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a private loop (leaves pytest-asyncio's loop alone)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(make(), STEP_TIMEOUT))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_exists(pid: int) -> bool:
    """True for a live process; a zombie waiting for its (adoptive) parent counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def assert_stopped(info: StackInfo) -> None:
    for pid in (info.broker_pid, info.emulator_pid):
        assert wait_until(lambda pid=pid: not pid_exists(pid)), f"pid {pid} still alive"
    for port in (
        port_of(info.kafka_bootstrap),
        port_of(info.bigquery_endpoint),
        port_of(info.bigquery_grpc),
    ):
        assert wait_until(lambda port=port: not port_open(port)), f"port {port} still open"


def bq_client(info: StackInfo) -> bigquery.Client:
    return bigquery.Client(
        project="local",
        credentials=google.auth.credentials.AnonymousCredentials(),
        client_options={"api_endpoint": info.bigquery_endpoint},
    )


async def kafka_roundtrip(bootstrap: str) -> tuple[set[int], bytes | None, bytes | None]:
    topic = f"it-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=2, replication_factor=1)], timeout_ms=10_000
        )
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000)
    await producer.start()
    try:
        partitions = await producer.partitions_for(topic)
        meta = await producer.send_and_wait(topic, b"hello", key=b"k1", partition=1)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        msg = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    return set(partitions), msg.key, msg.value


def bigquery_roundtrip(info: StackInfo) -> list[dict[str, Any]]:
    client = bq_client(info)
    try:
        dataset = client.create_dataset(bigquery.Dataset("local.it"), timeout=30)
        table = client.create_table(
            bigquery.Table(
                f"{dataset.project}.{dataset.dataset_id}.items",
                schema=[
                    bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
                    bigquery.SchemaField("name", "STRING"),
                ],
            ),
            timeout=30,
        )
        errors = client.insert_rows_json(table, [{"id": 1, "name": "one"}], timeout=30)
        assert errors == []
        job = client.query("SELECT id, name FROM `local.it.items` ORDER BY id")
        return [dict(row.items()) for row in job.result(timeout=30)]
    finally:
        client.close()


def test_stack_end_to_end(tmp_path: Path) -> None:
    started = time.monotonic()
    with stack_running(tmp_path) as info:
        startup_s = time.monotonic() - started
        assert info.workdir == str(tmp_path.resolve())
        assert (tmp_path / BROKER_LOG).exists()
        assert (tmp_path / EMULATOR_LOG).exists()
        assert StackInfo.from_json(info.to_json()) == info
        assert LocalStack.is_running(info)

        partitions, key, value = run(lambda: kafka_roundtrip(info.kafka_bootstrap))
        assert partitions == {0, 1}
        assert (key, value) == (b"k1", b"hello")

        assert bigquery_roundtrip(info) == [{"id": 1, "name": "one"}]
        # DuckDB spills query state to ".tmp" under the emulator's working directory: the
        # stack's own directory, not the package root it was started from.
        assert Path(f"/proc/{info.emulator_pid}/cwd").resolve() == tmp_path.resolve()
    assert startup_s < 30, f"stack took {startup_s:.1f}s to start"
    assert_stopped(info)
    LocalStack().stop(info)  # idempotent once everything is gone
    assert not LocalStack.any_running(info)


async def test_running_stack_async(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as info:
        assert LocalStack.is_running(info)
        assert await asyncio.to_thread(probes.kafka_ready, info.kafka_bootstrap)
        url = f"{info.bigquery_endpoint}/bigquery/v2/projects/local/datasets"
        assert await asyncio.to_thread(probes.http_ready, url)
    await asyncio.to_thread(assert_stopped, info)


def test_stack_up_and_down(tmp_path: Path) -> None:
    base = tmp_path / ".ctstream"
    path = state_path(base)
    assert path == base / "stack.json"
    assert stack_down(base) is False

    first = stack_up(base)
    try:
        assert first.already_running is False
        assert StackInfo.from_json(path.read_text()) == first.info
        assert detached_stack.running_info(base) == first.info

        second = stack_up(base)
        assert second.already_running is True
        assert second.info == first.info
    finally:
        assert stack_down(base) is True
    assert not path.exists()
    assert_stopped(first.info)
    assert stack_down(base) is False
    assert detached_stack.running_info(base) is None


def test_stale_state_file_is_replaced(tmp_path: Path) -> None:
    base = tmp_path / "state"
    up = stack_up(base)
    # Kill the stack behind the launcher's back: the state file is now stale.
    LocalStack().stop(up.info)
    assert state_path(base).exists()
    assert detached_stack.running_info(base) is None

    again = stack_up(base)
    try:
        assert again.already_running is False
        assert again.info.broker_pid != up.info.broker_pid
    finally:
        assert stack_down(base) is True
    assert_stopped(again.info)

    # A stale file alone: stack_down cleans it and reports that nothing was running.
    state_path(base).write_text(up.info.to_json())
    assert stack_down(base) is False
    assert not state_path(base).exists()


def test_stack_up_outlives_its_process(tmp_path: Path) -> None:
    """`ctstream stack up` returns and exits; the stack keeps running until `stack down`."""
    base = tmp_path / ".ctstream"
    script = (
        "import sys; from pathlib import Path; "
        "from ctstream.devstack.detached_stack import stack_up; "
        "print(stack_up(Path(sys.argv[1])).info.to_json())"
    )
    repo_root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script, str(base)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    info = StackInfo.from_json(done.stdout)
    try:
        assert detached_stack.running_info(base) == info
        assert probes.kafka_ready(info.kafka_bootstrap)
        assert probes.http_ready(f"{info.bigquery_endpoint}/bigquery/v2/projects/local/datasets")
        assert stack_up(base).already_running is True
    finally:
        assert stack_down(base) is True
    assert_stopped(info)


def test_state_path_default_is_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert state_path() == Path.cwd() / ".ctstream" / "stack.json"


def test_failed_start_stops_everything(tmp_path: Path) -> None:
    broken = tmp_path / "broken-broker"
    broken.write_text("#!/bin/sh\necho 'broker refuses to start' >&2\nexit 3\n")
    broken.chmod(0o755)
    stack = LocalStack(broker_bin=broken)
    with pytest.raises(StackError, match="broker refuses to start") as excinfo:
        stack.start(tmp_path / "work", timeout=30)
    assert "status 3" in str(excinfo.value)
    # The emulator that was started alongside is stopped again.
    work = tmp_path / "work"
    assert wait_until(lambda: not processes_of(work)), processes_of(work)


def processes_of(workdir: Path) -> list[int]:
    """Live processes that belong to a stack in ``workdir`` (Linux /proc): the broker runs
    with ``workdir`` as its cwd, the emulator names it on its command line."""
    workdir = workdir.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                continue
            if str(workdir).encode() in (entry / "cmdline").read_bytes() or (
                Path(os.readlink(entry / "cwd")) == workdir
            ):
                found.append(int(entry.name))
    return found


async def test_running_stack_cancelled_while_starting(tmp_path: Path) -> None:
    entered = asyncio.Event()

    async def use_stack() -> None:
        async with running_stack(tmp_path):
            entered.set()

    task = asyncio.create_task(use_stack())
    # Cancel once both children exist, i.e. in the middle of the start.
    deadline = time.monotonic() + 20
    while len(processes_of(tmp_path)) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(processes_of(tmp_path)) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)
    assert not entered.is_set()
    assert await asyncio.to_thread(wait_until, lambda: not processes_of(tmp_path))
