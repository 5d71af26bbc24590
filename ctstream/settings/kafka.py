"""``[kafka]``: brokers, topics, retention and transport security."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from ctstream.settings.fields import Duration, Section


class TopicRetention(Section):
    """How long each kind of topic keeps messages (``retention.ms``, set at creation).

    The seed system kept 7 days so that a new consumer, or `ctstream replay`, could re-read.
    """

    raw: Duration = 7 * 86400.0
    deduped: Duration = 7 * 86400.0
    errors: Duration = 30 * 86400.0
    poll_ticks: Duration = 86400.0


_log = logging.getLogger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_SASL_KEYS = ("sasl_mechanism", "sasl_username", "sasl_password")
_TLS_FILE_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


def _no_key_password() -> bytes:
    # load_cert_chain would otherwise prompt on the terminal for an encrypted key.
    raise ValueError("encrypted private keys are not supported")


class KafkaSettings(Section):
    # Errors never quote the input: it may hold sasl_password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="ctstream", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    retention: TopicRetention = TopicRetention()
    # Transport security, as Kafka names it: SSL is TLS; SASL_* authenticate with
    # sasl_username/sasl_password (set the password by CTSTREAM_KAFKA__SASL_PASSWORD).
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: SecretStr | None = None
    # PEM files. ssl_cafile: the CA that signed the brokers' certificates (None: the
    # system's CAs); ssl_certfile/ssl_keyfile: a client certificate, when the broker
    # asks for one (the key unencrypted; certfile alone may hold both).
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("expected host:port[,host:port...], e.g. '127.0.0.1:9092'")
        return value

    @field_validator(*_TLS_FILE_KEYS)
    @classmethod
    def _pem_file_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"file {str(path)!r} does not exist; expected the path of a PEM file")
        return path

    @model_validator(mode="after")
    def _transport_security(self) -> KafkaSettings:
        protocol = self.security_protocol
        if protocol.startswith("SASL_"):
            for key in _SASL_KEYS:
                if getattr(self, key) is None:
                    raise ValueError(
                        f"kafka.{key} is required when kafka.security_protocol is "
                        f"{protocol!r}" + _SASL_EXAMPLE[key]
                    )
            if self.sasl_password is not None and not self.sasl_password.get_secret_value():
                raise ValueError("kafka.sasl_password must not be empty")
        else:
            for key in _SASL_KEYS:
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"kafka.{key} is set but kafka.security_protocol is {protocol!r}, "
                        "which does not authenticate; expected 'SASL_SSL' (or "
                        "'SASL_PLAINTEXT') with kafka.sasl_*, or no kafka.sasl_* keys"
                    )
        if protocol.endswith("SSL"):
            self._load_tls_files()
        else:
            tls_keys = [k for k in _TLS_FILE_KEYS if getattr(self, k) is not None]
            if not self.ssl_check_hostname:
                tls_keys.append("ssl_check_hostname")
            if tls_keys:
                raise ValueError(
                    f"kafka.{tls_keys[0]} is set but kafka.security_protocol is "
                    f"{protocol!r}, which does not use TLS; expected 'SSL' or 'SASL_SSL'"
                )
            if protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
                _log.warning(
                    "kafka.sasl_mechanism 'PLAIN' over kafka.security_protocol "
                    "'SASL_PLAINTEXT' sends the Kafka password unencrypted; use 'SASL_SSL'"
                )
        if protocol.endswith("SSL") and not self.ssl_check_hostname:
            _log.warning(
                "kafka.ssl_check_hostname is false: the brokers' certificates are not "
                "matched to their host names, so anyone with a certificate from the same "
                "CA can pose as the broker; set it to true outside of tests"
            )
        return self

    def _load_tls_files(self) -> None:
        """Fail at start, naming the key, when a PEM file is not what it should be."""
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("kafka.ssl_keyfile needs kafka.ssl_certfile (the client certificate)")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ssl_cafile is not None:
            try:
                context.load_verify_locations(cafile=self.ssl_cafile)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(
                    f"kafka.ssl_cafile {str(self.ssl_cafile)!r} holds no readable CA "
                    f"certificate ({type(exc).__name__}); expected a PEM file with "
                    "'-----BEGIN CERTIFICATE-----'"
                ) from None
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(
                    self.ssl_certfile, self.ssl_keyfile, password=_no_key_password
                )
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(
                    f"kafka.ssl_certfile/kafka.ssl_keyfile: cannot load the client "
                    f"certificate and its key ({type(exc).__name__}); expected PEM files, "
                    "the key unencrypted"
                ) from None


_SASL_EXAMPLE = {
    "sasl_mechanism": ": one of 'PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'",
    "sasl_username": ', e.g. sasl_username = "ctstream"',
    "sasl_password": " (best set by CTSTREAM_KAFKA__SASL_PASSWORD rather than in the file)",
}
