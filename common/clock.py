"""Wall-clock time that a step of the wall clock cannot send back or freeze.

NTP may step the wall clock back, and a VM's may be corrected by hours. A matcher that stamped
commands with max(wall clock, last stamp + 1 ns) then crawled a nanosecond a command until the
wall clock caught up: every team's one-second order window stood still, and every team was
refused RATE_LIMIT_EXCEEDED for the length of the step. Here time goes on at least at the rate
of the monotonic clock from the last reading, and follows the wall clock wherever it is ahead.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SteadyClock:
    def __init__(self, wall_ns: Callable[[], int] = time.time_ns,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._wall_ns, self._monotonic_ns = wall_ns, monotonic_ns
        self._last = wall_ns()
        self._at = monotonic_ns()

    def now_ns(self, after: int = 0) -> int:
        """Nanoseconds since the epoch, as the wall clock says or later; above `after`
        when given (a stamp strictly later than the previous one)."""
        at = self._monotonic_ns()
        self._last = max(self._wall_ns(), self._last + (at - self._at), after + 1)
        self._at = at
        return self._last

    def now_s(self) -> int:
        return self.now_ns() // 1_000_000_000
