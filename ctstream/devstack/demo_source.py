"""The demo's source: three SQLite tables under change tracking, and a driver of changes.

:data:`SCHEMA` names the tables: ``items`` (one integer key), ``order_lines`` (a
composite integer key) and ``kv`` (a composite text key whose values would collide under
naive concatenation and contain separators and quotes). :class:`ChangeDriver` makes a
given number of inserts, updates, deletes and re-inserts, the same ones for a seed.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from ctstream.source.sqlite_tracking import track_database

__all__ = ["SCHEMA", "ChangeDriver", "create_source", "current_version"]

SCHEMA = {
    "items": (
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, "
        "qty INTEGER, updated_at DATETIME)"
    ),
    "order_lines": (
        "CREATE TABLE order_lines (order_id INTEGER NOT NULL, line_no INTEGER NOT NULL, "
        "sku TEXT, amount REAL, note TEXT, PRIMARY KEY (order_id, line_no))"
    ),
    "kv": (
        "CREATE TABLE kv (ns TEXT NOT NULL, k TEXT NOT NULL, v TEXT, blob BLOB, "
        "PRIMARY KEY (ns, k)) WITHOUT ROWID"
    ),
}


def create_source(db: Path) -> None:
    """A new SQLite database at ``db`` (replacing any) with the :data:`SCHEMA` tables, all
    change-tracked."""
    if db.exists():
        db.unlink()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for ddl in SCHEMA.values():
            conn.execute(ddl)
        conn.commit()
    track_database(db, list(SCHEMA))


def current_version(db: Path) -> int:
    """The source database's current change tracking version (the stand-in's counter)."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(conn.execute("SELECT current_version FROM _ctstream_version").fetchone()[0])


class ChangeDriver:
    """Makes ``total`` row changes: inserts, updates (some keys very often), deletes and
    re-inserts of deleted keys. Deterministic for a seed."""

    def __init__(self, db: Path, total: int, seed: int = 7) -> None:
        self.db = db
        self.total = total
        self.done = 0
        self.rng = random.Random(seed)  # noqa: S311 - test data
        self.live: dict[str, list[tuple[Any, ...]]] = {t: [] for t in SCHEMA}
        self.live_set: dict[str, set[tuple[Any, ...]]] = {t: set() for t in SCHEMA}
        self.deleted: dict[str, list[tuple[Any, ...]]] = {t: [] for t in SCHEMA}
        self.next_id = {"items": 1, "order_lines": 1, "kv": 1}

    def _new_key(self, table: str) -> tuple[Any, ...]:
        n = self.next_id[table]
        self.next_id[table] += 1
        if table == "items":
            return (n,)
        if table == "order_lines":
            return (n // 5 + 1, n % 5 + 1)
        # Keys like ('1', '23') and ('12', '3') collide if joined without a separator;
        # separators and quotes inside values must not confuse the unique id either.
        tricky = ["", "|", ",", '"', "\\", ":", "ü"][n % 7]
        return (f"{n // 10}{tricky}", f"{n % 10}{tricky}{n}")

    def _values(self, table: str, key: tuple[Any, ...]) -> tuple[Any, ...]:
        r = self.rng
        if table == "items":
            ts = f"2026-11-{r.randint(1, 28):02d} {r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00"
            return (
                *key,
                f"item {key[0]} v{r.randint(0, 999)}",
                round(r.uniform(1, 500), 2),
                r.randint(0, 100),
                ts,
            )
        if table == "order_lines":
            return (
                *key,
                f"SKU-{r.randint(1, 9999)}",
                round(r.uniform(1, 900), 2),
                r.choice([None, "gift", "express", "ünïcödé;'\""]),
            )
        return (*key, r.choice(["a", "b|c", 'quote"d', None]), r.randbytes(r.randint(0, 24)))

    def _sql(self, table: str) -> tuple[str, str, str]:
        cols = {
            "items": ["id", "name", "price", "qty", "updated_at"],
            "order_lines": ["order_id", "line_no", "sku", "amount", "note"],
            "kv": ["ns", "k", "v", "blob"],
        }[table]
        nkey = {"items": 1, "order_lines": 2, "kv": 2}[table]
        keys, others = cols[:nkey], cols[nkey:]
        where = " AND ".join(f"{k} = ?" for k in keys)
        insert = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        update = f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in others)} WHERE {where}"
        delete = f"DELETE FROM {table} WHERE {where}"
        return insert, update, delete

    def step(self, conn: sqlite3.Connection, count: int) -> None:
        r = self.rng
        for _ in range(count):
            table = r.choices(list(SCHEMA), weights=[45, 40, 15])[0]
            insert, update, delete = self._sql(table)
            live = self.live[table]
            roll = r.random()
            if len(live) < 50 or roll < 0.40:
                key = self._new_key(table)
                conn.execute(insert, self._values(table, key))
                self._add(table, key)
            elif roll < 0.78:
                # A fifth of updates hit the first 20 keys: those change many times.
                key = live[r.randrange(min(20, len(live)))] if r.random() < 0.2 else r.choice(live)
                values = self._values(table, key)[len(key) :]
                conn.execute(update, (*values, *key))
            elif roll < 0.92 or not self.deleted[table]:
                key = live.pop(r.randrange(len(live)))
                self.live_set[table].discard(key)
                conn.execute(delete, key)
                self.deleted[table].append(key)
            else:
                key = self.deleted[table].pop(r.randrange(len(self.deleted[table])))
                conn.execute(insert, self._values(table, key))
                self._add(table, key)
            self.done += 1

    def _add(self, table: str, key: tuple[Any, ...]) -> None:
        self.live[table].append(key)
        self.live_set[table].add(key)

    def run(self, chunk: int = 400) -> None:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            while self.done < self.total:
                self.step(conn, min(chunk, self.total - self.done))
                conn.commit()
                time.sleep(0.01)  # let pollers interleave with the writer, as in production
