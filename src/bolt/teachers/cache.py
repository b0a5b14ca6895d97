"""The teacher cache: one SQLite file of answers keyed by a hash of the rendered request.

The key covers everything that shapes an answer (backend family, model, full messages,
sampling parameters, template version), so a rerun sends only what is not answered
yet, and a changed template or parameter invalidates exactly the requests it changes.
Answers are committed one by one as they arrive: a process killed at any moment loses
at most the replies it had not received. Open provider batches are recorded too, so a
rerun polls them instead of submitting their requests again.

Several processes may share one cache: SQLite's write-ahead log lets readers and one
writer work at once, writers wait for each other (``timeout``), and an answer is
inserted only if its key is new.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, text TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    backend TEXT NOT NULL, model TEXT NOT NULL, batched INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    submission TEXT PRIMARY KEY, batch_id TEXT, backend TEXT NOT NULL, keys TEXT NOT NULL, open INTEGER NOT NULL, """
    """created REAL NOT NULL);
"""
)


class TeacherCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: online teachers store each reply from the thread that received
        # it (serialised by the caller's lock), so no finished reply waits in memory for a kill
        self.connection = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.executescript(_SCHEMA)

    def close(self) -> None:
        self.connection.close()

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, int, int, int]]:
        """Cached answers among ``keys`` as ``{key: (text, input_tokens, output_tokens, batched)}``."""
        found = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            rows = self.connection.execute(
                "SELECT key, text, input_tokens, output_tokens, batched FROM answers "
                f"WHERE key IN ({','.join('?' * len(part))})",
                part,
            )
            found.update({row[0]: row[1:] for row in rows})
        return found

    def put(
        self, key: str, text: str, input_tokens: int, output_tokens: int, backend: str, model: str, batched: bool
    ) -> None:
        self.connection.execute(
            "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, text, input_tokens, output_tokens, backend, model, int(batched), time.time()),
        )

    def begin_batch(self, submission: str, backend: str, keys: list[str]) -> None:
        """Record a batch about to be submitted, before the provider knows it, so no kill can orphan it."""
        self.connection.execute(
            "INSERT INTO batches VALUES (?, NULL, ?, ?, 1, ?)", (submission, backend, json.dumps(keys), time.time())
        )

    def set_batch_id(self, submission: str, batch_id: str) -> None:
        self.connection.execute("UPDATE batches SET batch_id = ? WHERE submission = ?", (batch_id, submission))

    def open_batches(self, backend: str) -> dict[str, tuple[str | None, list[str]]]:
        """Open submissions: ``{submission: (provider batch id or None if not known yet, keys)}``."""
        rows = self.connection.execute(
            "SELECT submission, batch_id, keys FROM batches WHERE backend = ? AND open = 1 ORDER BY created", (backend,)
        )
        return {submission: (batch_id, json.loads(keys)) for submission, batch_id, keys in rows}

    def close_batch(self, submission: str) -> None:
        self.connection.execute("UPDATE batches SET open = 0 WHERE submission = ?", (submission,))

    def close_batch_id(self, batch_id: str) -> None:
        self.connection.execute("UPDATE batches SET open = 0 WHERE batch_id = ?", (batch_id,))
