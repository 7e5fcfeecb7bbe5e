"""What the service decided, in SQLite: one row per (CVAT target, annotation version).

The row is written before the run is submitted (state `pending`) and names the run it will
create; the unique key makes a second row for the same version impossible, so a redelivered
webhook, a duplicate event, a reconciliation and a restart all find the row and submit nothing
new. States: `pending` (to submit, with the next attempt's time), `submitted` (with the KFP run
id), `skipped` (complete but nothing to train on: the reason says why).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,              -- "task:12@<version>" or "project:7@<version>"
    target TEXT NOT NULL,              -- "task 12" or "project 7"
    version TEXT NOT NULL,             -- the annotation version (see cvat_state.py)
    pipeline TEXT NOT NULL,
    experiment TEXT NOT NULL,
    run_name TEXT NOT NULL,
    arguments TEXT NOT NULL,           -- JSON
    state TEXT NOT NULL CHECK (state IN ('pending', 'submitted', 'skipped')),
    run_id TEXT,
    run_url TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_pending ON runs (state, next_attempt_at);
"""


@dataclass(frozen=True)
class Record:
    key: str
    target: str
    version: str
    pipeline: str
    experiment: str
    run_name: str
    arguments: str
    state: str
    run_id: str | None
    run_url: str | None
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float

    def as_json(self) -> dict[str, Any]:
        document = {name: getattr(self, name) for name in self.__dataclass_fields__}
        document["arguments"] = json.loads(self.arguments)
        return document


class Store:
    """Thread-safe: the HTTP handlers read, the worker writes; one connection, one lock."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._connection.row_factory = sqlite3.Row
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")  # a submitted row survives a crash
            self._connection.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def add(
        self,
        *,
        key: str,
        target: str,
        version: str,
        pipeline: str,
        experiment: str,
        run_name: str,
        arguments: str,
        state: str = "pending",
        last_error: str | None = None,
    ) -> bool:
        """Record an intent; False (and nothing written) when this key is already recorded."""
        now = time.time()
        with self._lock:
            cursor = self._connection.execute(
                "INSERT OR IGNORE INTO runs (key, target, version, pipeline, experiment, run_name,"
                " arguments, state, last_error, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    target,
                    version,
                    pipeline,
                    experiment,
                    run_name,
                    arguments,
                    state,
                    last_error,
                    now,
                    now,
                ),
            )
            return cursor.rowcount == 1

    def get(self, key: str) -> Record | None:
        with self._lock:
            row = self._connection.execute("SELECT * FROM runs WHERE key = ?", (key,)).fetchone()
        return Record(**row) if row else None

    def all(self, limit: int = 500) -> list[Record]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT * FROM runs ORDER BY created_at DESC, key LIMIT ?", (limit,)
            ).fetchall()
        return [Record(**row) for row in rows]

    def due(self, now: float | None = None) -> list[Record]:
        """Pending records whose next attempt is due, oldest first."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._connection.execute(
                "SELECT * FROM runs WHERE state = 'pending' AND next_attempt_at <= ?"
                " ORDER BY created_at, key",
                (now,),
            ).fetchall()
        return [Record(**row) for row in rows]

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT MIN(next_attempt_at) FROM runs WHERE state = 'pending'"
            ).fetchone()
        return row[0]

    def mark_submitted(self, key: str, run_id: str, run_url: str) -> None:
        with self._lock:
            self._connection.execute(
                "UPDATE runs SET state = 'submitted', run_id = ?, run_url = ?, last_error = NULL,"
                " attempts = attempts + 1, updated_at = ? WHERE key = ?",
                (run_id, run_url, time.time(), key),
            )

    def mark_failed_attempt(self, key: str, error: str, next_attempt_at: float) -> int:
        """Count a failed attempt and set when to try again; returns the attempts so far."""
        with self._lock:
            self._connection.execute(
                "UPDATE runs SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " updated_at = ? WHERE key = ?",
                (error, next_attempt_at, time.time(), key),
            )
            row = self._connection.execute(
                "SELECT attempts FROM runs WHERE key = ?", (key,)
            ).fetchone()
        return row[0] if row else 0
