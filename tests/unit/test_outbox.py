"""A producer's outbox: batching by size and age, re-sending until acknowledged."""

from __future__ import annotations

from common.config import DbConfig
from common.outbox import Outbox
from common.records import PriceRecord, RecordBatch, decode_frame


def rec(seq: int) -> PriceRecord:
    return PriceRecord(stream="sim", seq=seq, ts_ns=seq, instrument_id="SPX", price=440_000,
                       kind="underlying")


def seqs(due: list[tuple[int, bytes]]) -> list[list[int]]:
    batches = [decode_frame(frame) for _, frame in due]
    assert all(isinstance(b, RecordBatch) for b in batches)
    return [[r.seq for r in b.records] for b in batches if isinstance(b, RecordBatch)]


def hand_over(box: Outbox, now: float) -> list[tuple[int, bytes]]:
    """What a writer takes: every batch due."""
    due = box.due(now)
    for top, _ in due:
        box.taken(top, now)
    return due


def test_batches_by_size_and_by_age() -> None:
    box = Outbox("sim", DbConfig(batch_max_rows=3, batch_max_ms=100, resend_after_s=5))
    for seq in range(1, 8):
        box.add(rec(seq), now=0.0)
    assert seqs(hand_over(box, now=0.0)) == [[1, 2, 3], [4, 5, 6]]
    assert box.due(now=0.05) == []
    assert seqs(hand_over(box, now=0.1)) == [[7]]


def test_unacknowledged_batches_go_out_again_until_acked() -> None:
    box = Outbox("sim", DbConfig(batch_max_rows=2, batch_max_ms=100, resend_after_s=5))
    for seq in range(1, 5):
        box.add(rec(seq), now=0.0)
    first, second = hand_over(box, now=0.0)
    box.ack(first[0])
    assert box.due(now=4.9) == []
    assert hand_over(box, now=5.0) == [second]  # the same bytes: encoded once
    assert [r.seq for r in box.pending()] == [3, 4]
    box.ack(4)
    assert box.pending() == [] and box.pending_records == 0
    assert box.due(now=100.0) == []


def test_with_no_writer_batches_wait_a_moment_then_go_first_in_order() -> None:
    box = Outbox("sim", DbConfig(batch_max_rows=2, batch_max_ms=100, resend_after_s=5))
    for seq in range(1, 5):
        box.add(rec(seq), now=0.0)
    assert seqs(box.due(now=0.0)) == [[1, 2], [3, 4]]
    box.refused(now=0.0)  # nobody took the first one
    box.add(rec(5), now=0.0)
    box.add(rec(6), now=0.0)
    assert box.due(now=0.001) == []  # not offered again on every call
    assert seqs(hand_over(box, now=0.3)) == [[1, 2], [3, 4], [5, 6]]
    assert [r.seq for r in box.pending()] == [1, 2, 3, 4, 5, 6]
    assert box.due(now=1.0) == []


def test_resends_come_oldest_first_and_stop_at_the_first_not_due() -> None:
    box = Outbox("sim", DbConfig(batch_max_rows=1, batch_max_ms=100, resend_after_s=5))
    for seq in (1, 2, 3):
        box.add(rec(seq), now=float(seq))
        hand_over(box, now=float(seq))
    assert seqs(hand_over(box, now=6.5)) == [[1]]
    assert seqs(hand_over(box, now=8.0)) == [[2], [3]]
    assert seqs(hand_over(box, now=11.5)) == [[1]]  # taken again at 6.5


def test_restore_sends_everything_that_may_be_missing() -> None:
    config = DbConfig(batch_max_rows=10, batch_max_ms=100, resend_after_s=5)
    box = Outbox("sim", config)
    box.add(rec(1), now=0.0)
    hand_over(box, now=1.0)
    box.add(rec(2), now=1.0)
    again = Outbox("sim", config)
    again.restore(box.pending(), now=2.0)
    assert seqs(again.due(now=2.0)) == [[1, 2]]
