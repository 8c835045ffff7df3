"""The embedded counter store: a SQLite file of its own in the instance folder, shared by every worker of the host.

Its own file, not the main database: limit traffic never waits for (or holds up)
a dashboard write, and losing it loses only the current windows' counts.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time

from apikeys.ratelimit.window import StoreError
from apikeys.ratelimit.window import Window

FILE = "ratelimits.sqlite3"
# A verification waits at most this for the other workers' counting (each holds the file for microseconds, but
# SQLite's wait is a poll, which a busy CPU stretches); then that one verification finds the store failed.
BUSY_TIMEOUT_MS = 250

_SCHEMA = "CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, window INTEGER NOT NULL, count INTEGER NOT NULL)"
# Counts this verification unless its window is full; an older stored window starts over at 1. A worker whose clock
# reading is a hair older than the stored window's counts into the stored one. No row back: the window is full.
_TAKE = """
INSERT INTO windows (key, window, count) VALUES (?1, ?2, 1)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN windows.window >= excluded.window THEN windows.count + 1 ELSE 1 END,
    window = max(windows.window, excluded.window)
WHERE windows.window < excluded.window OR windows.count < ?3
RETURNING count, window
"""
_PEEK = "SELECT window, count FROM windows WHERE key = ?1"
_GIVE_BACK = "UPDATE windows SET count = count - 1 WHERE key = ?1 AND window = ?2 AND count > 0"


class EmbeddedStore:
    """Fixed-window counters in instance/ratelimits.sqlite3, made on first use (never for keys without a limit)."""

    def __init__(self, instance_path: str):
        self.path = os.path.join(instance_path, FILE)
        # A connection per thread (and per process: opened after gunicorn forks the worker), so that a thread
        # waiting for the file never holds up another of its process.
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            # Private like the rest of the instance folder (the file is made 0600 before SQLite opens it).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")  # counts of the current windows: not worth an fsync
            connection.execute(_SCHEMA)
            local.connection, local.pid = connection, os.getpid()
        return local.connection

    def take(self, key_id: str, limit: int, period: int, count: bool = True) -> Window:
        """Count one verification in the key's current window if it has room (``count`` False: only look)."""
        name = f"{key_id}:{period}"
        try:
            connection = self._connect()
            now = time.time()
            window = math.floor(now / period)
            reset = (window + 1) * period - now
            if count:
                row = connection.execute(_TAKE, (name, window, limit)).fetchone()
                if row is None:
                    return Window(False, limit, reset)
                used, counted_in = row
                # Counted in the window the file holds: a later one if another worker's clock reading moved it on
                # while this one waited. The answer tells about that window, where the count went, from now (after
                # the wait, so inside that window: never more than one period to its end).
                reset = (counted_in + 1) * period - max(time.time(), counted_in * period)
                return Window(True, used, reset, (name, counted_in))
            row = connection.execute(_PEEK, (name,)).fetchone()
        except sqlite3.Error as error:
            raise _failed(self.path, error) from None
        used = row[1] if row is not None and row[0] == window else 0
        return Window(used < limit, used, reset)

    def give_back(self, mark) -> None:
        """Uncount a verification counted by take (one a later check refused)."""
        try:
            self._connect().execute(_GIVE_BACK, mark)
        except sqlite3.Error as error:
            raise _failed(self.path, error) from None


def _failed(path: str, error: sqlite3.Error) -> StoreError:
    # Busy (another worker held the file too long) fails this verification only; anything else is the file itself.
    busy = isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
    return StoreError(f"the rate-limit store {path} failed: {error}", unreachable=not busy)
