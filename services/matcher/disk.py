"""Where the matcher's journal and snapshots are written: a disk thread, or inline.

With fsync on, a disk thread writes and fsyncs: while batch k is being fsynced, the matching
thread already works on batch k+1; batch k's events are published only once the disk thread
reports it durable (batches become durable in order). fsync releases the GIL, so the two
overlap on two cores.

With fsync off there is nothing to overlap: a write is a copy into the OS page cache. The
matching thread then writes itself (`InlineDisk`) and publishes at once, which saves the two
thread wake-ups of a hand-off (a tenth of a millisecond or more per batch).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path

from common.config import MatcherConfig
from services.matcher.journal import JournalWriter, drop_segments_before
from services.matcher.snapshots import write_snapshot

log = logging.getLogger(__name__)

_Item = tuple[str, int, bytes] | None  # ("batch", number, journal bytes) | ("snapshot", seq, state)


def open_disk(journal: JournalWriter, directory: Path,
              cfg: MatcherConfig) -> DiskThread | InlineDisk:
    if journal.fsync:
        return DiskThread(journal, directory, cfg)
    return InlineDisk(journal, directory, cfg)


def _snapshot(journal: JournalWriter, directory: Path, seq: int, state: bytes,
              cfg: MatcherConfig) -> None:
    """Everything up to seq is in the journal: the snapshot, then a new segment after it.
    Unless the whole journal is kept, the segments that no kept snapshot needs go."""
    journal.commit()
    oldest = write_snapshot(directory, seq, state, keep=cfg.snapshots_kept)
    journal.roll(seq + 1)
    if not cfg.keep_full_journal:
        drop_segments_before(directory, oldest + 1)


class InlineDisk:
    """The journal written by the matching thread itself: for fsync off only (see above).
    Snapshots are written inline too (temp file, fsync, rename), once per snapshot interval."""

    def __init__(self, journal: JournalWriter, directory: Path, cfg: MatcherConfig) -> None:
        self._journal = journal
        self._directory = directory
        self._cfg = cfg
        self.durable = 0

    def submit(self, batch: int, journal_bytes: bytes) -> None:
        self._journal.extend(journal_bytes)
        self._journal.commit()
        self.durable = batch

    def snapshot(self, seq: int, state: bytes) -> None:
        _snapshot(self._journal, self._directory, seq, state, self._cfg)

    def durable_batch(self) -> int:
        return self.durable

    def close(self) -> None:
        self._journal.close()


class DiskThread:
    def __init__(self, journal: JournalWriter, directory: Path, cfg: MatcherConfig) -> None:
        self._journal = journal
        self._directory = directory
        self._cfg = cfg
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self.durable = 0  # highest batch number known to be on disk
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="matcher-disk", daemon=True)
        self._thread.start()

    @property
    def wake_fd(self) -> int:
        """Readable whenever `durable` moved (or the thread failed): poll it with the sockets."""
        return self._wake_read

    def submit(self, batch: int, journal_bytes: bytes) -> None:
        self._queue.put(("batch", batch, journal_bytes))

    def snapshot(self, seq: int, state: bytes) -> None:
        """Write a snapshot at seq once every batch submitted before it is durable."""
        self._queue.put(("snapshot", seq, state))

    def durable_batch(self) -> int:
        """Clear the wake-up and return the durable mark; a disk failure is raised here."""
        if self._thread.is_alive():
            try:
                while os.read(self._wake_read, 4096):
                    pass
            except BlockingIOError:
                pass
        if self.error is not None:
            raise RuntimeError(f"the matcher cannot write its journal or snapshots in "
                               f"{self._directory}: {self.error}") from self.error
        return self.durable

    def close(self) -> None:
        """Flush everything submitted, then stop; `durable_batch` still answers afterwards."""
        self._queue.put(None)
        self._thread.join()
        try:
            self._journal.close()
        finally:
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _run(self) -> None:
        try:
            while self._round():
                pass
        except BaseException as exc:  # reported to the matching thread, which stops
            log.exception("matcher disk thread failed")
            self.error = exc
            os.write(self._wake_write, b"!")

    def _round(self) -> bool:
        """Write everything waiting with one fsync (group commit); False once told to stop."""
        items = [self._queue.get()]
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        last = self.durable
        for item in items:
            if item is None:
                self._publish(last)
                return False
            kind, number, data = item
            if kind == "batch":
                self._journal.extend(data)
                last = number
            else:
                _snapshot(self._journal, self._directory, number, data, self._cfg)
        self._publish(last)
        return True

    def _publish(self, last: int) -> None:
        self._journal.commit()
        if last != self.durable:
            self.durable = last
            os.write(self._wake_write, b".")
