"""Kafka transport security from ``[kafka]`` settings: TLS and SASL for every client.

Every Kafka client ctstream makes gets the same options: the aiokafka clients (admin,
producers, consumers) take :func:`client_options` as keyword arguments, and the Faust app
(:func:`ctstream.streams.app.create_app`) gets :func:`broker_credentials` as its
``broker_credentials``, which Faust turns back into the same aiokafka options, SCRAM
included. Both build their TLS context with :func:`kafka_ssl_context`.

aiokafka only logs why a connection failed and then raises "Unable to bootstrap"; where a
client fails to start, :func:`unreachable_message` redoes the TLS handshake itself to say
whether the broker's certificate was refused, naming ``kafka.ssl_cafile``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.helpers import create_ssl_context

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from ctstream.settings import KafkaSettings

__all__ = [
    "broker_credentials",
    "client_options",
    "kafka_ssl_context",
    "tls_failure",
    "unreachable_message",
]

_PROBE_TIMEOUT_S = 5.0


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


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    context = kafka_ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # checked by the settings
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


async def tls_failure(
    bootstrap: str,
    options: Mapping[str, Any],
    timeout: float = _PROBE_TIMEOUT_S,  # noqa: ASYNC109
) -> str | None:
    """Why the TLS handshake with the bootstrap servers fails, naming the key to fix.

    None when no TLS is configured, the handshake succeeds, or a server cannot be
    reached at all (then TLS is not the problem this can tell about).
    """
    context = options.get("ssl_context")
    if not isinstance(context, ssl.SSLContext):
        return None
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]")
        try:
            async with asyncio.timeout(timeout):
                _reader, writer = await asyncio.open_connection(
                    host, int(port), ssl=context, server_hostname=host
                )
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or exc.reason or "not trusted"
            if "hostname" in str(why).lower() or "ip address mismatch" in str(why).lower():
                fix = (
                    f"check that kafka.bootstrap_servers names {host!r} as in the broker's "
                    "certificate (kafka.ssl_check_hostname = false skips this check, "
                    "which is unsafe)"
                )
            else:
                fix = (
                    "check kafka.ssl_cafile: it must be the CA certificate that signed the "
                    "broker's certificate (unset, the system's CAs are used)"
                )
            return (
                f"the TLS certificate of the Kafka broker at {host}:{port} was refused "
                f"({why}); {fix}"
            )
        except ssl.SSLError as exc:
            return (
                f"the TLS handshake with the Kafka broker at {host}:{port} failed "
                f"({exc.reason or type(exc).__name__}); check kafka.security_protocol (does "
                "the listener use TLS?) and kafka.ssl_certfile/kafka.ssl_keyfile"
            )
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(timeout):
                await writer.wait_closed()
    return None


async def unreachable_message(
    bootstrap: str, options: Mapping[str, Any], exc: BaseException
) -> str:
    """The message for a Kafka client that could not start: the TLS problem if any."""
    tls = await tls_failure(bootstrap, options)
    if tls is not None:
        return tls
    return (
        f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); "
        "check kafka.bootstrap_servers, kafka.security_protocol and that the broker is running"
    )
