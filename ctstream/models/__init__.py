"""Plain data shared by every stage: change events, table specs, unique ids, masking rules.

Imports nothing of ctstream's but ``ctstream.errors`` (a leaf).
"""

from ctstream.models.change_event import METADATA_COLUMNS, ChangeEvent, Operation
from ctstream.models.source_state import PollTick, SourceState
from ctstream.models.table_selection import TableSelection
from ctstream.models.table_spec import ColumnSpec, TableSpec, bq_identifier
from ctstream.models.unique_id import encode_key, parse_unique_id, unique_id
from ctstream.models.values import JsonValue, normalise

__all__ = [
    "METADATA_COLUMNS",
    "ChangeEvent",
    "ColumnSpec",
    "JsonValue",
    "Operation",
    "PollTick",
    "SourceState",
    "TableSelection",
    "TableSpec",
    "bq_identifier",
    "encode_key",
    "normalise",
    "parse_unique_id",
    "unique_id",
]
