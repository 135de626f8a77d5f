"""A producer's persistence records on their way to the DB writers.

Records are batched (up to `batch_max_rows`, or `batch_max_ms` after the first) and kept until
a writer acknowledges the batch; an unacknowledged batch is sent again after `resend_after_s`,
to whichever writer takes it. Writers insert idempotently on (stream, seq), so sending a batch
twice never stores a row twice. The DB is never on the trading path: records only wait here.
"""

from __future__ import annotations

import logging
import time
from itertools import islice

import zmq

from common.config import DbConfig
from common.messages import DecodeError
from common.records import AnyRecord, BatchAck, RecordBatch, decode_frame, encode_frame
from common.service import Context, Service
from common.transport import PERSIST_CHANNELS, recv_frames, send_frame

log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)


_HOLD_S = 0.005  # no writer took a batch: offer them again after this, not on every call
# Batches handed to writers and not acknowledged yet. Bounded: after a DB outage the backlog
# goes out as fast as writers store it, instead of every batch at once (re-sent every
# resend_after_s while it still sat in a writer's queue, the duplicates outgrew the backlog).
IN_FLIGHT_MAX = 64
FLUSH_S = 3.0  # at a clean stop: how long a producer waits for its records to be stored


class Outbox:
    """Records, then batches, from `add` to a writer's acknowledgement.

    Each batch is encoded once, when it closes. Batches no writer has taken yet go first, in
    seq order; taken ones wait in the order they were last taken, so finding those due for a
    re-send stops at the first that is not (the DB may lag by thousands of batches).

    A closed batch is kept only as its frame (bytes) and its record count: a backlog of
    millions of records during a DB outage is then invisible to the garbage collector. Kept
    as record objects, every full collection walked them all, and the matcher ran 25% slower
    with 1.5 million waiting."""

    def __init__(self, stream: str, config: DbConfig, origin: str = "") -> None:
        self.stream = stream
        self.origin = origin
        self._max_rows = config.batch_max_rows
        self._max_wait = config.batch_max_ms / 1000
        self._resend_after = config.resend_after_s
        self._warn_at = config.max_pending_records
        self._open: list[AnyRecord] = []
        self._opened_at = 0.0
        self._unsent: dict[int, tuple[int, bytes]] = {}  # top seq -> (records, frame)
        self._taken: dict[int, tuple[float, int, bytes]] = {}  # top -> (taken at, records, frame)
        self._hold_until = float("-inf")
        self.pending_records = 0

    def add(self, record: AnyRecord, now: float) -> None:
        if not self._open:
            self._opened_at = now
        self._open.append(record)
        self.pending_records += 1
        if self.pending_records == self._warn_at:
            log.warning("%s: %d records wait for the DB writers", self.stream, self._warn_at)

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """(top seq, frame) of the batches to hand to a writer now: (full or old enough) new
        ones while fewer than IN_FLIGHT_MAX are in flight, then taken ones left unacknowledged
        for `resend_after_s`, oldest first."""
        if self._open:
            self._close_batches(now)
        if now < self._hold_until:
            return []
        room = max(0, IN_FLIGHT_MAX - len(self._taken))
        out = [(top, frame) for top, (_, frame) in islice(self._unsent.items(), room)]
        for top, (taken, _, frame) in self._taken.items():  # at most IN_FLIGHT_MAX of them
            if now - taken < self._resend_after:
                break
            out.append((top, frame))
        return out

    def close_open(self) -> None:
        """Close the open batch now, whatever its age (a stop will not wait for it)."""
        if self._open:
            self._close_batches(float("inf"))

    def first_pending(self) -> int | None:
        """The lowest seq not acknowledged as stored yet; None when every record added is."""
        firsts = [top - count + 1 for top, (count, _) in islice(self._unsent.items(), 1)]
        firsts += [top - count + 1 for top, (_, count, _) in self._taken.items()]
        if self._open:
            firsts.append(self._open[0].seq)
        return min(firsts, default=None)

    def no_writer(self, now: float) -> bool:
        """No writer took the last batch offered, and none holds one: none is connected."""
        return now < self._hold_until and not self._taken

    def _close_batches(self, now: float) -> None:
        """Full batches close; so does the rest once the oldest has waited `batch_max_ms`."""
        records, rows = self._open, self._max_rows
        end = len(records) if now - self._opened_at >= self._max_wait else (
            len(records) - len(records) % rows)
        for start in range(0, end, rows):  # slices of one list: linear in a long backlog
            self._close(records[start : start + rows])
        self._open = records[end:]

    def _close(self, records: list[AnyRecord]) -> None:
        frame = encode_frame(RecordBatch(stream=self.stream, records=records,
                                         origin=self.origin))
        self._unsent[records[-1].seq] = (len(records), frame)

    def taken(self, top: int, now: float) -> None:
        """A writer took the batch ending at `top`: it goes out again if no ack comes."""
        unsent = self._unsent.pop(top, None)
        count, frame = unsent if unsent is not None else self._taken.pop(top)[1:]
        self._taken[top] = (now, count, frame)

    def refused(self, now: float) -> None:
        """No writer could take a batch (none connected, or all full): hold for a moment."""
        self._hold_until = now + _HOLD_S

    def ack(self, first_seq: int, last_seq: int) -> None:
        """The batch first_seq..last_seq is stored. Batches are gap-free seq ranges, so a
        batch's count names its first seq; an ack for another range (cut before a restart)
        clears nothing, and that batch simply goes out again."""
        taken, unsent = self._taken.get(last_seq), self._unsent.get(last_seq)
        count = taken[1] if taken else unsent[0] if unsent else 0
        if count and last_seq - count + 1 == first_seq:
            self._taken.pop(last_seq, None)
            self._unsent.pop(last_seq, None)
            self.pending_records -= count

    def pending(self) -> tuple[list[bytes], list[AnyRecord]]:
        """What a snapshot must keep: the frames of the closed batches not acknowledged yet,
        in seq order, and the records of the batch still open (all of them after those)."""
        frames = {top: frame for top, (_, frame) in self._unsent.items()}
        frames.update((top, frame) for top, (_, _, frame) in self._taken.items())
        return [frames[top] for top in sorted(frames)], list(self._open)

    def restore(self, frames: list[bytes], records: list[AnyRecord], now: float) -> None:
        """After a restart: everything that may not be stored yet goes out again, the closed
        batches cut as they were (an ack still on its way names them exactly)."""
        for frame in frames:
            batch = decode_frame(frame)
            if not isinstance(batch, RecordBatch) or not batch.records:
                raise ValueError("a snapshot's outbox frame is not a batch of records")
            self._unsent[batch.records[-1].seq] = (len(batch.records), frame)
            self.pending_records += len(batch.records)
        for record in records:
            self.add(record, now - self._max_wait)


class RecordLink:
    """A producer's end of the persistence channels: its outbox, the PUSH of batches to the DB
    writers and the PULL of their acknowledgements. Used by every producer the same way."""

    def __init__(self, service: Service, ctx: Context, stream: str, origin: str = "") -> None:
        records, acks = PERSIST_CHANNELS[stream]
        self.outbox = Outbox(stream, service.config.db, origin)
        self._out = service.socket(ctx, records, bind=True)
        self._acks = service.socket(ctx, acks, bind=True)
        self._service = service
        # For a producer that numbers its records afresh each run (the events service; the
        # simulator numbers by game and tick): start past anything a previous run numbered, as
        # writers insert idempotently on (stream, seq) and would silently keep an old row for a
        # reused seq. Nanoseconds since the epoch grow faster than any producer numbers records
        # (and fit a BIGINT for centuries); within a run the numbers stay gap-free.
        self.last_seq = time.time_ns()
        service.on_readable(self._acks, self._take_acks)

    def add(self, record: AnyRecord, now: float) -> None:
        self.outbox.add(record, now)

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def send_due(self, now: float) -> None:
        for top, frame in self.outbox.due(now):
            try:
                send_frame(self._out, b"rec", frame, _NOBLOCK)
            except zmq.Again:  # no writer connected, or every writer's queue is full
                self.outbox.refused(now)
                return
            self.outbox.taken(top, now)

    def flush(self, timeout_s: float = FLUSH_S) -> int:
        """At a clean stop: every waiting record to the writers, then up to `timeout_s` for
        their acknowledgements (stopped first, producers find the writers still running). What
        a stop leaves here is never stored: the simulator goes on from the tick it stopped at,
        and the events service numbers afresh. Returns the records left unacknowledged."""
        outbox = self.outbox
        outbox.close_open()
        deadline = time.monotonic() + timeout_s
        while outbox.pending_records and (now := time.monotonic()) < deadline:
            self.send_due(now)
            if outbox.no_writer(now):
                break
            if self._acks.poll(20):
                self._take_acks()
        if outbox.pending_records:
            log.warning("%s: %d records not stored at stop", outbox.stream,
                        outbox.pending_records)
        return outbox.pending_records

    def _take_acks(self) -> None:
        while True:
            try:
                frames = recv_frames(self._acks, _NOBLOCK)
            except zmq.Again:
                return
            try:
                ack = decode_frame(frames[-1])
            except DecodeError as exc:
                self._service.count_bad("malformed", str(exc))
                continue
            if isinstance(ack, BatchAck) and ack.stream == self.outbox.stream:
                self.outbox.ack(ack.first_seq, ack.last_seq)
            else:
                self._service.count_bad("unexpected", type(ack).__name__)
