"""Records to row tuples, grouped per table in one fixed order.

Rows are plain tuples in the table's column order, so the same rows feed SQLite's executemany
and PostgreSQL's binary COPY. JSON columns are pre-encoded text. Tables are always written in
the same order, so concurrent writers take their locks in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from types import MappingProxyType
from typing import Any, cast

import msgspec
from sqlalchemy import Table

from common.records import (
    AnyRecord,
    NewsRecord,
    OrderRecord,
    PositionSnapshotRecord,
    PriceRecord,
    Record,
    SignalRecord,
    TeamRecord,
    TradeRecord,
)
from services.dbwriter import schema

Row = tuple[Any, ...]

# How far an order has got; a lower-ranked state never overwrites a higher one.
ORDER_STATUS_RANK: Mapping[str, int] = MappingProxyType(
    {"new": 0, "partially_filled": 1, "filled": 2, "cancelled": 2, "rejected": 2}
)


@dataclass(frozen=True, slots=True)
class TableRows:
    table: Table
    rows: list[Row]


def _columns(table: Table) -> Callable[[Any], Row]:
    """Rows whose columns are named exactly like the record's fields."""
    return cast(Callable[[Any], Row], attrgetter(*table.c.keys()))


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _snapshot(table: Table) -> Callable[[Any], Row]:
    base = _columns(table)
    at = list(table.c.keys()).index("positions")

    def to_row(rec: PositionSnapshotRecord) -> Row:
        row = list(base(rec))
        row[at] = _json(rec.positions)
        return tuple(row)

    return to_row


def _news(rec: NewsRecord) -> Row:
    return ("news", rec.headline, None, _json(rec.details), rec.stream, rec.seq, rec.ts_ns)


def _signal(rec: SignalRecord) -> Row:
    payload = _json(rec.payload)
    return ("signal", rec.signal_type, rec.role, payload, rec.stream, rec.seq, rec.ts_ns)


@dataclass(frozen=True, slots=True)
class _Target:
    table: Table
    to_row: Callable[[Any], Row]


def _targets() -> Mapping[type[Record], _Target]:
    return MappingProxyType(
        {
            TeamRecord: _Target(schema.teams, _columns(schema.teams)),
            OrderRecord: _Target(schema.orders, _columns(schema.orders)),
            TradeRecord: _Target(schema.trades, _columns(schema.trades)),
            PositionSnapshotRecord: _Target(
                schema.position_snapshots, _snapshot(schema.position_snapshots)
            ),
            PriceRecord: _Target(schema.prices, _columns(schema.prices)),
            NewsRecord: _Target(schema.events, _news),
            SignalRecord: _Target(schema.events, _signal),
        }
    )


TARGETS = _targets()
TABLE_ORDER: Sequence[Table] = (
    schema.teams,
    schema.orders,
    schema.trades,
    schema.position_snapshots,
    schema.prices,
    schema.events,
)


def group_rows(records: Iterable[AnyRecord]) -> list[TableRows]:
    """Rows per table in TABLE_ORDER; orders reduced to their most advanced state."""
    by_table: dict[str, list[Row]] = {}
    orders: dict[str, OrderRecord] = {}
    for rec in records:
        if isinstance(rec, OrderRecord):
            _keep_most_advanced(orders, rec)
            continue
        target = TARGETS[type(rec)]
        by_table.setdefault(target.table.name, []).append(target.to_row(rec))
    if orders:
        to_row = TARGETS[OrderRecord].to_row
        by_table[schema.orders.name] = [to_row(o) for o in orders.values()]
    return [TableRows(t, by_table[t.name]) for t in TABLE_ORDER if t.name in by_table]


def order_progress(rec: OrderRecord) -> tuple[int, int]:
    return ORDER_STATUS_RANK.get(rec.status, -1), rec.filled_quantity


def _keep_most_advanced(orders: dict[str, OrderRecord], rec: OrderRecord) -> None:
    """Postgres cannot upsert one key twice in one statement, and only progress counts."""
    old = orders.get(rec.order_id)
    if old is None or order_progress(rec) > order_progress(old):
        orders[rec.order_id] = rec
