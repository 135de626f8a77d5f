"""The DB writer service: record batches in from every producer, one transaction each, then an
acknowledgement back to the producer. Any number of writers may run at once."""

from __future__ import annotations

import logging
from functools import partial

import zmq

from common.messages import DecodeError
from common.records import BatchAck, RecordBatch, decode_frame, encode_frame
from common.service import Context, Service, Socket
from common.transport import PERSIST_CHANNELS, recv_frames, send_frame
from services.dbwriter.store import PERMANENT, ForeignStream, Store

log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)


class DbWriterService(Service):
    name = "dbwriter"

    def on_start(self, ctx: Context) -> None:
        self.config.data_path.mkdir(parents=True, exist_ok=True)  # where SQLite lives by default
        self.store = Store(self.config.db_url)
        self._foreign: set[tuple[str, str]] = set()  # (stream, origin) refused and logged
        self._acks: dict[str, Socket] = {}
        for stream, (records, acks) in PERSIST_CHANNELS.items():
            inbox = self.socket(ctx, records, bind=False)
            self._acks[stream] = self.socket(ctx, acks, bind=False)
            self.on_readable(inbox, partial(self._drain, inbox))

    def _drain(self, inbox: Socket) -> None:
        for _ in range(100):
            try:
                frames = recv_frames(inbox, _NOBLOCK)
            except zmq.Again:
                return
            self._write(frames[-1])

    def _write(self, payload: bytes) -> None:
        try:
            batch = decode_frame(payload)
        except DecodeError as exc:
            self._bad("malformed", str(exc))
            return
        if not isinstance(batch, RecordBatch) or batch.stream not in self._acks:
            self._bad("unexpected", type(batch).__name__)
            return
        if not self._store(batch):
            return
        self.counters["batches"] += 1
        self.counters["records"] += len(batch.records)
        first, top = (batch.records[0].seq, batch.records[-1].seq) if batch.records else (0, 0)
        ack = BatchAck(stream=batch.stream, first_seq=first, last_seq=top)
        send_frame(self._acks[batch.stream], b"ack", encode_frame(ack))

    def _store(self, batch: RecordBatch) -> bool:
        """True once every record is in the database or, refused for good, in dead_letters
        (a poison record must not hold its stream back for ever); False leaves the batch to
        the producer's re-send: nothing is lost, only delayed."""
        try:
            try:
                self.store.write(batch)
            except PERMANENT as exc:
                self.counters["dead_letters"] += self.store.salvage(batch, exc)
        except ForeignStream as exc:
            self.counters["foreign_batches"] += 1
            if (batch.stream, batch.origin) not in self._foreign:  # once, not per re-send
                self._foreign.add((batch.stream, batch.origin))
                log.error("dbwriter: refusing %s: %s", batch.stream, exc)
            return False
        except Exception as exc:
            self.counters["write_errors"] += 1
            log.warning("dbwriter: batch of %s not stored (%s); the producer will re-send",
                        batch.stream, exc)
            return False
        return True

    def on_stop(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
