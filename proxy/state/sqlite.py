"""The embedded store's SQLite files: budgets and spend (`StateDB`), admin registrations
(`ProviderRows`).

Every worker of `serve --workers N` (and any other process given the same data directory)
opens the same files. A file tells whether another connection committed to it since the last
look (`changed_elsewhere`, SQLite's `PRAGMA data_version`: one integer, no table read), which
the embedded store asks a few times a second to pick up what another worker changed.
"""

from __future__ import annotations

import sqlite3
import threading


class SharedFile:
    """One connection to a SQLite file that other processes may write too."""

    def __init__(self, path: str) -> None:
        # The default 5 s busy timeout lets a writer wait out another worker's short commit.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        # Taken before the owner first reads: a commit landing between that read and the
        # first look is then seen as a change, never missed.
        self._version = self._data_version()

    def _data_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def changed_elsewhere(self) -> bool:
        """Has another connection committed since the last call? (This one's own commits never count.)"""
        now = self._data_version()
        if now == self._version:
            return False
        self._version = now
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


class StateDB(SharedFile):
    """Budget limits set through the admin API, and spend. Spend is added as deltas, so the
    workers sharing the file add up to one total per key."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS budgets (key_id TEXT PRIMARY KEY, usd REAL NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS spend (key_id TEXT PRIMARY KEY, usd REAL NOT NULL)")

    def budgets(self) -> dict[str, float]:
        with self._lock:
            return dict(self._db.execute("SELECT key_id, usd FROM budgets").fetchall())

    def spend(self) -> dict[str, float]:
        with self._lock:
            return dict(self._db.execute("SELECT key_id, usd FROM spend").fetchall())

    def set_budget(self, key_id: str, usd: float | None) -> None:
        with self._lock:
            if usd is None:
                self._db.execute("DELETE FROM budgets WHERE key_id = ?", (key_id,))
            else:
                self._db.execute("INSERT OR REPLACE INTO budgets VALUES (?, ?)", (key_id, usd))

    def set_spend(self, key_id: str, usd: float) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO spend VALUES (?, ?)", (key_id, usd))

    def add_spend(self, deltas: dict[str, float]) -> None:
        """Add this process's spend since its last flush (a total written here would erase what
        the other workers added meanwhile)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO spend VALUES (?, ?) ON CONFLICT (key_id) DO UPDATE "
                                 "SET usd = usd + excluded.usd", deltas.items())


class ProviderRows(SharedFile):
    """Admin registrations: (name, item JSON, sealed key) rows."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS providers (name TEXT PRIMARY KEY, item BLOB NOT NULL, "
                         "sealed_key TEXT)")

    def rows(self) -> list[tuple[bytes, str | None]]:
        with self._lock:
            return self._db.execute("SELECT item, sealed_key FROM providers ORDER BY name").fetchall()

    def put(self, rows: list[tuple[str, bytes, str | None]]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO providers VALUES (?, ?, ?)", rows)

    def delete(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM providers WHERE name = ?", (name,))
