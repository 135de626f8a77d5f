"""Engines configured for the writer: SQLite in WAL with explicit, immediate transactions.

pysqlite's own transaction handling defers BEGIN and commits around DDL, which breaks
"one batch = one transaction"; so the driver's handling is switched off and we emit BEGIN
ourselves (SQLAlchemy's documented recipe). IMMEDIATE takes the write lock up front, so two
writers queue on busy_timeout instead of failing a lock upgrade; reads use a deferred BEGIN.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

READ_ONLY = "itg_read_only"  # execution option: a reading transaction (deferred BEGIN on SQLite)
_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=True)  # a restarted server drops pooled links
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    log.info("database engine for %s", engine.url.render_as_string(hide_password=True))
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
