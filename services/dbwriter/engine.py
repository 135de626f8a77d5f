"""Engines configured for the writer: SQLite in WAL with explicit, immediate transactions.

pysqlite's own transaction handling defers BEGIN and commits around DDL, which breaks
"one batch = one transaction"; so the driver's handling is switched off and we emit BEGIN
ourselves (SQLAlchemy's documented recipe). IMMEDIATE takes the write lock up front, so two
writers queue on busy_timeout instead of failing a lock upgrade; reads use a deferred BEGIN.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

READ_ONLY = "itg_read_only"  # execution option: a reading transaction (deferred BEGIN on SQLite)
_BUSY_TIMEOUT_MS = 30_000


def make_sqlite_dir(url: str) -> None:
    """SQLite creates its file, not the directory it lives in."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=True)  # a restarted server drops pooled links
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    log.debug("database engine for %s", engine.url.render_as_string(hide_password=True))
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        _enter_wal(cursor)
        # FULL: a commit is on disk before the writer acknowledges the batch, and the producer
        # forgets it then (in WAL mode NORMAL may lose the last commits on a power cut)
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _enter_wal(cursor: Any) -> None:
    """Switch to WAL. Two writers opening a new file at once can get "database is locked"
    here without SQLite calling the busy handler (the mode change needs the file alone), so
    the switch is retried until the busy timeout."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
