"""A producer's persistence records on their way to the DB writers.

Records are batched (up to `batch_max_rows`, or `batch_max_ms` after the first) and kept until
a writer acknowledges the batch; an unacknowledged batch is sent again after `resend_after_s`,
to whichever writer takes it. Writers insert idempotently on (stream, seq), so sending a batch
twice never stores a row twice. The DB is never on the trading path: records only wait here.
"""

from __future__ import annotations

import logging

from common.config import DbConfig
from common.records import AnyRecord, RecordBatch

log = logging.getLogger(__name__)


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
