"""What the DB writers have committed, read from the database by the gateway's health checks.

The DB writers publish nothing on the bus, so their progress is read where it lands: every
commit moves `stream_progress.last_seq` in the same transaction as its rows. Each poll notes,
per producer stream, the committed seq and the record time (`ts_ns`, stamped by the producer)
of the newest committed record; when a stream moved, `now - ts_ns` is an upper bound of that
record's producer -> DB commit latency, exact to within one poll interval.

Read-only connections (common.dbread). Polls run in a worker thread, never on the gateway's
event loop.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from common.config import redacted_url
from common.dbread import read_only_engine

log = logging.getLogger(__name__)

# Every data table carries (stream, seq, ts_ns), unique on (stream, seq): see the dbwriter.
TABLES = ("teams", "orders", "trades", "position_snapshots", "prices", "events")
RECORD_TS = text(" UNION ALL ".join(
    f"SELECT ts_ns FROM {t} WHERE stream = :stream AND seq = :seq" for t in TABLES))
PROGRESS = text("SELECT stream, last_seq FROM stream_progress")
# More records than this between two polls is a producer numbering afresh (the simulator and
# events start at their start time in ns), not records stored.
MAX_STEP = 10_000_000


class DbWatch:
    def __init__(self, url: str) -> None:
        self.url = url
        self.label = redacted_url(url)
        self.committed: dict[str, int] = {}  # stream -> committed last_seq
        self.newest_ns: dict[str, int] = {}  # stream -> ts_ns of the record at last_seq
        # records stored since this gateway first saw the stream: a counter that stays exact
        # (seqs numbered from a ns clock are ~1.8e18, beyond a float64's integers)
        self.stored: dict[str, int] = {}
        self.error: str | None = "not read yet"
        self._engine: Engine | None = None

    def _connect(self) -> Connection:
        if self._engine is None:
            self._engine = read_only_engine(self.url)
        return self._engine.connect()

    def poll(self) -> list[tuple[str, float]]:
        """Blocking. Returns (stream, seconds from record stamp to seen committed) for every
        stream that moved since the previous poll (none on the first sight of a stream)."""
        observed: list[tuple[str, float]] = []
        try:
            with self._connect() as conn:
                rows = conn.execute(PROGRESS).all()
                for stream, seq in rows:
                    before = self.committed.get(stream)
                    if before == seq:
                        continue
                    ts_ns = conn.execute(RECORD_TS, {"stream": stream, "seq": seq}).scalar()
                    self.committed[stream] = int(seq)
                    step = 0 if before is None else int(seq) - before
                    self.stored[stream] = self.stored.get(stream, 0) + (
                        step if 0 < step <= MAX_STEP else 0)
                    if not ts_ns:  # none, or the house teams', made before any command
                        continue
                    self.newest_ns[stream] = int(ts_ns)
                    if before is not None:
                        observed.append((stream, max(0.0, time.time() - ts_ns / 1e9)))
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if reason != self.error:
                log.warning("gateway: database %s not readable: %s", self.label, reason)
            self.error = reason
            return observed
        if self.error is not None:
            log.info("gateway: database %s readable", self.label)
        self.error = None
        return observed

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
