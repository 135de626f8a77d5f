"""Pure market models: volatility regimes, the SPX path and SPY tracking it.

No I/O and no clock: each class takes a seeded `numpy.random.Generator` and is driven one tick
at a time by its caller, so the same seed and the same calls give the same path bit for bit.
Exogenous randomness that oracle signals are scored against (future regimes, the next tracking
error) is drawn ahead of time and exposed read-only.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Collection, Sequence
from itertools import accumulate

import numpy as np

from common.market_settings import SimulatorSettings
from common.money import TICK
from services.simulator.pricing import to_ticks

UP = 1
DOWN = -1


def _cumulative(matrix: Sequence[Sequence[float]]) -> list[list[float]]:
    return [list(accumulate(row)) for row in matrix]


class RegimeChain:
    """Markov-switching volatility regime whose next `lookahead` switches are already drawn.

    Each tick's switch is one uniform draw, made `lookahead` ticks ahead, mapped through the
    row of the regime in force: the tick matrix's row, or the news matrix's at a tick where a
    regime-shift news hits (GAME.md: the news draw replaces the tick's own switch). So the
    regimes of the next ticks are known before they happen, news shifts included, and the
    hedge-fund forecaster can be told the truth and its accuracy measured.
    """

    def __init__(
        self,
        settings: SimulatorSettings,
        rng: np.random.Generator,
        initial: int | None = None,
        lookahead: int | None = None,
    ) -> None:
        self._rng = rng
        self._vols = settings.regime_vols
        self._tick_cum = _cumulative(settings.tick_regime_matrix())
        self._news_cum = _cumulative(settings.news_regime_matrix)
        self._current = settings.initial_regime if initial is None else initial
        if not 0 <= self._current < len(self._vols):
            raise ValueError(f"initial regime {self._current} out of range")
        size = settings.regime_lookahead_ticks if lookahead is None else lookahead
        if size < 1:
            raise ValueError("lookahead must be >= 1")
        self._draws: deque[float] = deque()  # the uniform of each of the next ticks' switch
        self._lookahead = size
        self._refill()

    @property
    def current(self) -> int:
        return self._current

    @property
    def vol(self) -> float:
        return self._vols[self._current]

    def window(self, shifts: Collection[int] = ()) -> tuple[int, ...]:
        """The regime in force now, then at each of the next `lookahead` ticks; `shifts` are
        the offsets (1 = the next tick) where a regime-shift news is due."""
        regimes = [self._current]
        for offset, draw in enumerate(self._draws, start=1):
            regimes.append(self._switch(regimes[-1], draw, offset in shifts))
        return tuple(regimes)

    def step(self, shift: bool = False, start: int | None = None) -> int:
        """Advance one tick; returns the regime now in force. `shift`: a regime-shift news hits
        this tick. `start`: the game master's regime, in force from this tick unless a news
        shift moves it (the shift then starts from it)."""
        draw = self._draws.popleft()
        self._refill()
        if start is not None:
            self._current = start
            if not shift:
                return start
        self._current = self._switch(self._current, draw, shift)
        return self._current

    def _switch(self, regime: int, draw: float, shift: bool) -> int:
        row = (self._news_cum if shift else self._tick_cum)[regime]
        return min(bisect_right(row, draw), len(row) - 1)

    def _refill(self) -> None:
        while len(self._draws) < self._lookahead:
            self._draws.append(float(self._rng.random()))


class UnderlyingPath:
    """Driftless GBM (mu = 0) for one underlying; the volatility is supplied per step."""

    def __init__(
        self, start: float, dt_years: float, rng: np.random.Generator, tick: float = 0.01
    ) -> None:
        if start <= 0.0 or dt_years <= 0.0 or tick <= 0.0:
            raise ValueError("start, dt_years and tick must be > 0")
        self._price = start
        self._sqrt_dt = math.sqrt(dt_years)
        self._dt = dt_years
        self._rng = rng
        self._tick = tick

    @classmethod
    def spx(cls, settings: SimulatorSettings, rng: np.random.Generator) -> UnderlyingPath:
        return cls(settings.spx_start, settings.dt_years, rng, TICK)

    @property
    def price(self) -> float:
        return self._price

    @property
    def price_ticks(self) -> int:
        return to_ticks(self._price, self._tick)

    def step(self, vol: float) -> float:
        """One tick: log-return N(-vol^2 dt / 2, vol^2 dt), so E[S] stays constant."""
        z = float(self._rng.standard_normal())
        self._price *= math.exp(-0.5 * vol * vol * self._dt + vol * self._sqrt_dt * z)
        self._price = max(self._price, self._tick)  # a price is at least one tick
        return self._price

    def apply_jump(self, direction: int, magnitude: float) -> float:
        """Move the price by `magnitude` (0.01 = 1%) up (+1) or down (-1)."""
        if direction not in (UP, DOWN):
            raise ValueError(f"jump direction must be +1 or -1, got {direction}")
        if not 0.0 <= magnitude < 1.0:
            raise ValueError(f"jump magnitude must be in [0, 1), got {magnitude}")
        # floored at one tick: two 99.9% crashes took it to 0, and pricing (log spot) died
        self._price = max(self._price * (1.0 + direction * magnitude), self._tick)
        return self._price


class SpyTracker:
    """SPY = SPX(lagged) / ratio * (1 + eps + eta).

    eps is an AR(1) tracking error with the configured half-life (in ticks) and stationary std;
    eta is independent per-tick noise. Both are exogenous to the SPX path, so the next values are
    drawn one tick early and `next_premium` lets the arbitrage signal be scored.
    """

    def __init__(
        self, settings: SimulatorSettings, rng: np.random.Generator, spx_start: float | None = None
    ) -> None:
        self._rng = rng
        self._ratio = settings.spy_ratio
        self._tick = TICK
        self._phi = 0.5 ** (1.0 / settings.tracking_half_life_ticks)
        self._innovation = settings.tracking_std * math.sqrt(1.0 - self._phi**2)
        self._noise = settings.tracking_noise_std
        start = settings.spx_start if spx_start is None else spx_start
        self._spx: deque[float] = deque([start], maxlen=settings.tracking_lag_ticks + 1)
        self._eps = settings.tracking_std * float(rng.standard_normal())
        self._eta = self._noise * float(rng.standard_normal())
        self._next_eps, self._next_eta = self._draw_next()
        self._price = self._spy()

    @property
    def price(self) -> float:
        return self._price

    @property
    def price_ticks(self) -> int:
        return to_ticks(self._price, self._tick)

    @property
    def tracking_error(self) -> float:
        """The latent AR(1) part eps."""
        return self._eps

    @property
    def premium(self) -> float:
        """SPY over its fair value from lagged SPX: eps + eta (0.001 = 0.1% rich)."""
        return self._eps + self._eta

    @property
    def next_premium(self) -> float:
        """The premium the next `step` will show (already drawn)."""
        return self._next_eps + self._next_eta

    def step(self, spx: float) -> float:
        """Feed this tick's SPX price; returns this tick's SPY price."""
        self._spx.append(spx)
        self._eps, self._eta = self._next_eps, self._next_eta
        self._next_eps, self._next_eta = self._draw_next()
        self._price = self._spy()
        return self._price

    def _draw_next(self) -> tuple[float, float]:
        z_eps, z_eta = (float(x) for x in self._rng.standard_normal(2))
        return self._phi * self._eps + self._innovation * z_eps, self._noise * z_eta

    def _spy(self) -> float:
        # at least one tick, as SPX: a crashed SPX made SPY round to 0 and pricing (log spot) die
        return max(self._spx[0] / self._ratio * (1.0 + self._eps + self._eta), self._tick)
