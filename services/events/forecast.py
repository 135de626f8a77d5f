"""The hedge funds' volatility forecast: regime changes announced 1-5 ticks ahead.

The forecaster is an oracle with calibrated noise. Each tick it is shown the simulator's
pre-drawn regime window, so it knows every real change before it happens; it then lies in a
controlled way, which makes its accuracy a configured number that a long seeded run can measure.

Definitions (what a hedge fund experiences):
- a forecast names a target tick and the regime that will start there; it is right when the
  regime changes to exactly that one at exactly that tick;
- `forecast_accuracy` is the share of published forecasts that are right;
- of the wrong ones, `forecast_false_alarm_share` are false alarms (no change at the target
  tick), the rest name the wrong new regime of a real change.
Every real change gets one forecast, so with accuracy a, false-alarm share s and w = 1 - a:
P(right | real change) = a / (1 - s w) and false alarms per real change = s w / (1 - s w).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import msgspec
import numpy as np

from common.market_settings import EventsSettings
from common.rng import KeyedDraws


class VolForecast(msgspec.Struct, frozen=True, kw_only=True):
    announce_tick: int
    target_tick: int  # the first tick the new regime is expected to be in force
    regime: int  # index of the expected regime
    vol: float  # its annualised volatility

    @property
    def lead_ticks(self) -> int:
        return self.target_tick - self.announce_tick


def change_probability(matrix: Sequence[Sequence[float]]) -> float:
    """Long-run share of ticks on which the regime changes (stationary distribution)."""
    p = np.asarray(matrix, dtype=float)
    n = p.shape[0]
    system = p.T - np.eye(n)
    system[-1, :] = 1.0
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    stationary = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return float(np.clip(stationary @ (1.0 - np.diag(p)), 0.0, 1.0))


def forecast_is_right(forecast: VolForecast, path: Sequence[int]) -> bool:
    """Score against the realised regimes, `path[t]` being the regime in force at tick t."""
    target = forecast.target_tick
    return path[target] == forecast.regime and path[target - 1] != forecast.regime


class VolForecaster:
    """Schedules forecasts from the regime window; call `observe` once per tick, in order."""

    def __init__(
        self,
        settings: EventsSettings,
        rng: np.random.Generator,
        regime_matrix: Sequence[Sequence[float]],
        regime_vols: Sequence[float],
    ) -> None:
        self._draws = KeyedDraws(rng)  # by target tick
        self._vols = tuple(regime_vols)
        self._lead_min = settings.forecast_lead_min_ticks
        self._lead_max = settings.forecast_lead_max_ticks
        share = settings.forecast_false_alarm_share  # 1 with two regimes (config checks it)
        wrong = 1.0 - settings.forecast_accuracy
        self._p_right = settings.forecast_accuracy / (1.0 - share * wrong)
        false_per_change = share * wrong / (1.0 - share * wrong)
        p_change = change_probability(regime_matrix)
        self._p_false = (
            min(1.0, false_per_change * p_change / (1.0 - p_change)) if p_change < 1.0 else 0.0
        )
        self._examined_to: int | None = None
        self._pending: list[tuple[int, int, VolForecast]] = []
        self._seq = 0

    def observe(self, tick: int, window: Sequence[int]) -> list[VolForecast]:
        """`window[k]` is the regime in force at tick + k; returns the forecasts due now."""
        horizon = tick + len(window) - 1
        start = tick + 1 if self._examined_to is None else max(self._examined_to + 1, tick + 1)
        for target in range(start, horizon + 1):
            self._examine(tick, target, window[target - tick - 1], window[target - tick])
        self._examined_to = horizon if self._examined_to is None else max(
            self._examined_to, horizon
        )
        due = []
        while self._pending and self._pending[0][0] <= tick:
            due.append(heapq.heappop(self._pending)[2])
        return due

    def _examine(self, now: int, target: int, before: int, after: int) -> None:
        max_lead = min(self._lead_max, target - now)
        if max_lead < self._lead_min:
            return
        rng = self._draws.at(target)
        if before != after:
            right = float(rng.random()) < self._p_right
            regime = after if right else self._other_regime(rng, before, after)
        elif float(rng.random()) < self._p_false:
            regime = self._other_regime(rng, before, before)
        else:
            return
        lead = int(rng.integers(self._lead_min, max_lead + 1))
        self._schedule(target - lead, target, regime)

    def _other_regime(self, rng: np.random.Generator, *excluded: int) -> int:
        choices = [i for i in range(len(self._vols)) if i not in excluded]
        return choices[int(rng.integers(len(choices)))]

    def _schedule(self, announce: int, target: int, regime: int) -> None:
        forecast = VolForecast(
            announce_tick=announce, target_tick=target, regime=regime, vol=self._vols[regime]
        )
        heapq.heappush(self._pending, (announce, self._seq, forecast))
        self._seq += 1
