"""The DB writer service: record batches in from every producer, one transaction each, then an
acknowledgement back to the producer. Any number of writers may run at once."""

from __future__ import annotations

import logging
import time
from functools import partial

import zmq
from sqlalchemy.exc import OperationalError

from common.config import redacted_url
from common.messages import DecodeError
from common.records import BatchAck, RecordBatch, decode_frame, encode_frame
from common.service import Context, Service, Socket
from common.transport import PERSIST_CHANNELS, recv_frames, send_frame
from services.dbwriter.engine import make_sqlite_dir
from services.dbwriter.store import PERMANENT, ForeignStream, Store

log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)
RETRY_S = 1.0  # while the database is unreachable at start: how often to try again
WARN_EVERY_S = 30.0  # and how often to say so


class DbWriterService(Service):
    name = "dbwriter"

    def on_start(self, ctx: Context) -> None:
        make_sqlite_dir(self.config.db_url)  # the data dir, by default
        self.store: Store | None = None
        self._ctx_for_inboxes = ctx
        self._foreign: set[tuple[str, str]] = set()  # (stream, origin) refused and logged
        self._acks: dict[str, Socket] = {}
        self._next_try, self._said = 0.0, float("-inf")
        self._unreported, self._reported_at = 0, float("-inf")  # failed writes not yet logged
        self._open(time.monotonic())

    def on_tick(self, now: float) -> None:
        if self.store is None and now >= self._next_try:
            self._open(now)

    def _open(self, now: float) -> None:
        """The store, then the inboxes. A writer whose database is down at start (a restart
        during an outage, a new replica) takes no batch and tries again every RETRY_S, as a
        running writer waits an outage out; exiting put it into supervisord's restart
        backoff. Batches wait in the producers' outboxes meanwhile."""
        try:
            self.store = Store(self.config.db_url)
        except OperationalError as exc:  # unreachable, refused, not up yet
            self.counters["db_unreachable"] += 1
            self._next_try = now + RETRY_S
            if now - self._said >= WARN_EVERY_S:
                self._said = now
                cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                log.warning("dbwriter: database unreachable (%s); trying again every %g s",
                            cause, RETRY_S)
            return
        log.info("dbwriter: storing to %s", redacted_url(self.config.db_url))
        for stream, (records, acks) in PERSIST_CHANNELS.items():
            inbox = self.socket(self._ctx_for_inboxes, records, bind=False)
            self._acks[stream] = self.socket(self._ctx_for_inboxes, acks, bind=False)
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
            self.count_bad("malformed", str(exc))
            return
        if not isinstance(batch, RecordBatch) or batch.stream not in self._acks:
            self.count_bad("unexpected", type(batch).__name__)
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
        store = self.store
        assert store is not None  # the inboxes are opened only once the store is
        try:
            try:
                store.write(batch)
            except PERMANENT as exc:
                self.counters["dead_letters"] += store.salvage(batch, exc)
        except ForeignStream as exc:
            self.counters["foreign_batches"] += 1
            if (batch.stream, batch.origin) not in self._foreign:  # once, not per re-send
                self._foreign.add((batch.stream, batch.origin))
                log.error("dbwriter: refusing %s: %s", batch.stream, exc)
            return False
        except Exception as exc:
            self.counters["write_errors"] += 1
            self._not_stored(batch.stream, exc)
            return False
        if self._unreported or self._reported_at > float("-inf"):
            log.info("dbwriter: storing again")
            self._unreported, self._reported_at = 0, float("-inf")
        return True

    def _not_stored(self, stream: str, exc: Exception) -> None:
        """Said at most every WARN_EVERY_S: through an outage every re-send of every batch
        fails, and one line each filled the log (thousands a minute)."""
        self._unreported += 1
        now = time.monotonic()
        if now - self._reported_at >= WARN_EVERY_S:
            log.warning("dbwriter: %d batch(es) not stored, the last of %s (%s); the producers "
                        "will re-send", self._unreported, stream, exc)
            self._unreported, self._reported_at = 0, now

    def on_stop(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
