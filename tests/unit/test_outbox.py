"""A producer's outbox: batching by size and age, re-sending until acknowledged."""

from __future__ import annotations

from pathlib import Path

import zmq

from common.config import DbConfig
from common.outbox import IN_FLIGHT_MAX, Outbox, RecordLink
from common.records import PriceRecord, RecordBatch, decode_frame
from common.service import Service
from tests.conftest import make_config


def rec(seq: int) -> PriceRecord:
    return PriceRecord(stream="sim", seq=seq, ts_ns=seq, instrument_id="SPX", price=440_000,
                       kind="underlying")


def seqs(due: list[tuple[int, bytes]]) -> list[list[int]]:
    batches = [decode_frame(frame) for _, frame in due]
    assert all(isinstance(b, RecordBatch) for b in batches)
    return [[r.seq for r in b.records] for b in batches if isinstance(b, RecordBatch)]


def pending_seqs(box: Outbox) -> list[int]:
    """Seqs of every record the box would put in a snapshot, in order."""
    frames, loose = box.pending()
    return [s for batch in seqs([(0, f) for f in frames]) for s in batch] + [r.seq for r in loose]


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
    box.ack(1, first[0])
    assert box.due(now=4.9) == []
    assert hand_over(box, now=5.0) == [second]  # the same bytes: encoded once
    assert pending_seqs(box) == [3, 4]
    box.ack(3, 4)
    box.ack(3, 4)  # again, or for a batch it never had: nothing changes
    box.ack(9, 12)
    assert pending_seqs(box) == [] and box.pending_records == 0
    assert box.due(now=100.0) == []


def test_the_first_pending_record_is_the_lowest_not_acknowledged() -> None:
    """Writers acknowledge out of order: what is stored for sure ends before the lowest
    record still waiting (taken, untaken or in the open batch)."""
    box = Outbox("sim", DbConfig(batch_max_rows=2, batch_max_ms=100, resend_after_s=5))
    assert box.first_pending() is None
    for seq in range(1, 8):
        box.add(rec(seq), now=0.0)
    assert box.first_pending() == 1
    first, second, third = hand_over(box, now=0.0)
    box.ack(3, second[0])
    assert box.first_pending() == 1  # a later batch stored first: 1..2 may not be
    box.ack(1, first[0])
    assert box.first_pending() == 5
    box.ack(5, third[0])
    assert box.first_pending() == 7  # the open batch
    box.close_open()
    assert box.first_pending() == 7  # closed, not taken yet
    hand_over(box, now=1.0)
    box.ack(7, 7)
    assert box.first_pending() is None


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
    assert pending_seqs(box) == [1, 2, 3, 4, 5, 6]
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
    again.restore(*box.pending(), now=2.0)
    assert seqs(again.due(now=2.0)) == [[1], [2]]  # the closed batch as it was cut


def test_a_long_backlog_goes_out_as_writers_acknowledge_it_oldest_first() -> None:
    box = Outbox("sim", DbConfig(batch_max_rows=1, batch_max_ms=100, resend_after_s=5))
    total = 2 * IN_FLIGHT_MAX + 10
    for seq in range(1, total + 1):
        box.add(rec(seq), now=0.0)
    first = seqs(hand_over(box, now=0.0))
    assert len(first) == IN_FLIGHT_MAX and box.due(now=1.0) == []  # nothing more in flight
    for [seq] in first[:10]:
        box.ack(seq, seq)
    assert seqs(hand_over(box, now=1.0)) == [[IN_FLIGHT_MAX + s] for s in range(1, 11)]
    # unacknowledged ones come back once due, without more new ones going out meanwhile
    again = seqs(hand_over(box, now=6.0))
    assert again == [[s] for s in range(11, IN_FLIGHT_MAX + 11)]
    stored = [s for batch in first[:10] for s in batch] + [s for [s] in again]
    for seq in stored[10:]:
        box.ack(seq, seq)
    rest = seqs(hand_over(box, now=6.0))
    assert [s for [s] in rest] == list(range(IN_FLIGHT_MAX + 11, 2 * IN_FLIGHT_MAX + 11))


def test_a_snapshot_keeps_taken_and_untaken_batches_and_open_records_in_seq_order() -> None:
    config = DbConfig(batch_max_rows=2, batch_max_ms=100, resend_after_s=5)
    box = Outbox("sim", config)
    for seq in range(1, 7):
        box.add(rec(seq), now=0.0)
    second = box.due(now=0.0)[1]
    box.taken(second[0], now=0.0)  # [3, 4] taken, [1, 2] and [5, 6] not
    box.add(rec(7), now=0.0)
    assert pending_seqs(box) == [1, 2, 3, 4, 5, 6, 7]
    again = Outbox("sim", config)
    again.restore(*box.pending(), now=2.0)
    assert seqs(again.due(now=2.0)) == [[1, 2], [3, 4], [5, 6], [7]]
    assert again.pending_records == 7


def test_an_ack_for_a_batch_cut_before_a_restart_clears_nothing_else() -> None:
    """Before: [1, 2] and [3, 4]; a writer stores [3, 4], its ack arrives after a restart
    that re-cut the loose records [1..4] as one batch: 1 and 2 must still go out."""
    config = DbConfig(batch_max_rows=4, batch_max_ms=100, resend_after_s=5)
    again = Outbox("sim", config)
    again.restore([], [rec(s) for s in (1, 2, 3, 4)], now=1.0)
    assert seqs(hand_over(again, now=1.0)) == [[1, 2, 3, 4]]
    again.ack(3, 4)  # the stale ack
    assert again.pending_records == 4
    assert seqs(hand_over(again, now=7.0)) == [[1, 2, 3, 4]]  # resent, stored idempotently
    again.ack(1, 4)
    assert again.pending_records == 0 and pending_seqs(again) == []


def test_restored_batches_keep_their_cut() -> None:
    config = DbConfig(batch_max_rows=2, batch_max_ms=100, resend_after_s=5)
    box = Outbox("sim", config)
    for seq in range(1, 6):
        box.add(rec(seq), now=0.0)
    hand_over(box, now=0.0)  # [1, 2] and [3, 4] closed, 5 open
    again = Outbox("sim", config)
    again.restore(*box.pending(), now=1.0)
    assert seqs(hand_over(again, now=1.0)) == [[1, 2], [3, 4]]
    again.ack(3, 4)
    assert pending_seqs(again) == [1, 2, 5] and again.pending_records == 3


def test_closing_a_long_backlog_keeps_every_record_once_in_order() -> None:
    box = Outbox("sim", DbConfig(batch_max_rows=7, batch_max_ms=100, resend_after_s=5))
    for seq in range(1, 1001):
        box.add(rec(seq), now=0.0)
    box.due(now=0.0)  # full batches close, the last 1000 % 7 records stay open
    frames, loose = box.pending()
    assert len(frames) == 1000 // 7 and [r.seq for r in loose] == list(range(995, 1001))
    assert pending_seqs(box) == list(range(1, 1001))


def test_a_restarted_producer_numbers_past_its_previous_run(tmp_path: Path) -> None:
    """Writers keep the first row stored for a (stream, seq): a restarted producer that
    numbered from 1 again had its new records silently dropped, and acknowledged."""
    config = make_config(tmp_path / "data")
    runs = []
    for _ in range(2):
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            link = RecordLink(Service(config, ctx), ctx, "events")
            runs.append([link.next_seq() for _ in range(10_000)])
        finally:
            ctx.destroy(linger=0)
    first, second = runs
    assert second[0] > first[-1]
    assert second == list(range(second[0], second[0] + 10_000))  # gap-free within a run
