"""One exception root for ctstream.

Like aiokafka's errors, every error says whether trying again can help (``retriable``).
Messages say what is wrong and what to do about it.
"""

from __future__ import annotations


class CtstreamError(Exception):
    """Root of every error ctstream raises on purpose."""

    retriable: bool = False


class ConfigError(CtstreamError):
    """The configuration is invalid; fix the named key and start again."""


class SourceError(CtstreamError):
    """The source database is not usable as configured (missing table, no tracking...)."""


class SourceUnavailable(SourceError):
    """The source database could not be reached or timed out; polling retries."""

    retriable = True


class VersionTooOld(SourceError):
    """The saved Change Tracking version is below the table's minimum valid version."""


class SchemaChanged(SourceError):
    """The table's columns changed since it was described; ``spec`` has the new ones."""

    retriable = True

    def __init__(self, message: str, spec: object) -> None:
        super().__init__(message)
        self.spec = spec


class SinkError(CtstreamError):
    """BigQuery rejected a request in a way retrying cannot fix."""


class RequestTooLarge(SinkError):
    """BigQuery refused a request for its size; sending fewer rows at once helps."""


class SinkUnavailable(SinkError):
    """BigQuery is slow, throttling or down; the sink backs off and tries again."""

    retriable = True


class StackError(CtstreamError):
    """The local broker or BigQuery emulator could not be started or found."""
