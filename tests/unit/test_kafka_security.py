"""Kafka TLS/SASL settings, the client options and Faust credentials built from them, and
the SQL Server encryption rule for ODBC connection strings."""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from ctstream.errors import ConfigError
from ctstream.settings import KafkaSettings, Settings, load_settings
from ctstream.source.odbc_security import SecureDsn
from ctstream.streams.app import create_app
from ctstream.streams.security import (
    broker_credentials,
    client_options,
    kafka_ssl_context,
    tls_failure,
)

PASSWORD = "s3cret-Kafka-pa55word"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CTSTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA, a certificate + key signed by it, and a file that is not PEM."""
    directory = tmp_path_factory.mktemp("pem")
    now = dt.datetime.now(dt.UTC)

    def build(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    encoding = serialization.Encoding.PEM
    files = {
        "ca": build("unit CA", ca_key, "unit CA", ca_key, True).public_bytes(encoding),
        "cert": build("client", client_key, "unit CA", ca_key, False).public_bytes(encoding),
        "key": client_key.private_bytes(
            encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "encrypted_key": client_key.private_bytes(
            encoding,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
        "junk": b"not a certificate\n",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def settings(**kafka: Any) -> Settings:
    return load_settings(
        None,
        source={"dsn": "Driver=SQLite3;Database=./demo.db", "tables": ["items"]},
        bigquery={"project": "local", "dataset": "cdc"},
        kafka={k: str(v) if isinstance(v, Path) else v for k, v in kafka.items()},
    )


def config_error(**kafka: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(**kafka)
    message = str(caught.value)
    assert PASSWORD not in message
    return message


SASL = {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "ctstream", "sasl_password": PASSWORD}


# -- validation --------------------------------------------------------------------------


def test_default_is_plaintext_without_credentials() -> None:
    kafka = settings().kafka
    assert kafka.security_protocol == "PLAINTEXT"
    assert client_options(kafka) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(kafka) is None


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("missing", ["sasl_mechanism", "sasl_username", "sasl_password"])
def test_sasl_needs_mechanism_username_and_password(protocol: str, missing: str) -> None:
    given = {k: v for k, v in SASL.items() if k != missing}
    message = config_error(security_protocol=protocol, **given)
    assert f"kafka.{missing} is required when kafka.security_protocol is '{protocol}'" in message


def test_missing_mechanism_names_the_choices() -> None:
    message = config_error(security_protocol="SASL_SSL", sasl_username="u", sasl_password="p")
    assert "'PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'" in message


def test_empty_sasl_password_is_refused() -> None:
    message = config_error(security_protocol="SASL_SSL", **{**SASL, "sasl_password": ""})
    assert "kafka.sasl_password must not be empty" in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
@pytest.mark.parametrize("key", ["sasl_mechanism", "sasl_username", "sasl_password"])
def test_sasl_keys_without_a_sasl_protocol_are_refused(protocol: str, key: str) -> None:
    message = config_error(security_protocol=protocol, **{key: SASL[key]})
    assert f"kafka.{key} is set but kafka.security_protocol is '{protocol}'" in message
    assert "'SASL_SSL'" in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
@pytest.mark.parametrize("key", ["ssl_cafile", "ssl_certfile", "ssl_check_hostname"])
def test_tls_keys_without_a_tls_protocol_are_refused(
    pem: dict[str, Path], protocol: str, key: str
) -> None:
    value = {"ssl_cafile": pem["ca"], "ssl_certfile": pem["cert"], "ssl_check_hostname": False}
    sasl = SASL if protocol.startswith("SASL") else {}
    message = config_error(security_protocol=protocol, **sasl, **{key: value[key]})
    assert f"kafka.{key} is set but kafka.security_protocol is '{protocol}'" in message
    assert "does not use TLS" in message


@pytest.mark.parametrize("key", ["ssl_cafile", "ssl_certfile", "ssl_keyfile"])
def test_a_missing_pem_file_is_named(tmp_path: Path, key: str) -> None:
    message = config_error(security_protocol="SSL", **{key: tmp_path / "nope.pem"})
    assert f"kafka.{key}: file " in message and "does not exist" in message


def test_a_cafile_that_is_not_a_certificate_is_named(pem: dict[str, Path]) -> None:
    message = config_error(security_protocol="SSL", ssl_cafile=pem["junk"])
    assert "kafka.ssl_cafile" in message and "BEGIN CERTIFICATE" in message


def test_a_keyfile_needs_a_certfile(pem: dict[str, Path]) -> None:
    message = config_error(security_protocol="SSL", ssl_keyfile=pem["key"])
    assert "kafka.ssl_keyfile needs kafka.ssl_certfile" in message


@pytest.mark.parametrize(("cert", "key"), [("junk", "key"), ("cert", "junk"), ("cert", None)])
def test_a_client_certificate_that_does_not_load_is_named(
    pem: dict[str, Path], cert: str, key: str | None
) -> None:
    keyfile = {} if key is None else {"ssl_keyfile": pem[key]}
    message = config_error(security_protocol="SSL", ssl_certfile=pem[cert], **keyfile)
    assert "kafka.ssl_certfile/kafka.ssl_keyfile" in message


def test_an_encrypted_client_key_is_refused_without_a_prompt(pem: dict[str, Path]) -> None:
    message = config_error(
        security_protocol="SSL", ssl_certfile=pem["cert"], ssl_keyfile=pem["encrypted_key"]
    )
    assert "the key unencrypted" in message


def test_unknown_protocol_and_mechanism_name_their_keys() -> None:
    assert "kafka.security_protocol" in config_error(security_protocol="TLS")
    message = config_error(security_protocol="SASL_SSL", **{**SASL, "sasl_mechanism": "GSSAPI"})
    assert "kafka.sasl_mechanism" in message


def test_no_hostname_check_is_a_loud_warning(
    pem: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ctstream.settings"):
        kafka = settings(
            security_protocol="SSL", ssl_cafile=pem["ca"], ssl_check_hostname=False
        ).kafka
    assert "kafka.ssl_check_hostname is false" in caplog.text
    context = kafka_ssl_context(kafka)
    assert context is not None and context.check_hostname is False


def test_plain_password_over_plaintext_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ctstream.settings"):
        settings(security_protocol="SASL_PLAINTEXT", **{**SASL, "sasl_mechanism": "PLAIN"})
    assert "sends the Kafka password unencrypted" in caplog.text
    assert PASSWORD not in caplog.text


def test_sasl_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTSTREAM_KAFKA__SASL_PASSWORD", PASSWORD)
    kafka = settings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="ctstream"
    ).kafka
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == PASSWORD


# -- secrets stay secret -----------------------------------------------------------------


def test_the_sasl_password_is_never_printed() -> None:
    s = settings(security_protocol="SASL_SSL", **SASL)
    for text in (
        repr(s),
        str(s),
        repr(s.kafka),
        str(s.kafka),
        s.model_dump_json(),
        s.kafka.model_dump_json(),
        str(s.model_dump()),
        repr(broker_credentials(s.kafka)),
    ):
        assert PASSWORD not in text
    assert "**********" in repr(s.kafka)


def test_a_bad_kafka_section_does_not_echo_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="u", sasl_password=PASSWORD)
    assert PASSWORD not in str(caught.value)


# -- what the clients get ----------------------------------------------------------------


def test_ssl_options_carry_the_configured_ca(pem: dict[str, Path]) -> None:
    kafka = settings(security_protocol="SSL", ssl_cafile=pem["ca"]).kafka
    options = client_options(kafka)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "unit CA"),),)]


def test_ssl_without_a_cafile_uses_the_system_cas() -> None:
    context = client_options(settings(security_protocol="SSL").kafka)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_client_certificate_is_loaded(pem: dict[str, Path]) -> None:
    kafka = settings(
        security_protocol="SSL",
        ssl_cafile=pem["ca"],
        ssl_certfile=pem["cert"],
        ssl_keyfile=pem["key"],
    ).kafka
    assert isinstance(kafka_ssl_context(kafka), ssl.SSLContext)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_options_and_faust_credentials_agree(pem: dict[str, Path], mechanism: str) -> None:
    kafka = settings(
        security_protocol="SASL_SSL", ssl_cafile=pem["ca"], **{**SASL, "sasl_mechanism": mechanism}
    ).kafka
    options = client_options(kafka)
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "ctstream",
        "sasl_plain_password": PASSWORD,
    }
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    # What Faust hands to its own aiokafka clients is what ctstream's clients get.
    faust_options = credentials_to_aiokafka_auth(credentials)
    assert faust_options.keys() == options.keys()
    assert {k: v for k, v in faust_options.items() if k != "ssl_context"} == {
        k: v for k, v in options.items() if k != "ssl_context"
    }
    assert faust_options["ssl_context"].get_ca_certs() == options["ssl_context"].get_ca_certs()


def test_sasl_plaintext_has_no_tls_context() -> None:
    kafka = settings(security_protocol="SASL_PLAINTEXT", **SASL).kafka
    options = client_options(kafka)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_context" not in options
    faust_options = credentials_to_aiokafka_auth(broker_credentials(kafka))
    assert faust_options["security_protocol"] == "SASL_PLAINTEXT"
    assert faust_options["ssl_context"] is None


def test_ssl_faust_credentials(pem: dict[str, Path]) -> None:
    kafka = settings(security_protocol="SSL", ssl_cafile=pem["ca"]).kafka
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


def test_create_app_passes_the_credentials_to_faust(pem: dict[str, Path], tmp_path: Path) -> None:
    s = load_settings(
        None,
        app={"data_dir": str(tmp_path)},
        source={"dsn": "Driver=SQLite3;Database=./demo.db", "tables": ["items"]},
        bigquery={"project": "local", "dataset": "cdc"},
        kafka={"security_protocol": "SASL_SSL", "ssl_cafile": str(pem["ca"]), **SASL},
    )
    app = create_app(s)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


async def test_tls_probe_is_silent_without_tls_or_a_listener() -> None:
    assert await tls_failure("127.0.0.1:9", {"security_protocol": "PLAINTEXT"}) is None
    context = ssl.create_default_context()
    # Nothing listens on port 9 of the loopback (discard): not a TLS problem.
    assert await tls_failure("127.0.0.1:9", {"ssl_context": context}, timeout=2) is None


# -- SQL Server: encrypted unless said otherwise -----------------------------------------

MSSQL = "Driver={ODBC Driver 18 for SQL Server};Server=db,1433;UID=ct;PWD={p;w}"


@pytest.fixture
def secure_dsn() -> SecureDsn:
    return SecureDsn()  # a reader's: it warns once per DSN


def test_sqlite_dsn_is_left_alone(secure_dsn: SecureDsn) -> None:
    dsn = "Driver=SQLite3;Database=./demo.db"
    assert secure_dsn(dsn, "sqlite") == dsn


@pytest.mark.parametrize("suffix", ["", ";", " ; "])
def test_mssql_gets_encrypt_yes_by_default(secure_dsn: SecureDsn, suffix: str) -> None:
    assert secure_dsn(MSSQL + suffix, "mssql") == MSSQL + ";Encrypt=yes"


@pytest.mark.parametrize("value", ["yes", "Yes", "true", "strict", "mandatory"])
def test_mssql_encrypt_given_is_kept_without_warning(
    secure_dsn: SecureDsn, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = f"{MSSQL};Encrypt={value}"
    with caplog.at_level(logging.WARNING):
        assert secure_dsn(dsn, "mssql") == dsn
    assert not caplog.records


@pytest.mark.parametrize("value", ["no", "false", "optional"])
def test_mssql_encryption_off_is_a_loud_warning(
    secure_dsn: SecureDsn, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = f"{MSSQL};ENCRYPT={value}"
    with caplog.at_level(logging.WARNING):
        assert secure_dsn(dsn, "mssql") == dsn  # as given: the operator chose it
    assert "INSECURE SOURCE CONNECTION" in caplog.text and "not encrypted" in caplog.text
    assert "p;w" not in caplog.text and "Server=db" not in caplog.text


@pytest.mark.parametrize("value", ["yes", "{Yes}", "true"])
def test_trusting_any_server_certificate_is_a_loud_warning(
    secure_dsn: SecureDsn, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = f"{MSSQL};TrustServerCertificate={value}"
    with caplog.at_level(logging.WARNING):
        assert secure_dsn(dsn, "mssql") == dsn + ";Encrypt=yes"
    assert "TrustServerCertificate=yes" in caplog.text and "NOT validated" in caplog.text
    assert "p;w" not in caplog.text


def test_the_warning_is_given_once_per_dsn(
    secure_dsn: SecureDsn, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = f"{MSSQL};TrustServerCertificate=yes"
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # reconnects
            secure_dsn(dsn, "mssql")
    assert len(caplog.records) == 1
