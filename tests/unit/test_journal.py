"""Journal and snapshot files: round trips, torn tails, corruption, atomic replacement."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from services.matcher.journal import (
    JournalCorrupt,
    JournalWriter,
    drop_segments_before,
    read_journal,
    repair_tail,
    segment_path,
    segments,
)
from services.matcher.snapshots import (
    load_latest_snapshot,
    remove_partial_snapshots,
    write_snapshot,
)


def write(directory: Path, first: int, last: int, roll_at: int | None = None) -> None:
    journal = JournalWriter(directory, first)
    for seq in range(first, last + 1):
        if seq == roll_at:
            journal.roll(seq)
        journal.append(seq, seq * 10, f"cmd{seq}".encode())
        if seq % 7 == 0:
            journal.commit()
    journal.close()


def test_round_trip_across_segments(tmp_path: Path) -> None:
    write(tmp_path, 1, 50, roll_at=20)
    assert [first for first, _ in segments(tmp_path)] == [1, 20]
    records = list(read_journal(tmp_path))
    assert [(s, t, p) for s, t, p in records] == [(s, s * 10, f"cmd{s}".encode())
                                                  for s in range(1, 51)]
    assert [s for s, _, _ in read_journal(tmp_path, after_seq=33)] == list(range(34, 51))


def test_uncommitted_records_are_not_on_disk(tmp_path: Path) -> None:
    journal = JournalWriter(tmp_path, 1)
    journal.append(1, 1, b"x")
    journal.commit()
    journal.append(2, 2, b"y")  # never committed: the process dies here
    assert [s for s, _, _ in read_journal(tmp_path)] == [1]


def test_torn_tail_is_cut_and_the_rest_survives(tmp_path: Path) -> None:
    write(tmp_path, 1, 10)
    (_, path), = segments(tmp_path)
    good = path.stat().st_size
    torn = b"\x20\x00\x00\x00garbage-half-record"
    with open(path, "ab") as f:
        f.write(torn)
    assert repair_tail(tmp_path) == len(torn)
    assert path.stat().st_size == good
    assert repair_tail(tmp_path) == 0
    assert [s for s, _, _ in read_journal(tmp_path)] == list(range(1, 11))
    JournalWriter(tmp_path, 11).close()  # appending after repair continues cleanly


def test_damage_inside_the_last_segment_is_refused_not_cut(tmp_path: Path) -> None:
    """Records after the damage were written, fsynced and acknowledged: a torn write cannot
    leave valid records behind it, so this is refused rather than silently cut."""
    write(tmp_path, 1, 30)
    (_, path), = segments(tmp_path)
    data = bytearray(path.read_bytes())
    data[40] ^= 0x01  # inside record 2
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="not a torn write"):
        repair_tail(tmp_path)
    assert path.read_bytes() == bytes(data)  # nothing cut


def test_damage_before_the_tail_stops_recovery(tmp_path: Path) -> None:
    write(tmp_path, 1, 30, roll_at=15)
    first_segment = segments(tmp_path)[0][1]
    data = bytearray(first_segment.read_bytes())
    data[40] ^= 0xFF
    first_segment.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt):
        list(read_journal(tmp_path))


def test_a_batch_that_cannot_be_written_is_cut_off_and_the_error_names_the_file(
        tmp_path: Path) -> None:
    """A real short write: a file size limit (EFBIG), as a full disk gives ENOSPC."""
    journal = JournalWriter(tmp_path, 1)
    journal.append(1, 10, b"cmd1")
    journal.commit()
    journal.append(2, 20, b"x" * 100_000)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError) as failed:
            journal.commit()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert failed.value.__notes__ == [f"writing the journal segment {segment_path(tmp_path, 1)}"]
    journal.append(3, 30, b"cmd3")
    journal.close()  # a writer that failed writes nothing more
    assert [s for s, _, _ in read_journal(tmp_path)] == [1]


def test_a_segment_that_cannot_be_made_leaves_the_writer_on_its_own(tmp_path: Path) -> None:
    journal = JournalWriter(tmp_path, 1)
    journal.append(1, 10, b"cmd1")
    segment_path(tmp_path, 2).mkdir()  # a real failure to create the file (EISDIR)
    with pytest.raises(IsADirectoryError):
        journal.roll(2)
    journal.close()  # its own descriptor, once (it raised EBADF: closed twice)
    segment_path(tmp_path, 2).rmdir()
    assert [s for s, _, _ in read_journal(tmp_path)] == [1]


def test_segments_go_only_when_wholly_before_the_seq_asked(tmp_path: Path) -> None:
    write(tmp_path, 1, 50, roll_at=20)
    journal = JournalWriter(tmp_path, 51)  # a third segment, 51.., the live one
    journal.close()
    drop_segments_before(tmp_path, 50)  # 20..50 still holds seq 50
    assert [first for first, _ in segments(tmp_path)] == [20, 51]
    assert [s for s, _, _ in read_journal(tmp_path, after_seq=49)] == [50]
    drop_segments_before(tmp_path, 10**6)  # the last segment is never dropped
    assert [first for first, _ in segments(tmp_path)] == [51]
    write(tmp_path, 51, 60)
    with pytest.raises(JournalCorrupt, match="seqs 1 to 50 are in no journal segment"):
        list(read_journal(tmp_path))  # from seq 1: no snapshot covers the segments gone


def test_a_temp_file_left_by_a_crashed_snapshot_write_is_removed(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 10, b"state-10")
    (tmp_path / f"snapshot-{20:020d}.tmp").write_bytes(b"half a snap")
    remove_partial_snapshots(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    assert load_latest_snapshot(tmp_path) == b"state-10"


def test_snapshots_are_atomic_and_a_damaged_one_falls_back(tmp_path: Path) -> None:
    assert load_latest_snapshot(tmp_path) is None
    assert write_snapshot(tmp_path, 5, b"state-5") == 5  # the oldest snapshot kept
    assert write_snapshot(tmp_path, 9, b"state-9") == 5
    assert write_snapshot(tmp_path, 12, b"state-12", keep=2) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "snapshot-00000000000000000009.bin", "snapshot-00000000000000000012.bin"]
    assert load_latest_snapshot(tmp_path) == b"state-12"
    newest = tmp_path / "snapshot-00000000000000000012.bin"
    newest.write_bytes(newest.read_bytes()[:-2])
    assert load_latest_snapshot(tmp_path) == b"state-9"
    # the damaged one is set aside: the next snapshot keeps 9 (and the journal after it), which
    # recovery would need again if 15 were damaged too
    assert write_snapshot(tmp_path, 15, b"state-15", keep=2) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "snapshot-00000000000000000009.bin", "snapshot-00000000000000000012.damaged",
        "snapshot-00000000000000000015.bin"]
