"""The fastest idempotent bulk insert each database offers, inside the caller's transaction.

SQLite: one compiled `INSERT ... ON CONFLICT` per table through the DBAPI's executemany.
PostgreSQL: binary COPY into per-connection TEMP staging tables, then one
`INSERT ... SELECT ... ON CONFLICT` per table. The COPY runs before the per-stream advisory
lock, so concurrent writers overlap their transfer and serialise only the merge; under the lock
each merge sees every row committed before it, so ON CONFLICT never races another writer.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import psycopg
from psycopg import sql as pgsql
from sqlalchemy import JSON, Column, Connection, Engine, MetaData, Table, cast, event, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import Text, TypeEngine

from services.dbwriter.rows import TABLE_ORDER, TableRows
from services.dbwriter.sql import dialect_insert, on_conflict, stream_lock

log = logging.getLogger(__name__)


class BulkWriter(Protocol):
    def write(self, conn: Connection, stream: str, groups: list[TableRows]) -> None: ...


class SqliteBulk:
    """SQLite holds one writer at a time (BEGIN IMMEDIATE), so plain executemany is safe.

    exec_driver_sql hands the tuples straight to executemany (as fast as the raw cursor,
    measured) but still wraps driver errors in SQLAlchemy's exception classes.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._sql = {t.name: _compile_positional(t, dialect) for t in TABLE_ORDER}

    def write(self, conn: Connection, stream: str, groups: list[TableRows]) -> None:
        for group in groups:
            conn.exec_driver_sql(self._sql[group.table.name], group.rows)


def _compile_positional(table: Table, dialect: Dialect) -> str:
    compiled = on_conflict(dialect_insert(dialect.name, table), table).compile(dialect=dialect)
    if list(compiled.positiontup or ()) != list(table.c.keys()):
        raise RuntimeError(f"{table.name}: compiled parameters are not in column order")
    return str(compiled)


class _Stage:
    """One table's staging twin: COPY target, binary types, and the merge statement."""

    def __init__(self, table: Table, stages: MetaData, dialect: Dialect) -> None:
        self.table = Table(
            f"stage_{table.name}",
            stages,
            *(Column(c.name, _staged_type(c.type)) for c in table.c),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DELETE ROWS",
        )
        self.ddl = str(CreateTable(self.table).compile(dialect=dialect))
        self.types = [c.type.compile(dialect=dialect).lower() for c in self.table.c]
        names = pgsql.SQL(", ").join(pgsql.Identifier(c.name) for c in self.table.c)
        self.copy = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            pgsql.Identifier(self.table.name), names
        )
        self.merge = _merge_statement(table, self.table)


def _staged_type(kind: TypeEngine[Any]) -> TypeEngine[Any]:
    """JSON travels as text and is cast in the merge: no per-row JSON adaptation."""
    return Text() if isinstance(kind, JSON) else kind


def _merge_statement(table: Table, stage: Table) -> Insert:
    cols = [
        cast(stage.c[c.name], postgresql.JSONB) if isinstance(c.type, JSON) else stage.c[c.name]
        for c in table.c
    ]
    rows = select(*cols).order_by(stage.c.seq)  # one lock order for every writer
    insert = dialect_insert("postgresql", table).from_select(list(table.c.keys()), rows)
    return on_conflict(insert, table)


class PostgresBulk:
    def __init__(self, engine: Engine) -> None:
        stages = MetaData()
        self._stages = {t.name: _Stage(t, stages, engine.dialect) for t in TABLE_ORDER}
        event.listen(engine, "connect", self._create_stages)

    def _create_stages(self, dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        """TEMP tables live as long as the session: create them once per connection."""
        with dbapi_conn.cursor() as cursor:
            for stage in self._stages.values():
                cursor.execute(stage.ddl)
        dbapi_conn.commit()
        log.debug("created %d staging tables on a new connection", len(self._stages))

    def write(self, conn: Connection, stream: str, groups: list[TableRows]) -> None:
        raw = conn.connection.driver_connection
        if not isinstance(raw, psycopg.Connection):
            raise TypeError(f"PostgresBulk needs psycopg 3, got {type(raw).__name__}")
        with raw.cursor() as cursor:
            for group in groups:
                self._copy(cursor, group)
        conn.execute(select(stream_lock(stream)))
        for group in groups:
            conn.execute(self._stages[group.table.name].merge)

    def _copy(self, cursor: psycopg.Cursor[Any], group: TableRows) -> None:
        """Driver errors are wrapped like SQLAlchemy's own (IntegrityError, DataError, ...)."""
        stage = self._stages[group.table.name]
        try:
            with cursor.copy(stage.copy) as copy:
                copy.set_types(stage.types)
                for row in group.rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            statement = stage.copy.as_string(cursor.connection)
            raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def bulk_writer(engine: Engine) -> BulkWriter:
    if engine.dialect.name == "postgresql":
        return PostgresBulk(engine)
    if engine.dialect.name == "sqlite":
        return SqliteBulk(engine.dialect)
    raise ValueError(f"unsupported database dialect {engine.dialect.name!r}")
