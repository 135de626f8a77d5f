"""The DB writer's storage: one batch = one transaction = rows + the stream's high-water mark.

Because rows and `stream_progress.last_seq` commit together and every insert is idempotent on
(stream, seq), a producer may re-send any batch any number of times, to any number of writers,
and the database still holds each record exactly once.

`last_seq` is a high-water mark: with several writers a later batch can commit before an
earlier one, so it does not promise that every lower seq is already stored. Producers ack (and
stop re-sending) per batch, from the value `write` returns for that batch.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from common.records import AnyRecord, RecordBatch
from services.dbwriter import reads
from services.dbwriter.bulk import bulk_writer
from services.dbwriter.engine import READ_ONLY, make_engine
from services.dbwriter.positions import TeamPositions, apply_trades
from services.dbwriter.rows import group_rows
from services.dbwriter.schema import create_schema, dead_letters, stream_origins
from services.dbwriter.sql import advance_progress, dialect_insert

log = logging.getLogger(__name__)

# Errors a record brings with it: writing it again fails the same way. A lost connection or a
# locked database (OperationalError) is not one of them: a later retry gets past those.
PERMANENT = (DataError, IntegrityError, OverflowError, ValueError, TypeError)
_INT64_END = 2**63


class ForeignStream(RuntimeError):
    """The database holds this stream from another run of its producer (a matcher started on
    a new data dir against the database of an earlier game). Storing nothing is the only safe
    answer: the batch's rows would be skipped as already stored, or mixed into that game."""


class Store:
    """Owns its engine, so every pooled connection is set up for the bulk path."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self._engine = make_engine(url)
        self._bulk = bulk_writer(self._engine)
        self._reader = self._engine.execution_options(**_read_options(self._engine))
        self._origins: dict[str, str] = {}  # stream -> origin this writer has seen it hold
        if create:
            try:
                create_schema(self._engine)
            except BaseException:
                self._engine.dispose()
                raise

    @property
    def engine(self) -> Engine:
        return self._engine

    def write(self, batch: RecordBatch) -> int:
        """Store the batch atomically; returns the stream's committed last_seq."""
        _check(batch)
        if not batch.records:
            return self.last_seq(batch.stream)
        groups = group_rows(batch.records)
        top = max(rec.seq for rec in batch.records)
        dialect = self._engine.dialect.name
        claim = batch.origin and self._origins.get(batch.stream) != batch.origin
        with self._engine.begin() as conn:
            if claim:
                _claim(conn, batch.stream, batch.origin)
            self._bulk.write(conn, batch.stream, groups)
            done: int = conn.execute(advance_progress(dialect, batch.stream, top)).scalar_one()
        if claim:
            self._origins[batch.stream] = batch.origin
        log.debug("stored %d records of %s up to seq %d", len(batch.records), batch.stream, top)
        return done

    def salvage(self, batch: RecordBatch, exc: BaseException) -> int:
        """Store a batch `write` refused with `exc`, a PERMANENT error: every record the
        database takes, and each one it refuses into dead_letters, with why. Bisects, so k bad
        records among n cost about 2k*log2(n) transactions. Returns how many were buried; a
        transient error propagates (what was stored stays: every write is idempotent)."""
        if len(batch.records) == 1:
            self._bury(batch.stream, batch.records[0], exc)
            return 1
        mid = len(batch.records) // 2
        buried = 0
        for records in (batch.records[:mid], batch.records[mid:]):
            half = RecordBatch(stream=batch.stream, records=records, origin=batch.origin)
            try:
                self.write(half)
            except PERMANENT as failed:
                buried += self.salvage(half, failed)
        return buried

    def _bury(self, stream: str, rec: AnyRecord, exc: BaseException) -> None:
        seq = rec.seq if rec.stream == stream and 0 < rec.seq < _INT64_END else 0
        why = _why(exc)
        row = {"stream": stream, "seq": seq, "buried_ns": time.time_ns(), "error": why,
               "record": msgspec.json.encode(rec).decode()}
        dialect = self._engine.dialect.name
        insert = dialect_insert(dialect, dead_letters).values(row).on_conflict_do_nothing()
        with self._engine.begin() as conn:
            conn.execute(insert)
            if seq:
                conn.execute(advance_progress(dialect, stream, seq))
        log.error("record %s/%d refused by the database for good, kept in dead_letters: %s",
                  stream, rec.seq, why)

    def last_seq(self, stream: str) -> int:
        """0 when nothing of `stream` was ever stored."""
        with self._reader.connect() as conn:
            return reads.last_seq(conn, stream)

    def positions_from_db(self, stream: str = "matcher",
                          upto: int | None = None) -> dict[str, TeamPositions]:
        """Every team's book: its latest snapshot on `stream` plus the trades after it; with
        `upto`, as of that record of the stream.

        Exact when the stream is stored contiguously up to its last trade (see store docs).
        """
        with self._reader.connect() as conn:
            books = reads.latest_snapshots(conn, stream, upto)
            apply_trades(books, reads.trades_after_snapshots(conn, stream, upto))
            for team_id in reads.team_ids(conn, upto):
                books.setdefault(team_id, TeamPositions(team_id))
        return books

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _claim(conn: Connection, stream: str, origin: str) -> None:
    """The first origin to write a stream holds it; any other raises ForeignStream."""
    row = {"stream": stream, "origin": origin, "claimed_ns": time.time_ns()}
    insert = dialect_insert(conn.dialect.name, stream_origins).values(row)
    conn.execute(insert.on_conflict_do_nothing())
    held = conn.execute(select(stream_origins.c.origin).where(
        stream_origins.c.stream == stream)).scalar_one()
    if held != origin:
        raise ForeignStream(
            f"this database holds stream {stream!r} of another run ({held}), not this one's "
            f"({origin}): a matcher on a new data dir needs a new database, or its old data dir")


def _read_options(engine: Engine) -> dict[str, Any]:
    """Postgres: one consistent snapshot for multi-query reads; SQLite: a deferred BEGIN."""
    if engine.dialect.name == "postgresql":
        return {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    return {READ_ONLY: True}


def _check(batch: RecordBatch) -> None:
    """Reject a malformed batch before touching the database."""
    for rec in batch.records:
        if rec.stream != batch.stream:
            raise ValueError(
                f"record seq {rec.seq} is from stream {rec.stream!r}, "
                f"not the batch's {batch.stream!r}"
            )
        if rec.seq < 1:
            raise ValueError(f"record seq {rec.seq} on {batch.stream!r} is not positive")


def _why(exc: BaseException) -> str:
    """The driver's own message (SQLAlchemy's adds the statement and every parameter)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = f"{type(cause).__name__}: {cause}"[:1000]
    return text.replace("\x00", "\\x00")  # PostgreSQL text holds no NUL
