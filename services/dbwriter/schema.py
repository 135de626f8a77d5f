"""The database schema (SQLAlchemy Core) and its versioned create step.

Every data table carries the producer's (stream, seq) under a unique constraint: that pair is
the idempotency key, so replays and concurrent writers can never duplicate a row. Money and
prices are BIGINT cents, times BIGINT nanoseconds (exact, and the same on SQLite and Postgres).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: dead_letters; 3: stream_origins
ORDER_STATUSES = ("new", "partially_filled", "filled", "cancelled", "rejected")
_SCHEMA_LOCK_KEY = 0x17C0DB  # advisory lock serialising create_schema across writers

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _json() -> TypeEngine[Any]:
    return JSON().with_variant(JSONB(), "postgresql")


def _origin() -> list[Column[object]]:
    """The idempotency key and record time every data table carries."""
    return [
        Column("stream", Text, nullable=False),
        Column("seq", BigInteger, nullable=False),
        Column("ts_ns", BigInteger, nullable=False),
    ]


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_ns", BigInteger, nullable=False),
)

stream_progress = Table(
    "stream_progress",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

teams = Table(
    "teams",
    metadata,
    Column("team_id", Text, primary_key=True),
    Column("team_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    *_origin(),
    UniqueConstraint("stream", "seq"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("team_id", Text, nullable=False, index=True),
    Column("instrument_id", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("order_type", Text, nullable=False),
    Column("price", BigInteger),
    Column("quantity", BigInteger, nullable=False),
    Column("filled_quantity", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("client_order_id", Text),
    Column("submitted_ns", BigInteger, nullable=False),
    *_origin(),
    UniqueConstraint("stream", "seq"),
    CheckConstraint(_in("side", ("buy", "sell")), name="side"),
    CheckConstraint(_in("status", ORDER_STATUSES), name="status"),
    CheckConstraint("quantity > 0 AND filled_quantity BETWEEN 0 AND quantity", name="qty"),
)

trades = Table(
    "trades",
    metadata,
    Column("trade_id", Text, primary_key=True),
    Column("instrument_id", Text, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("multiplier", BigInteger, nullable=False),
    Column("buyer", Text, nullable=False, index=True),
    Column("seller", Text, nullable=False, index=True),
    Column("buyer_fee", BigInteger, nullable=False),
    Column("seller_fee", BigInteger, nullable=False),
    Column("aggressor", Text, nullable=False),
    *_origin(),
    UniqueConstraint("stream", "seq"),
    Index(None, "ts_ns"),
    CheckConstraint("quantity > 0 AND multiplier > 0", name="qty"),
)

position_snapshots = Table(
    "position_snapshots",
    metadata,
    Column("snapshot_ns", BigInteger, nullable=False),
    Column("team_id", Text, nullable=False),
    Column("as_of_seq", BigInteger, nullable=False),
    Column("positions", _json(), nullable=False),
    Column("cash", BigInteger, nullable=False),
    Column("fees", BigInteger, nullable=False),
    Column("pnl", BigInteger, nullable=False),
    *_origin(),
    PrimaryKeyConstraint("snapshot_ns", "team_id"),
    UniqueConstraint("stream", "seq"),
    Index(None, "stream", "team_id", "as_of_seq"),
)

prices = Table(
    "prices",
    metadata,
    Column("instrument_id", Text, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    *_origin(),
    PrimaryKeyConstraint("stream", "seq"),
    Index(None, "instrument_id", "ts_ns"),
    CheckConstraint(_in("kind", ("underlying", "fair_value")), name="kind"),
)

events = Table(
    "events",
    metadata,
    Column("kind", Text, nullable=False),  # news | signal
    Column("name", Text, nullable=False),  # the headline, or the signal type
    Column("role", Text),  # a signal's audience; NULL = everyone
    Column("payload", _json(), nullable=False),
    *_origin(),
    PrimaryKeyConstraint("stream", "seq"),
    Index(None, "ts_ns"),
    CheckConstraint(_in("kind", ("news", "signal")), name="kind"),
)

# Records the database refused for good (a value out of range, a broken constraint): kept here
# verbatim, with why, so their batch can be acknowledged and the stream goes on.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("stream", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),  # 0: the record's own seq was unusable
    Column("buried_ns", BigInteger, nullable=False),
    Column("error", Text, nullable=False),
    Column("record", Text, nullable=False),  # msgspec JSON of the record
    PrimaryKeyConstraint("stream", "seq"),
)
# Which run of a producer a stream belongs to (the matcher's data dir names its own): its
# records are numbered from 1 again by a matcher with a new data dir, and its ids (TEAM_001,
# ORD_..., trades) start over too, so rows of a new game would be skipped as already stored.
stream_origins = Table(
    "stream_origins",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("origin", Text, nullable=False),
    Column("claimed_ns", BigInteger, nullable=False),
)
MIGRATIONS = {1: (dead_letters,), 2: (stream_origins,)}  # version -> tables its successor adds


class SchemaVersionError(RuntimeError):
    """The database was created by a schema this code does not know."""


def create_schema(engine: Engine) -> int:
    """Create the schema, or verify the existing one; safe to race from several writers."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
        schema_version.create(conn, checkfirst=True)
        found = conn.execute(select(func.max(schema_version.c.version))).scalar_one_or_none()
        _check_version(found)
        if found is None:
            metadata.create_all(conn)
            _stamp(conn)
            log.info("created database schema version %d", SCHEMA_VERSION)
        else:
            if found < SCHEMA_VERSION:
                _migrate(conn, found)
            _check_tables(conn)
    return SCHEMA_VERSION


def _stamp(conn: Connection) -> None:
    conn.execute(schema_version.insert().values(version=SCHEMA_VERSION, applied_ns=time.time_ns()))


def _migrate(conn: Connection, found: int) -> None:
    """Additive steps (new tables), inside create_schema's transaction and lock."""
    for version in range(found, SCHEMA_VERSION):
        for table in MIGRATIONS[version]:
            table.create(conn, checkfirst=True)
    _stamp(conn)
    log.info("migrated database schema from version %d to %d", found, SCHEMA_VERSION)


def _check_tables(conn: Connection) -> None:
    missing = set(metadata.tables) - set(inspect(conn).get_table_names())
    if missing:
        raise SchemaVersionError(
            f"database claims schema version {SCHEMA_VERSION} but lacks tables "
            f"{sorted(missing)}: recreate the database"
        )


def _check_version(found: int | None) -> None:
    if found is None or found == SCHEMA_VERSION or found in MIGRATIONS:
        return
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database schema version {found} is newer than this code's version "
            f"{SCHEMA_VERSION}: upgrade the dbwriter before pointing it at this database"
        )
    raise SchemaVersionError(
        f"database schema version {found} is older than {SCHEMA_VERSION} and no migration "
        "exists: recreate the database"
    )
