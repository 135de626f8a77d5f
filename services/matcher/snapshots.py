"""Atomic state snapshots: write to a temp file, fsync, rename, fsync the directory.

A file is `<crc32 u32>` + payload, so a damaged snapshot is detected and skipped for the
previous one (whose journal segments are still there). It is then renamed `*.damaged`: kept
for a look, and no longer one of the snapshots kept, or the next one written would have
deleted the intact one (and the journal after it) in its place.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

from common.files import write_durably

log = logging.getLogger(__name__)

_CRC = struct.Struct("<I")


def _snapshots(directory: Path) -> list[Path]:
    return sorted(directory.glob("snapshot-*.bin"))


def write_snapshot(directory: Path, seq: int, payload: bytes, keep: int = 2) -> int:
    """Write the snapshot at seq, keep the newest `keep`; returns the oldest kept one's seq
    (recovery may fall back to it, so the journal after it is still needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_durably(directory / f"snapshot-{seq:020d}.bin", _CRC.pack(zlib.crc32(payload)) + payload)
    kept = _snapshots(directory)
    for old in kept[:-keep]:
        old.unlink()
    return int(kept[-keep:][0].stem.split("-")[1])


def remove_partial_snapshots(directory: Path) -> None:
    """Temp files left by a crash during a snapshot write; for the matcher that owns the
    directory (it holds its lock), before it writes any."""
    for tmp in directory.glob("snapshot-*.tmp"):
        log.warning("removing %s, left by a crash during a snapshot write", tmp)
        tmp.unlink()


def load_latest_snapshot(directory: Path) -> bytes | None:
    """Payload of the newest intact snapshot, or None when there is none."""
    for path in reversed(_snapshots(directory)):
        data = path.read_bytes()
        if len(data) >= _CRC.size and _CRC.unpack_from(data)[0] == zlib.crc32(data[_CRC.size :]):
            return data[_CRC.size :]
        damaged = path.with_suffix(".damaged")
        path.rename(damaged)
        log.error("snapshot %s is damaged (kept as %s); trying an older one", path, damaged.name)
    return None
