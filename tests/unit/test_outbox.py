"""A producer's outbox: batching by size and age, re-sending until acknowledged."""

from __future__ import annotations

from common.config import DbConfig
from common.outbox import Outbox
from common.records import PriceRecord


def rec(seq: int) -> PriceRecord:
    return PriceRecord(stream="sim", seq=seq, ts_ns=seq, instrument_id="SPX", price=440_000,
                       kind="underlying")


def test_batches_by_size_and_by_age() -> None:
    box = Outbox("sim", DbConfig(batch_max_rows=3, batch_max_ms=100, resend_after_s=5))
    for seq in range(1, 8):
        box.add(rec(seq), now=0.0)
    full = box.due(now=0.0)
    assert [[r.seq for r in b.records] for b in full] == [[1, 2, 3], [4, 5, 6]]
    assert box.due(now=0.05) == []
    (late,) = box.due(now=0.1)
    assert [r.seq for r in late.records] == [7]


def test_unacknowledged_batches_go_out_again_until_acked() -> None:
    box = Outbox("sim", DbConfig(batch_max_rows=2, batch_max_ms=100, resend_after_s=5))
    for seq in range(1, 5):
        box.add(rec(seq), now=0.0)
    first, second = box.due(now=0.0)
    box.ack(first.records[-1].seq)
    assert box.due(now=4.9) == []
    assert box.due(now=5.0) == [second]
    assert [r.seq for r in box.pending()] == [3, 4]
    box.ack(4)
    assert box.pending() == [] and box.pending_records == 0
    assert box.due(now=100.0) == []


def test_restore_sends_everything_that_may_be_missing() -> None:
    config = DbConfig(batch_max_rows=10, batch_max_ms=100, resend_after_s=5)
    box = Outbox("sim", config)
    box.add(rec(1), now=0.0)
    box.due(now=1.0)
    box.add(rec(2), now=1.0)
    again = Outbox("sim", config)
    again.restore(box.pending(), now=2.0)
    (batch,) = again.due(now=2.0)
    assert [r.seq for r in batch.records] == [1, 2]
