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
from pathlib import Path
from typing import BinaryIO

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


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalWriter:
    def __init__(self, directory: Path, first_seq: int, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        self._buf = bytearray()
        directory.mkdir(parents=True, exist_ok=True)
        self._file = self._open(first_seq)

    def _open(self, first_seq: int) -> BinaryIO:
        f = open(segment_path(self.directory, first_seq), "ab")  # noqa: SIM115 - lives with us
        fsync_dir(self.directory)
        return f

    def append(self, seq: int, ts_ns: int, payload: bytes) -> None:
        self._buf += record_bytes(seq, ts_ns, payload)

    def extend(self, records: bytes) -> None:
        """Append records already framed by `record_bytes`."""
        self._buf += records

    def commit(self) -> None:
        """Write and fsync everything appended since the last commit (one fsync per batch)."""
        if not self._buf:
            return
        self._file.write(self._buf)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._buf.clear()

    def roll(self, next_seq: int) -> None:
        """Start a new segment at next_seq (called right after a snapshot)."""
        self.commit()
        self._file.close()
        self._file = self._open(next_seq)

    def close(self) -> None:
        self.commit()
        self._file.close()


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
    """Cut a torn or corrupt tail off the last segment; returns the bytes removed."""
    found = segments(directory)
    if not found:
        return 0
    path = found[-1][1]
    data = path.read_bytes()
    good = 0
    for end, *_ in _records(data):
        good = end
    if good < len(data):
        log.warning("journal %s: cutting %d torn bytes at offset %d", path, len(data) - good, good)
        with open(path, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
    return len(data) - good


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
                raise JournalCorrupt(f"{path}: expected seq {expected}, found {seq}")
            yield seq, ts, payload
            expected += 1
        if good != len(data):
            raise JournalCorrupt(f"{path}: damaged record at offset {good} (first seq {first})")
