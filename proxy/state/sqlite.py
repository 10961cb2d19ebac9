"""Budget limits and spend of the embedded store, kept in SQLite so a restart does not reset them."""

from __future__ import annotations

import sqlite3
import threading


class StateDB:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS budgets (key_id TEXT PRIMARY KEY, usd REAL NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS spend (key_id TEXT PRIMARY KEY, usd REAL NOT NULL)")
        self._lock = threading.Lock()

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

    def save_spend(self, spend: dict[str, float]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO spend VALUES (?, ?)", spend.items())

    def close(self) -> None:
        with self._lock:
            self._db.close()
