"""The DB writer's store against a real SQLite file and a real PostgreSQL server.

PostgreSQL tests run in a fresh schema per test (dropped afterwards) and fail, never skip, when
the server is unreachable: a missing database must not turn the suite green.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from sqlalchemy import Table, func, insert, select
from sqlalchemy.exc import IntegrityError

from common.records import (
    AnyRecord,
    NewsRecord,
    OrderRecord,
    OrderStatus,
    PositionSnapshotRecord,
    PriceRecord,
    RecordBatch,
    SignalRecord,
    TeamRecord,
    TradeRecord,
)
from services.dbwriter import schema
from services.dbwriter.positions import TeamPositions
from services.dbwriter.schema import SchemaVersionError
from services.dbwriter.store import PERMANENT, ForeignStream, Store

STREAM = "matcher"
CALL = "SPX_4500_CALL"

OpenStore = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/itg.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def open_store(url: str) -> Iterator[OpenStore]:
    """Each call is an independent writer (own engine and pool), closed after the test."""
    stores: list[Store] = []

    def make() -> Store:
        stores.append(Store(url))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def trade(seq: int, **changes: Any) -> TradeRecord:
    base = TradeRecord(
        stream=STREAM,
        seq=seq,
        ts_ns=seq,
        trade_id=f"T{seq}",
        instrument_id=CALL,
        price=1250,
        quantity=1,
        buyer="A",
        seller="B",
        buyer_fee=-1,
        seller_fee=2,
        aggressor="buy",
        multiplier=100,
    )
    return msgspec.structs.replace(base, **changes)


def order(seq: int, order_id: str, status: OrderStatus, filled: int) -> OrderRecord:
    return OrderRecord(
        stream=STREAM,
        seq=seq,
        ts_ns=seq,
        order_id=order_id,
        team_id="A",
        instrument_id=CALL,
        side="buy",
        order_type="limit",
        price=1250,
        quantity=10,
        filled_quantity=filled,
        status=status,
        client_order_id="c1",
        submitted_ns=1,
    )


def snapshot(
    seq: int, team: str, as_of: int, positions: dict[str, int], cash: int, fees: int
) -> PositionSnapshotRecord:
    return PositionSnapshotRecord(
        stream=STREAM,
        seq=seq,
        ts_ns=seq,
        snapshot_ns=1_000 + seq,
        as_of_seq=as_of,
        team_id=team,
        positions=positions,
        cash=cash,
        fees=fees,
        pnl=0,
    )


def team(seq: int, team_id: str) -> TeamRecord:
    return TeamRecord(
        stream=STREAM, seq=seq, ts_ns=seq, team_id=team_id, team_name=team_id, role="market_maker"
    )


def mixed(first: int) -> list[AnyRecord]:
    """One record of every kind, seqs first..first+6."""
    s = first
    return [
        team(s, f"TEAM_{s}"),
        order(s + 1, f"O{s}", "new", 0),
        trade(s + 2),
        snapshot(s + 3, "A", s + 2, {CALL: 1}, -125_001, -1),
        PriceRecord(
            stream=STREAM, seq=s + 4, ts_ns=s, instrument_id="SPX", price=440_000, kind="underlying"
        ),
        NewsRecord(stream=STREAM, seq=s + 5, ts_ns=s, headline="Fed holds", details={"dir": 1}),
        SignalRecord(
            stream=STREAM,
            seq=s + 6,
            ts_ns=s,
            signal_type="vol",
            role="hedge_fund",
            payload={"forecast": 0.5},
        ),
    ]


def batch(records: list[AnyRecord]) -> RecordBatch:
    return RecordBatch(stream=STREAM, records=records)


def count(store: Store, table: Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def seqs(store: Store, table: Table) -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(table.c.seq).order_by(table.c.seq)).scalars())


DATA_TABLES = (
    schema.teams,
    schema.orders,
    schema.trades,
    schema.position_snapshots,
    schema.prices,
    schema.events,
)


def test_same_batch_twice_stores_each_row_once(open_store: OpenStore) -> None:
    store = open_store()
    records = mixed(1)
    assert store.write(batch(records)) == 7
    assert store.write(batch(records)) == 7
    assert [count(store, t) for t in DATA_TABLES] == [1, 1, 1, 1, 1, 2]
    assert store.last_seq(STREAM) == 7
    assert store.last_seq("nobody") == 0


def test_an_older_batch_never_lowers_last_seq(open_store: OpenStore) -> None:
    store = open_store()
    assert store.write(batch(mixed(8))) == 14
    assert store.write(batch(mixed(1))) == 14
    assert count(store, schema.trades) == 2


def overlapping_batches(writer: int, rounds: int, size: int) -> Iterator[list[int]]:
    """Per round: one batch both writers send at once, then one that overlaps the other's."""
    for k in range(rounds):
        lo = k * size + 1
        yield list(range(lo, lo + size))
        half = size // 2
        yield list(range(lo + writer * half, lo + size + half + writer * half))


def test_overlapping_concurrent_writers_lose_and_duplicate_nothing(open_store: OpenStore) -> None:
    rounds, size = 80, 200
    writers = [open_store(), open_store()]
    step = threading.Barrier(len(writers), timeout=60)
    errors: list[BaseException] = []

    def run(store: Store, writer: int) -> None:
        try:
            for span in overlapping_batches(writer, rounds, size):
                step.wait()  # in lockstep, so the same rows really do collide
                store.write(batch([trade(seq) for seq in span]))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
            step.abort()

    threads = [threading.Thread(target=run, args=(st, w)) for w, st in enumerate(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert errors == []
    top = rounds * size + size  # the last overlapping batch reaches one half-chunk further
    assert seqs(writers[0], schema.trades) == list(range(1, top + 1))
    assert writers[1].last_seq(STREAM) == top


@pytest.mark.parametrize("bad", ["check_violation", "duplicate_trade_id"])
def test_a_bad_record_rolls_back_the_whole_batch(open_store: OpenStore, bad: str) -> None:
    store = open_store()
    store.write(batch([trade(1), trade(2)]))
    wrong = trade(12, quantity=0) if bad == "check_violation" else trade(12, trade_id="T1")
    doomed = [*mixed(5), wrong]
    with pytest.raises(IntegrityError):
        store.write(batch(doomed))
    assert [count(store, t) for t in DATA_TABLES] == [0, 0, 2, 0, 0, 0]
    assert store.last_seq(STREAM) == 2
    assert store.write(batch([*mixed(5), trade(12)])) == 12  # the same connections still work
    assert [count(store, t) for t in DATA_TABLES] == [1, 1, 4, 1, 1, 2]


def test_records_refused_for_good_go_to_dead_letters_and_the_rest_is_stored(
    open_store: OpenStore,
) -> None:
    store = open_store()
    bad = {4: trade(4, quantity=0), 9: trade(9, price=2**63), 13: trade(13, buyer="A\x00B")}
    records = [bad.get(s) or trade(s) for s in range(1, 14)]
    try:
        store.write(batch(records))
    except PERMANENT as exc:
        refused = exc
    else:
        raise AssertionError("the batch was stored with its bad records")
    postgres = store.engine.dialect.name == "postgresql"  # SQLite stores a NUL in text
    buried = {4, 9, 13} if postgres else {4, 9}
    assert store.salvage(batch(records), refused) == len(buried)
    assert seqs(store, schema.trades) == sorted(set(range(1, 14)) - buried)
    assert store.last_seq(STREAM) == 13
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.dead_letters).order_by("seq")).all()
    assert [(r.stream, r.seq) for r in rows] == [(STREAM, s) for s in sorted(buried)]
    for row in rows:
        assert msgspec.json.decode(row.record, type=TradeRecord) == bad[row.seq]
        assert "\x00" not in row.error
    assert "IntegrityError" in rows[0].error or "CheckViolation" in rows[0].error
    assert rows[1].error.startswith("OverflowError")
    store.salvage(batch(records), refused)  # the producer re-sends: nothing twice
    assert count(store, schema.dead_letters) == len(buried)
    assert count(store, schema.trades) == 13 - len(buried)


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_database_gains_the_tables_it_lacks(open_store: OpenStore, url: str,
                                                      version: int) -> None:
    store = open_store()
    store.write(batch([trade(1)]))
    with store.engine.begin() as conn:  # as that version left it
        for since in range(version, schema.SCHEMA_VERSION):
            for table in schema.MIGRATIONS[since]:
                table.drop(conn)
        conn.execute(schema.schema_version.delete())
        conn.execute(insert(schema.schema_version).values(version=version, applied_ns=0))
    upgraded = open_store()
    assert count(upgraded, schema.dead_letters) == count(upgraded, schema.stream_origins) == 0
    with upgraded.engine.connect() as conn:
        versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
    assert sorted(versions) == [version, schema.SCHEMA_VERSION] == [version, 3]
    assert upgraded.last_seq(STREAM) == 1 and count(upgraded, schema.trades) == 1
    open_store()  # and a later start finds the new version as it is


def test_a_stream_of_another_origin_is_refused_whole(open_store: OpenStore) -> None:
    """A matcher on a new data dir numbers records, teams and orders from 1 again: against
    the old game's database its rows would be skipped as stored. The database refuses them."""
    first, second = open_store(), open_store()
    assert first.write(RecordBatch(stream=STREAM, records=[team(1, "TEAM_001"), trade(2)],
                                   origin="game-a")) == 2
    assert first.write(RecordBatch(stream=STREAM, records=[trade(3)], origin="game-a")) == 3
    newcomer = RecordBatch(stream=STREAM, records=[team(1, "TEAM_001"), trade(2, price=1)],
                           origin="game-b")
    for store in (first, second):  # the writer that saw game-a, and one that did not
        with pytest.raises(ForeignStream, match="game-a"):
            store.write(newcomer)
    assert seqs(second, schema.trades) == [2, 3] and second.last_seq(STREAM) == 3
    assert second.write(RecordBatch(stream=STREAM, records=[trade(4)], origin="game-a")) == 4
    assert second.write(batch([trade(5)])) == 5  # no origin (older producers): not checked
    with second.engine.connect() as conn:
        held = conn.execute(select(schema.stream_origins.c.origin)).scalars().all()
    assert held == ["game-a"]


def test_a_record_from_another_stream_is_refused(open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(ValueError, match="stream"):
        store.write(RecordBatch(stream="simulator", records=[trade(1)]))
    assert store.last_seq("simulator") == 0


def rebuild_scenario() -> list[list[AnyRecord]]:
    """A and B trade, get snapshotted at different seqs, trade on; D joins with no snapshot.

    Timestamps run against seq for trade 7 (ts before every snapshot) to pin the seq rule.
    """
    spy = "SPY"
    return [
        [
            trade(10, seller="A", buyer="B", quantity=6, price=1200, buyer_fee=12, seller_fee=-6),
            trade(
                11,
                instrument_id=spy,
                buyer="D",
                seller="A",
                quantity=1,
                price=44_100,
                multiplier=1,
                buyer_fee=-1,
                seller_fee=1,
            ),
        ],
        [
            team(1, "A"),
            team(2, "B"),
            team(3, "C"),
            trade(4, quantity=10, price=1250, buyer_fee=-10, seller_fee=20),
            snapshot(5, "A", 4, {CALL: 10}, -1_250_010, -10),
            snapshot(6, "B", 4, {CALL: -10}, 1_250_020, 20),
        ],
        [
            trade(
                7,
                buyer="B",
                seller="A",
                quantity=4,
                price=1300,
                buyer_fee=-4,
                seller_fee=8,
                ts_ns=0,
            ),
            trade(
                8,
                instrument_id=spy,
                quantity=2,
                price=44_000,
                multiplier=1,
                buyer_fee=-2,
                seller_fee=1,
            ),
            snapshot(9, "A", 8, {CALL: 6, spy: 2}, -818_004, -4),
        ],
    ]


def test_positions_rebuild_from_latest_snapshot_plus_later_trades(open_store: OpenStore) -> None:
    store = open_store()
    for records in rebuild_scenario():
        store.write(batch(records))
    a_cash = -818_004 + 6 * 1200 * 100 - 6 + 44_100 + 1
    b_cash = 1_250_020 - 4 * 1300 * 100 - 4 + 2 * 44_000 + 1 - 6 * 1200 * 100 + 12
    assert store.positions_from_db(STREAM) == {
        "A": TeamPositions("A", {"SPY": 1}, a_cash, -4 - 6 + 1, snapshot_seq=8, last_seq=11),
        "B": TeamPositions("B", {"SPY": -2}, b_cash, 20 - 4 + 1 + 12, snapshot_seq=4, last_seq=10),
        "C": TeamPositions("C"),
        "D": TeamPositions("D", {"SPY": 1}, -44_100 - 1, -1, snapshot_seq=0, last_seq=11),
    }
    assert (a_cash, b_cash) == (-53_909, 98_029)


def order_row(store: Store, order_id: str) -> tuple[str, int, int]:
    orders = schema.orders
    query = select(orders.c.status, orders.c.filled_quantity, orders.c.seq)
    with store.engine.connect() as conn:
        row = conn.execute(query.where(orders.c.order_id == order_id)).one()
    return row.status, row.filled_quantity, row.seq


def test_order_upsert_only_moves_forward(open_store: OpenStore) -> None:
    store = open_store()
    store.write(batch([order(3, "O1", "filled", 10)]))
    store.write(batch([order(1, "O1", "new", 0), order(2, "O1", "partially_filled", 4)]))
    assert order_row(store, "O1") == ("filled", 10, 3)
    store.write(batch([order(4, "O2", "partially_filled", 4), order(5, "O2", "new", 0)]))
    assert order_row(store, "O2") == ("partially_filled", 4, 4)
    store.write(batch([order(6, "O2", "partially_filled", 7)]))
    assert order_row(store, "O2") == ("partially_filled", 7, 6)
    store.write(batch([order(7, "O2", "cancelled", 7), order(8, "O1", "new", 0)]))
    assert order_row(store, "O2") == ("cancelled", 7, 7)
    assert order_row(store, "O1") == ("filled", 10, 3)
    assert count(store, schema.orders) == 2


def test_schema_create_is_idempotent_and_refuses_newer_versions(
    open_store: OpenStore, url: str
) -> None:
    store = open_store()
    open_store()  # a second writer verifies, does not recreate
    with store.engine.begin() as conn:
        conn.execute(insert(schema.schema_version).values(version=99, applied_ns=0))
    with pytest.raises(SchemaVersionError, match="newer"):
        Store(url)
