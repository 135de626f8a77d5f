"""Dialect-specific statements, built once from the schema (no hand-written SQL).

SQLite and PostgreSQL share the `ON CONFLICT` grammar, so one builder serves both: plain rows
are skipped when their (stream, seq) is already there; orders upsert on order_id but only when
the new state is further along (status rank, then filled quantity), so a replayed or late
record can never move an order backwards.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, func, literal_column, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from services.dbwriter import schema
from services.dbwriter.rows import ORDER_STATUS_RANK

DialectInsert = postgresql.Insert | sqlite.Insert
_STREAM_LOCK_SPACE = 0x17C1  # first key of the per-stream advisory lock


def dialect_insert(dialect_name: str, table: Table) -> DialectInsert:
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {dialect_name!r}: use sqlite or postgresql")


def status_rank(status: ColumnElement[Any]) -> ColumnElement[int]:
    """Literal (not bound) values, so the statement compiles to one parameter per column."""
    whens: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = [
        (status == literal_column(f"'{name}'"), literal_column(str(rank)))
        for name, rank in ORDER_STATUS_RANK.items()
    ]
    return case(*whens, else_=literal_column("-1"))


def _advances(new: Any, table: Table) -> ColumnElement[bool]:
    new_rank, old_rank = status_rank(new.status), status_rank(table.c.status)
    further = and_(new_rank == old_rank, new.filled_quantity > table.c.filled_quantity)
    return or_(new_rank > old_rank, further)


def on_conflict(stmt: DialectInsert, table: Table) -> DialectInsert:
    if table is not schema.orders:
        return stmt.on_conflict_do_nothing(index_elements=[table.c.stream, table.c.seq])
    new = stmt.excluded
    updates = {c.name: new[c.name] for c in table.c if c.name != "order_id"}
    return stmt.on_conflict_do_update(
        index_elements=[table.c.order_id], set_=updates, where=_advances(new, table)
    )


def advance_progress(dialect_name: str, stream: str, seq: int) -> Insert:
    """Raise the stream's high-water mark to `seq` (never lower it); returns the new mark."""
    progress = schema.stream_progress
    stmt = dialect_insert(dialect_name, progress).values(stream=stream, last_seq=seq)
    pick = func.greatest if dialect_name == "postgresql" else func.max
    top = pick(progress.c.last_seq, stmt.excluded.last_seq)
    upsert = stmt.on_conflict_do_update(index_elements=[progress.c.stream], set_={"last_seq": top})
    return upsert.returning(progress.c.last_seq)


def stream_lock(stream: str) -> ColumnElement[Any]:
    """Postgres: one writer at a time per stream inside the insert phase (see bulk.py)."""
    return func.pg_advisory_xact_lock(_STREAM_LOCK_SPACE, func.hashtext(stream))
