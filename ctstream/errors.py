"""Every exception ctstream raises on purpose, under one root.

Like aiokafka's errors, each says whether trying again can help (``retriable``); messages
say what is wrong and what to do about it. A leaf module: it imports nothing of ctstream's.

::

    CtstreamError
    ├── ConfigError                 a setting, argument or file is wrong; fix it, start again
    │   ├── UnverifiedDependency    faust/mode/aiokafka is not a version ctstream was checked with
    │   └── ChunkColumnRefused      source.chunk_columns names a column that cannot bound chunks
    ├── BadEvent (also ValueError)  a message is not a valid change event
    ├── SourceError                 the source database is not usable as configured
    │   ├── SourceUnavailable       cannot be reached or timed out                 (retriable)
    │   ├── SourcePermissionDenied  the login lacks a permission; ``grant`` fixes it
    │   ├── VersionTooOld           the saved version is below the minimum valid one
    │   ├── TableNotTracked         the table (as ctstream knows it) is not tracked now
    │   └── SchemaChanged           the table's columns changed; ``spec`` has them  (retriable)
    ├── KafkaError                  Kafka refused or failed a request
    │   ├── KafkaUnavailable        the brokers cannot be reached                  (retriable)
    │   └── KafkaSendFailed         produced messages were not acknowledged        (retriable)
    ├── SinkError                   BigQuery rejected a request; retrying cannot fix it
    │   ├── RequestTooLarge         refused for its size; send fewer rows at once
    │   ├── TableMissing            a table ctstream needs does not exist (yet)
    │   ├── StreamFenced            a write stream takes no more appends from this worker
    │   └── SinkUnavailable         slow, throttling or down                       (retriable)
    ├── RetryAborted                retrying stopped because the worker is stopping
    └── StackError                  the local broker or emulator could not be started
        └── PortTaken               the broker lost the race for its port          (retriable)
"""

from __future__ import annotations


class CtstreamError(Exception):
    """Root of every error ctstream raises on purpose."""

    retriable: bool = False


class ConfigError(CtstreamError):
    """The configuration is invalid; fix the named key and start again."""


class UnverifiedDependency(ConfigError):
    """An installed faust-streaming, mode-streaming or aiokafka is not the version
    ctstream's patches were verified against; install the pinned one (or allow a trial run
    as the message says)."""


class ChunkColumnRefused(ConfigError):
    """``source.chunk_columns`` names a column that cannot bound a table's snapshot chunks
    (missing, nullable, or of a type a bound parameter cannot be compared with); the
    table's snapshot is refused and its polling stopped until a worker starts with the
    setting or the column fixed."""


class BadEvent(CtstreamError, ValueError):
    """A message that is not a valid change event (the reason says why); it is parked in
    the error topic and ``_error_records``."""


class SourceError(CtstreamError):
    """The source database is not usable as configured (missing table, no tracking...)."""


class SourceUnavailable(SourceError):
    """The source database could not be reached or timed out; polling retries."""

    retriable = True


class SourcePermissionDenied(SourceError):
    """The source login lacks a permission a query needs; ``grant`` is the statement that
    gives it."""

    def __init__(self, message: str, grant: str) -> None:
        super().__init__(message)
        self.grant = grant


class TableNotTracked(SourceError):
    """The table, by the identity ctstream resolved (SQL Server's object id), is no longer
    change-tracked: tracking was disabled, or the table was dropped (and perhaps created
    again under the same name, with a new identity)."""


class VersionTooOld(SourceError):
    """The saved Change Tracking version is below the table's minimum valid version; only
    a snapshot of the table is correct now."""


class SchemaChanged(SourceError):
    """The table's columns changed since it was described; ``spec`` has the new ones."""

    retriable = True

    def __init__(self, message: str, spec: object) -> None:
        super().__init__(message)
        self.spec = spec


class KafkaError(CtstreamError):
    """Kafka refused or failed a request."""


class KafkaUnavailable(KafkaError):
    """The Kafka brokers could not be reached (or refused the connection's security);
    check ``kafka.bootstrap_servers`` and the security settings."""

    retriable = True


class KafkaSendFailed(KafkaError):
    """Produced messages were not acknowledged; everything is sent again (duplicates,
    never loss)."""

    retriable = True


class SinkError(CtstreamError):
    """BigQuery rejected a request in a way retrying cannot fix."""


class RequestTooLarge(SinkError):
    """BigQuery refused a request for its size; sending fewer rows at once helps."""


class TableMissing(SinkError):
    """A BigQuery table ctstream needs does not exist; a worker creates it at start."""


class StreamFenced(SinkError):
    """A committed-type write stream takes no more appends from this worker: the next owner
    of its partition finalized it, it is gone, or its end is not where this worker counted.
    What was not appended is written again on a new stream, never twice."""


class SinkUnavailable(SinkError):
    """BigQuery is slow, throttling or down; the sink backs off and tries again."""

    retriable = True


class RetryAborted(CtstreamError):
    """Retrying stopped because the worker is shutting down; the work was not done, and is
    left for the next owner of its partitions."""


class StackError(CtstreamError):
    """The local broker or BigQuery emulator could not be started or found."""


class PortTaken(StackError):
    """The local broker lost the race for its port; another port is tried."""

    retriable = True
