"""The clock commands are stamped with: steady through steps of the wall clock."""

from __future__ import annotations

from common.clock import SteadyClock

S = 1_000_000_000


def test_a_wall_clock_step_neither_freezes_nor_reverses_time() -> None:
    wall, mono = [1_000 * S], [5 * S]
    clock = SteadyClock(lambda: wall[0], lambda: mono[0])
    assert clock.now_ns() == 1_000 * S
    wall[0] += S
    mono[0] += S
    assert clock.now_ns() == 1_001 * S
    wall[0] -= 3_600 * S  # NTP steps it back an hour
    mono[0] += S
    assert clock.now_ns() == 1_002 * S  # on at the monotonic clock's rate, not frozen
    mono[0] += S // 2
    assert clock.now_ns() == 1_002 * S + S // 2
    wall[0] += 7_200 * S  # then an hour ahead of where time had got to: followed
    assert clock.now_ns() == wall[0]
    assert clock.now_ns(after=wall[0] + 5) == wall[0] + 6  # strictly after the last stamp
    assert clock.now_s() == (wall[0] + 6) // S
