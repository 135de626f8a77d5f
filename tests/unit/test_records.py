"""Persistence records: codec round trip, tag hygiene, and the pure position fold."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from common import messages, records
from services.dbwriter.positions import TeamPositions, TradeFill, apply_trades, from_snapshot
from services.dbwriter.rows import group_rows


def all_tags(base: type[msgspec.Struct]) -> list[str]:
    found, todo = [], list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        tag = cls.__struct_config__.tag
        if isinstance(tag, str):
            found.append(tag)
    return found


def sample_batch() -> records.RecordBatch:
    common: dict[str, Any] = {"stream": "matcher", "ts_ns": 5}
    return records.RecordBatch(
        stream="matcher",
        records=[
            records.TeamRecord(seq=1, team_id="T1", team_name="a", role="retail", **common),
            records.OrderRecord(
                seq=2,
                order_id="O1",
                team_id="T1",
                instrument_id="SPX",
                side="sell",
                order_type="market",
                price=None,
                quantity=3,
                filled_quantity=3,
                status="filled",
                submitted_ns=4,
                **common,
            ),
            records.PositionSnapshotRecord(
                seq=3,
                snapshot_ns=9,
                as_of_seq=2,
                team_id="T1",
                positions={"SPX": -3},
                cash=1,
                fees=-2,
                pnl=3,
                **common,
            ),
            records.SignalRecord(seq=4, signal_type="vol", payload={"x": [1, 2]}, **common),
        ],
    )


def test_batch_round_trips_through_msgpack() -> None:
    batch = sample_batch()
    assert records.decode_frame(records.encode_frame(batch)) == batch
    ack = records.BatchAck(stream="matcher", first_seq=1, last_seq=4)
    assert records.decode_frame(records.encode_frame(ack)) == ack


def test_record_tags_are_unique_and_never_collide_with_bus_messages() -> None:
    ours = [*all_tags(records.Record), "rec_batch", "rec_batch_ack"]
    assert len(ours) == len(set(ours)) == 9
    assert not set(ours) & set(all_tags(messages.Message))
    assert all(tag.startswith("rec_") for tag in ours)


def test_bad_literal_is_refused_on_decode() -> None:
    raw = msgspec.msgpack.encode(
        {
            "type": "rec_price",
            "stream": "s",
            "seq": 1,
            "ts_ns": 1,
            "instrument_id": "SPX",
            "price": 1,
            "kind": "guess",
        }
    )
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(raw, type=records.AnyRecord)


def test_rows_reduce_one_order_to_its_furthest_state() -> None:
    batch = sample_batch()
    late_new = msgspec.structs.replace(batch.records[1], seq=9, status="new", filled_quantity=0)
    groups = group_rows([*batch.records, late_new])
    (orders,) = [g for g in groups if g.table.name == "orders"]
    assert [(row[8], row[-2]) for row in orders.rows] == [("filled", 2)]
    assert [g.table.name for g in groups] == [
        "teams",
        "orders",
        "position_snapshots",
        "events",
    ]


def test_fold_skips_trades_a_snapshot_already_holds() -> None:
    books = {"A": from_snapshot("A", 5, {"X": 2, "Y": 0}, cash=-200, fees=0)}
    trades = [
        TradeFill(5, "X", 100, 2, 1, "A", "B", -1, 1),  # in A's snapshot, not in B's (none)
        TradeFill(6, "X", 100, 2, 1, "B", "A", -1, 1),
    ]
    assert apply_trades(books, trades) == {
        "A": TeamPositions("A", {}, -200 + 200 + 1, 1, snapshot_seq=5, last_seq=6),
        "B": TeamPositions("B", {}, 200 + 1 - 200 - 1, 0, snapshot_seq=0, last_seq=6),
    }
