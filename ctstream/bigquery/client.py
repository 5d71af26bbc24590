"""The google-cloud-bigquery client ctstream uses, and what the client's errors mean.

``classify`` turns a client exception into ctstream's errors: ``SinkUnavailable`` (worth
trying again: 5xx, 429, quota, timeouts, dropped connections), ``RequestTooLarge`` (split
the request) or ``SinkError`` (trying again will not help).
"""

from __future__ import annotations

import asyncio
from typing import Any

import google.auth
import requests
import requests.adapters
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import bigquery

from ctstream.errors import ConfigError, RequestTooLarge, SinkError, SinkUnavailable
from ctstream.settings import BigQuerySettings

_TOO_LARGE_WORDS = ("payload size", "too large", "request size")
_RETRIABLE_REASONS = {"quotaExceeded", "rateLimitExceeded", "backendError", "internalError"}


# requests' own default: connections kept open to one host.
DEFAULT_CONNECTIONS = 10


def make_client(
    settings: BigQuerySettings, connections: int = DEFAULT_CONNECTIONS
) -> bigquery.Client:
    """The client for ``settings``: anonymous against ``endpoint`` (an emulator), else
    the service-account key in ``credentials_file``, else Application Default Credentials.
    It keeps up to ``connections`` connections open, for as many requests at once (more
    would open and drop a connection per request, each logged by urllib3).

    Raises ConfigError when no credentials can be had (naming the file or ADC, never the
    key's contents).
    """
    from google.auth.exceptions import DefaultCredentialsError

    options: dict[str, Any] = {}
    credentials: Credentials | None = None
    if settings.endpoint:
        options["api_endpoint"] = settings.endpoint
    if settings.credentials_file is not None:
        from google.oauth2 import service_account

        try:
            credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(settings.credentials_file)
            )
        except (OSError, ValueError) as exc:
            # The key's text never goes into the message: it is a secret.
            raise ConfigError(
                f"bigquery.credentials_file {str(settings.credentials_file)!r} is not a "
                f"usable service-account key ({type(exc).__name__}); download a JSON key "
                "of the service account, or remove the key to use Application Default "
                "Credentials"
            ) from None
    elif settings.endpoint:
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    try:
        if credentials is None:
            credentials, _ = google.auth.default(scopes=bigquery.Client.SCOPE)
        return bigquery.Client(
            project=settings.project,
            credentials=credentials,
            location=settings.location,
            client_options=options or None,
            # The client's documented hook for its HTTP session (a leading underscore
            # upstream): the same authorized session it would make, with a larger pool.
            _http=_session(credentials, connections),
        )
    except DefaultCredentialsError:
        raise ConfigError(
            "BigQuery: no Google credentials found; set bigquery.credentials_file to a "
            "service-account key file, or set up Application Default Credentials "
            "(GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`), "
            "or set bigquery.endpoint to use a local emulator"
        ) from None


def _session(credentials: Credentials, connections: int) -> requests.Session:
    session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(1, connections))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def classify(exc: BaseException, what: str) -> SinkError:
    """A client exception → SinkUnavailable (try again) or SinkError (will not help)."""
    if isinstance(exc, SinkError):
        return exc
    message = f"{what}: {type(exc).__name__}: {str(exc)[:300]}"
    transient = (
        gexc.ServerError,
        gexc.TooManyRequests,
        gexc.RetryError,
        TimeoutError,
        ConnectionError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
    )
    if isinstance(exc, transient):
        return SinkUnavailable(message)
    if isinstance(exc, gexc.GoogleAPICallError) and (
        exc.code == 413
        or (exc.code == 400 and any(s in str(exc).lower() for s in _TOO_LARGE_WORDS))
    ):
        return RequestTooLarge(message)
    if isinstance(exc, gexc.Forbidden):
        reasons = {e.get("reason") for e in (exc.errors or []) if isinstance(e, dict)}
        if reasons & _RETRIABLE_REASONS:
            return SinkUnavailable(message)
    if isinstance(exc, gexc.GoogleAPICallError) and exc.code in (408, 409, 500, 502, 503, 504):
        return SinkUnavailable(message)
    return SinkError(message)


async def in_thread(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a worker thread; its failure as ctstream's error
    (``classify``). A StopIteration, which cannot cross ``asyncio.to_thread`` (the
    awaiting task would never wake), is a retriable failure."""

    def call() -> Any:
        try:
            return fn(*args, **kwargs)
        except StopIteration as exc:
            raise SinkUnavailable(f"{what}: the call ended without an answer") from exc

    try:
        return await asyncio.to_thread(call)
    except Exception as exc:
        raise classify(exc, what) from exc
