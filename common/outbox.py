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


class Outbox:
    def __init__(self, stream: str, config: DbConfig) -> None:
        self.stream = stream
        self._max_rows = config.batch_max_rows
        self._max_wait = config.batch_max_ms / 1000
        self._resend_after = config.resend_after_s
        self._warn_at = config.max_pending_records
        self._open: list[AnyRecord] = []
        self._opened_at = 0.0
        self._unacked: dict[int, tuple[float, RecordBatch]] = {}  # top seq -> (sent at, batch)
        self.pending_records = 0

    def add(self, record: AnyRecord, now: float) -> None:
        if not self._open:
            self._opened_at = now
        self._open.append(record)
        self.pending_records += 1
        if self.pending_records == self._warn_at:
            log.warning("%s: %d records wait for the DB writers", self.stream, self._warn_at)

    def due(self, now: float) -> list[RecordBatch]:
        """Batches to send now: full or old enough ones, and unacknowledged ones to re-send."""
        out = []
        while self._open and (len(self._open) >= self._max_rows
                              or now - self._opened_at >= self._max_wait):
            records, self._open = self._open[: self._max_rows], self._open[self._max_rows :]
            batch = RecordBatch(stream=self.stream, records=records)
            self._unacked[records[-1].seq] = (now, batch)
            out.append(batch)
        for top, (sent, batch) in self._unacked.items():
            if now - sent >= self._resend_after:
                self._unacked[top] = (now, batch)
                out.append(batch)
        return out

    def retry_soon(self, batch: RecordBatch) -> None:
        """`batch` could not be handed to any writer: offer it again on the next call."""
        self._unacked[batch.records[-1].seq] = (float("-inf"), batch)

    def ack(self, last_seq: int) -> None:
        entry = self._unacked.pop(last_seq, None)
        if entry is not None:
            self.pending_records -= len(entry[1].records)

    def pending(self) -> list[AnyRecord]:
        """Every record not yet acknowledged, in seq order (what a snapshot must keep)."""
        sent = [r for _, b in sorted(self._unacked.values(), key=lambda e: e[1].records[0].seq)
                for r in b.records]
        return sent + self._open

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
        for batch in self.outbox.due(now):
            try:
                send_frame(self._out, b"rec", encode_frame(batch), _NOBLOCK)
            except zmq.Again:  # no writer connected yet: offer it again next round
                self.outbox.retry_soon(batch)
                return

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
