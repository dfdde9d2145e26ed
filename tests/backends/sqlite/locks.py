"""Holding SQLite's write lock from a foreign connection, as another process would."""

from __future__ import annotations

import sqlite3
import threading


def hold_write_lock(path, seconds: float) -> threading.Thread:
    """Hold SQLite's write lock from a foreign connection (like another process would)."""
    locked = threading.Event()

    def run() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("CREATE TABLE IF NOT EXISTS other (x)")
        locked.set()
        threading.Event().wait(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert locked.wait(10)
    return thread
