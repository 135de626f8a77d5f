"""Append-only command journal, group-committed: nothing is answered before it is on disk.

A record is `<len u32><crc32 u32><seq i64><ts_ns i64>` then the command's msgpack bytes, the
CRC covering seq, ts and payload. Segments are named by their first seq and a new one starts
at every snapshot. A crash can only tear the end of the last segment (those records were never
acknowledged); `repair_tail` cuts it off. Damage anywhere else stops recovery loudly.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

from common.files import fsync_dir

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_STAMP = struct.Struct("<qq")
_RECORD_HEAD = _HEADER.size + _STAMP.size


class JournalCorrupt(RuntimeError):
    """The journal is damaged before its last record: recovery must not guess."""


def segment_path(directory: Path, first_seq: int) -> Path:
    return directory / f"journal-{first_seq:020d}.log"


def segments(directory: Path) -> list[tuple[int, Path]]:
    found = [(int(p.stem.split("-")[1]), p) for p in directory.glob("journal-*.log")]
    return sorted(found)


def drop_segments_before(directory: Path, seq: int) -> None:
    """Delete the segments whose every record is older than seq (never the live, last one)."""
    found = segments(directory)
    for (_, path), (next_first, _) in pairwise(found):
        if next_first <= seq:
            path.unlink()


class JournalWriter:
    """Writes straight to the file descriptor: a failed batch is cut back off the file, where a
    buffered file would keep its unwritten half and write it again when closed."""

    def __init__(self, directory: Path, first_seq: int, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        self.failed = False  # a commit failed: nothing more is written, not even at close
        self._buf = bytearray()
        directory.mkdir(parents=True, exist_ok=True)
        self._fd, self._size = self._open(first_seq)

    def _open(self, first_seq: int) -> tuple[int, int]:
        path = segment_path(self.directory, first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fsync_dir(self.directory)
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        self.path = path  # the segment being written, for error messages
        return fd, size

    def append(self, seq: int, ts_ns: int, payload: bytes) -> None:
        self._buf += record_bytes(seq, ts_ns, payload)

    def extend(self, records: bytes) -> None:
        """Append records already framed by `record_bytes`."""
        self._buf += records

    def commit(self) -> None:
        """Write and fsync everything appended since the last commit (one fsync per batch).

        On any error the batch is cut back off (none of it was acknowledged) and the writer
        stops: a torn batch followed by more records would make the journal unreadable."""
        if not self._buf or self.failed:
            return
        try:
            _write_all(self._fd, self._buf)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            exc.add_note(f"writing the journal segment {self.path}")  # a descriptor has no name
            self.failed = True
            self._buf = bytearray()  # not clear(): the traceback still holds a view of it
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                log.exception("journal: could not cut a failed batch off; repair_tail will")
            raise
        self._size += len(self._buf)
        self._buf.clear()

    def roll(self, next_seq: int) -> None:
        """Start a new segment at next_seq (called right after a snapshot)."""
        self.commit()
        # the new segment first: if it cannot be made, the writer keeps its descriptor, and
        # close() does not close a number that may since have gone to another file or socket
        fd, size = self._open(next_seq)
        os.close(self._fd)
        self._fd, self._size = fd, size

    def close(self) -> None:
        try:
            self.commit()
        finally:
            os.close(self._fd)


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:  # a write may be short (a full disk, a file size limit)
        view = view[os.write(fd, view):]


def record_bytes(seq: int, ts_ns: int, payload: bytes) -> bytes:
    stamp = _STAMP.pack(seq, ts_ns)
    crc = zlib.crc32(payload, zlib.crc32(stamp))
    return _HEADER.pack(len(payload), crc) + stamp + payload


def _records(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(end offset, seq, ts, payload) for each valid record; stops at the first bad one."""
    pos = 0
    while pos + _RECORD_HEAD <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _RECORD_HEAD + length
        if end > len(data):
            return
        stamp = data[pos + _HEADER.size : pos + _RECORD_HEAD]
        payload = data[pos + _RECORD_HEAD : end]
        if zlib.crc32(payload, zlib.crc32(stamp)) != crc:
            return
        seq, ts = _STAMP.unpack(stamp)
        yield end, seq, ts, payload
        pos = end


def repair_tail(directory: Path) -> int:
    """Cut a torn tail off the last segment; returns the bytes removed.

    A torn write leaves garbage only after the last record written. A valid record after the
    damage means damage inside what was already written, and acknowledged: that is refused
    (JournalCorrupt), never cut."""
    found = segments(directory)
    if not found:
        return 0
    path = found[-1][1]
    data = path.read_bytes()
    good, last_seq = 0, found[-1][0] - 1
    for end, seq, *_ in _records(data):
        good, last_seq = end, seq
    if _valid_record_after(data, good, last_seq):
        raise JournalCorrupt(
            f"{path}: damaged record at offset {good} with valid records after it; not a torn "
            f"write, so not cut. Inspect it; truncating the file to {good} bytes would drop "
            f"every record from seq {last_seq + 1} on")
    if good < len(data):
        log.warning("journal %s: cutting %d torn bytes at offset %d", path, len(data) - good, good)
        with open(path, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
    return len(data) - good


def _valid_record_after(data: bytes, start: int, last_seq: int) -> bool:
    """Whether a record with a later seq than `last_seq` starts anywhere after `start`."""
    for pos in range(start + 1, len(data) - _RECORD_HEAD + 1):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _RECORD_HEAD + length
        if end > len(data):
            continue
        stamp = data[pos + _HEADER.size : pos + _RECORD_HEAD]
        if zlib.crc32(data[pos + _RECORD_HEAD : end], zlib.crc32(stamp)) == crc and (
                _STAMP.unpack(stamp)[0] > last_seq):
            return True
    return False


def read_journal(directory: Path, after_seq: int = 0) -> Iterator[tuple[int, int, bytes]]:
    """(seq, ts_ns, payload) of every record with seq > after_seq, checked to be gap-free."""
    found = segments(directory)
    expected = after_seq + 1
    for i, (first, path) in enumerate(found):
        if i + 1 < len(found) and found[i + 1][0] <= expected:
            continue  # wholly before the point we start from
        data = path.read_bytes()
        good = 0
        for end, seq, ts, payload in _records(data):
            good = end
            if seq < expected:
                continue
            if seq != expected:
                raise JournalCorrupt(
                    f"{path}: expected seq {expected}, found {seq}: seqs {expected} to "
                    f"{seq - 1} are in no journal segment, and no intact snapshot covers them")
            yield seq, ts, payload
            expected += 1
        if good != len(data):
            raise JournalCorrupt(f"{path}: damaged record at offset {good} (first seq {first})")
