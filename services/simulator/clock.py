"""The game clock: which ticks are due at a given wall time, at a speed factor.

Pure pacing: the caller passes monotonic wall time in, the clock answers how many ticks to run.
Tick counts drive the models; the clock only decides when. Speed 0 pauses the game.
"""

from __future__ import annotations

import math


class GameClock:
    def __init__(
        self, tick_interval_s: float, speed: float, now: float, max_catchup: int = 1000
    ) -> None:
        if tick_interval_s <= 0.0:
            raise ValueError("tick_interval_s must be > 0")
        self.tick_interval_s = tick_interval_s
        self.max_catchup = max_catchup
        self.issued = 0  # ticks handed out so far
        self.skipped = 0  # ticks dropped because the caller fell too far behind
        self._speed = 0.0
        self._anchor_wall = now
        self._anchor_tick = 0
        self.set_speed(speed, now)

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float, now: float) -> None:
        """From `now` on, ticks come every tick_interval_s / speed wall seconds."""
        if not (math.isfinite(speed) and speed >= 0.0):
            raise ValueError(f"speed must be finite and >= 0, got {speed}")
        self._anchor_wall, self._anchor_tick = now, self.issued
        self._speed = speed

    def due(self, now: float) -> int:
        """Ticks to run now; each one counts as issued. A backlog beyond max_catchup is skipped
        (the game slows down rather than bursting), and pacing resumes from now."""
        if self._speed == 0.0:
            return 0
        elapsed_ticks = (now - self._anchor_wall) * self._speed / self.tick_interval_s
        count = self._anchor_tick + math.floor(elapsed_ticks + 1e-9) - self.issued
        if count > self.max_catchup:
            self.skipped += count - self.max_catchup
            count = self.max_catchup
            self._anchor_wall, self._anchor_tick = now, self.issued + count
        count = max(count, 0)
        self.issued += count
        return count

    def give_back(self, count: int) -> None:
        """Ticks handed out but not run (the caller is holding): they stay due."""
        self.issued -= count
