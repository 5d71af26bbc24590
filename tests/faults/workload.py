"""The source side of a fault run: three tables and a writer of realistic changes.

``accounts`` has an integer key, ``order_lines`` a composite integer key and ``tags`` a
composite text key. Each transaction inserts new keys, updates existing ones (some keys
far more often than others), deletes, and re-inserts keys deleted earlier — the cases
where a lost or reordered change shows in the latest-state view.

Every delete is also written to ``delete_log`` (untracked) with its change version, so a
check can tell a key that left the source and came back (a latest view may lack it until
the re-insert lands) from one that never left.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctstream.source.sqlite_tracking import VERSION_TABLE

TABLES = {
    "accounts": "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, "
    "balance REAL NOT NULL, rev INTEGER NOT NULL)",
    "order_lines": "CREATE TABLE order_lines (order_id INTEGER NOT NULL, line_no INTEGER "
    "NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL, PRIMARY KEY (order_id, line_no))",
    "tags": "CREATE TABLE tags (ns TEXT NOT NULL, tag TEXT NOT NULL, note TEXT, "
    "rev INTEGER NOT NULL, PRIMARY KEY (ns, tag))",
}

Key = tuple[Any, ...]


def _key_space(table: str, rng: random.Random) -> Key:
    # A skewed choice: a few keys change very often (like hot rows in production).
    hot = rng.random() < 0.2
    if table == "accounts":
        return (rng.randrange(50) if hot else rng.randrange(6000),)
    if table == "order_lines":
        return (rng.randrange(20) if hot else rng.randrange(1500), rng.randrange(1, 5))
    ns = f"ns|{rng.randrange(3 if hot else 25)}"  # separators inside key values too
    return (ns, f"t,{rng.randrange(10 if hot else 160)}")


_INSERT = {
    "accounts": "INSERT INTO accounts VALUES (?, ?, ?, ?)",
    "order_lines": "INSERT INTO order_lines VALUES (?, ?, ?, ?)",
    "tags": "INSERT INTO tags VALUES (?, ?, ?, ?)",
}
_UPDATE = {
    "accounts": "UPDATE accounts SET balance = balance + ?, rev = rev + 1 WHERE id = ?",
    "order_lines": "UPDATE order_lines SET qty = qty + ? WHERE order_id = ? AND line_no = ?",
    "tags": "UPDATE tags SET note = ?, rev = rev + 1 WHERE ns = ? AND tag = ?",
}
_DELETE = {
    "accounts": "DELETE FROM accounts WHERE id = ?",
    "order_lines": "DELETE FROM order_lines WHERE order_id = ? AND line_no = ?",
    "tags": "DELETE FROM tags WHERE ns = ? AND tag = ?",
}


def _row(table: str, key: Key, n: int) -> tuple[Any, ...]:
    if table == "accounts":
        return (*key, f"owner {n}", float(n % 1000) / 4, 0)
    if table == "order_lines":
        return (*key, f"sku-{n % 97}", 1 + n % 9)
    return (*key, f"note {n}", 0)


def _update_args(table: str, key: Key, n: int) -> tuple[Any, ...]:
    if table == "accounts":
        return (0.25, *key)
    if table == "order_lines":
        return (1, *key)
    return (f"note {n}", *key)


@dataclass
class Workload:
    """Writes changes at about ``rate`` per second until stopped; counts what it did."""

    db: Path
    rate: float
    seed: int = 1
    changes: Counter[str] = field(default_factory=Counter)  # kind → rows changed
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    @property
    def total(self) -> int:
        return sum(self.changes.values())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.error is not None:
            raise RuntimeError(f"the workload failed: {self.error!r}") from self.error

    def burst(self, changes: int) -> None:
        """``changes`` more rows changed at once, in one transaction (used before a cleanup)."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=60)) as conn:
            self._transaction(conn, random.Random(self.seed + 7919), changes)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        per_txn = 40
        try:
            with contextlib.closing(sqlite3.connect(self.db, timeout=60)) as conn:
                started, done = time.monotonic(), 0
                while not self._stop.is_set():
                    done += self._transaction(conn, rng, per_txn)
                    # Pace to the rate: sleep off any lead over the schedule.
                    lead = done / self.rate - (time.monotonic() - started)
                    if lead > 0:
                        self._stop.wait(lead)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _transaction(self, conn: sqlite3.Connection, rng: random.Random, size: int) -> int:
        """One transaction of about ``size`` row changes; returns the rows it changed."""
        changed = 0
        with conn:
            while changed < size:
                table = rng.choice(list(TABLES))
                key = _key_space(table, rng)
                n = self.total + changed
                where = _where(table)
                exists = conn.execute(f"SELECT 1 FROM {table} WHERE {where}", key).fetchone()
                if exists is None:
                    conn.execute(_INSERT[table], _row(table, key, n))
                    was_deleted = conn.execute(
                        "SELECT 1 FROM deleted_keys WHERE t = ? AND k = ?", (table, repr(key))
                    ).fetchone()
                    self.changes["reinsert" if was_deleted else "insert"] += 1
                elif rng.random() < 0.8:
                    conn.execute(_UPDATE[table], _update_args(table, key, n))
                    self.changes["update"] += 1
                else:
                    conn.execute(_DELETE[table], key)
                    conn.execute(
                        "INSERT OR IGNORE INTO deleted_keys VALUES (?, ?)", (table, repr(key))
                    )
                    # The delete's change version: the trigger has just bumped the counter.
                    (version,) = conn.execute(
                        f"SELECT current_version FROM {VERSION_TABLE} WHERE id = 1"
                    ).fetchone()
                    conn.execute(
                        "INSERT INTO delete_log (t, k, version) VALUES (?, ?, ?)",
                        (table, key_text(key), version),
                    )
                    self.changes["delete"] += 1
                changed += 1
        return changed


def _where(table: str) -> str:
    return {
        "accounts": "id = ?",
        "order_lines": "order_id = ? AND line_no = ?",
        "tags": "ns = ? AND tag = ?",
    }[table]


def key_text(key: Key) -> str:
    """A key as ``delete_log`` holds it: its values as text, as BigQuery casts them."""
    return json.dumps([str(v) for v in key])


def create_bookkeeping(db: Path) -> None:
    """Untracked tables: the keys deleted so far (to tell re-inserts from inserts), and
    every delete with its change version (``delete_log``)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS deleted_keys (t TEXT, k TEXT, PRIMARY KEY (t, k))")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS delete_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "t TEXT NOT NULL, k TEXT NOT NULL, version INTEGER NOT NULL)"
        )
        conn.commit()
