"""A producer's persistence records on their way to the DB writers.

Records are batched (up to `batch_max_rows`, or `batch_max_ms` after the first) and kept until
a writer acknowledges the batch; an unacknowledged batch is sent again after `resend_after_s`,
to whichever writer takes it. Writers insert idempotently on (stream, seq), so sending a batch
twice never stores a row twice. The DB is never on the trading path: records only wait here.
"""

from __future__ import annotations

import logging

import zmq

from common.config import DbConfig
from common.records import AnyRecord, BatchAck, RecordBatch, decode_frame, encode_frame
from common.service import Context, Service
from common.transport import PERSIST_CHANNELS, recv_frames, send_frame

log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)


_HOLD_S = 0.005  # no writer took a batch: offer them again after this, not on every call


class Outbox:
    """Records, then batches, from `add` to a writer's acknowledgement.

    Each batch is encoded once, when it closes. Batches no writer has taken yet go first, in
    seq order; taken ones wait in the order they were last taken, so finding those due for a
    re-send stops at the first that is not (the DB may lag by thousands of batches)."""

    def __init__(self, stream: str, config: DbConfig) -> None:
        self.stream = stream
        self._max_rows = config.batch_max_rows
        self._max_wait = config.batch_max_ms / 1000
        self._resend_after = config.resend_after_s
        self._warn_at = config.max_pending_records
        self._open: list[AnyRecord] = []
        self._opened_at = 0.0
        self._unsent: dict[int, tuple[RecordBatch, bytes]] = {}  # top seq -> (batch, frame)
        self._taken: dict[int, tuple[float, RecordBatch, bytes]] = {}  # top -> (taken at, ...)
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
        """(top seq, frame) of each batch to hand to a writer now: full or old enough new
        ones, any not taken yet, and taken ones left unacknowledged for `resend_after_s`."""
        while self._open and (len(self._open) >= self._max_rows
                              or now - self._opened_at >= self._max_wait):
            records, self._open = self._open[: self._max_rows], self._open[self._max_rows :]
            batch = RecordBatch(stream=self.stream, records=records)
            self._unsent[records[-1].seq] = (batch, encode_frame(batch))
        if now < self._hold_until:
            return []
        out = [(top, frame) for top, (_, frame) in self._unsent.items()]
        for top, (taken, _, frame) in self._taken.items():
            if now - taken < self._resend_after:
                break
            out.append((top, frame))
        return out

    def taken(self, top: int, now: float) -> None:
        """A writer took the batch ending at `top`: it goes out again if no ack comes."""
        unsent = self._unsent.pop(top, None)
        batch, frame = unsent if unsent is not None else self._taken.pop(top)[1:]
        self._taken[top] = (now, batch, frame)

    def refused(self, now: float) -> None:
        """No writer could take a batch (none connected, or all full): hold for a moment."""
        self._hold_until = now + _HOLD_S

    def ack(self, last_seq: int) -> None:
        taken, unsent = self._taken.pop(last_seq, None), self._unsent.pop(last_seq, None)
        batch = taken[1] if taken else unsent[0] if unsent else None
        if batch is not None:
            self.pending_records -= len(batch.records)

    def pending(self) -> list[AnyRecord]:
        """Every record not yet acknowledged, in seq order (what a snapshot must keep)."""
        batches = [b for b, _ in self._unsent.values()] + [b for _, b, _ in self._taken.values()]
        batches.sort(key=lambda b: b.records[0].seq)
        return [r for b in batches for r in b.records] + self._open

    def restore(self, records: list[AnyRecord], now: float) -> None:
        """After a restart: everything that may not be stored yet goes out again."""
        for record in records:
            self.add(record, now - self._max_wait)


class RecordLink:
    """A producer's end of the persistence channels: its outbox, the PUSH of batches to the DB
    writers and the PULL of their acknowledgements. Used by every producer the same way."""

    def __init__(self, service: Service, ctx: Context, stream: str) -> None:
        records, acks = PERSIST_CHANNELS[stream]
        self.outbox = Outbox(stream, service.config.db)
        self._out = service.socket(ctx, records, bind=True)
        self._acks = service.socket(ctx, acks, bind=True)
        self._service = service
        self.last_seq = 0  # of the records this producer numbered (fresh producers only)
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

    def _take_acks(self) -> None:
        while True:
            try:
                frames = recv_frames(self._acks, _NOBLOCK)
            except zmq.Again:
                return
            try:
                ack = decode_frame(frames[-1])
            except ValueError as exc:  # msgspec's decode errors derive from ValueError
                self._service.count_bad("malformed", str(exc))
                continue
            if isinstance(ack, BatchAck) and ack.stream == self.outbox.stream:
                self.outbox.ack(ack.last_seq)
            else:
                self._service.count_bad("unexpected", type(ack).__name__)
