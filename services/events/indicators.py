"""Public technical indicators on one underlying: moving averages, RSI, realised volatility.

O(1) per tick with running sums over fixed windows, so publishing them every tick is cheap.
A figure is None until its window has filled: a half-window average would look like a signal.
"""

from __future__ import annotations

import math
from collections import deque

import msgspec

from common.market_settings import EventsSettings


class IndicatorSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    price: float
    sma: dict[int, float | None]  # window (ticks) -> simple moving average
    realised_vol: dict[int, float | None]  # window (ticks) -> annualised vol of log returns
    rsi: float | None  # Wilder's RSI in [0, 100]


class _Window:
    """Fixed-length window with a running sum."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: deque[float] = deque()
        self.total = 0.0

    def push(self, value: float) -> None:
        self.values.append(value)
        self.total += value
        if len(self.values) > self.size:
            self.total -= self.values.popleft()

    def mean(self) -> float | None:
        return self.total / self.size if len(self.values) == self.size else None


class _Rsi:
    """Wilder's smoothing: a simple mean of the first `period` moves, then exponential."""

    def __init__(self, period: int) -> None:
        self._period = period
        self._seen = 0
        self._gain = 0.0
        self._loss = 0.0

    def push(self, change: float) -> float | None:
        gain, loss = max(change, 0.0), max(-change, 0.0)
        n = self._period
        if self._seen < n:
            self._gain += gain / n
            self._loss += loss / n
        else:
            self._gain = (self._gain * (n - 1) + gain) / n
            self._loss = (self._loss * (n - 1) + loss) / n
        self._seen += 1
        return self.value()

    def value(self) -> float | None:
        if self._seen < self._period:
            return None
        if self._loss == 0.0:
            return 100.0 if self._gain > 0.0 else 50.0
        return 100.0 - 100.0 / (1.0 + self._gain / self._loss)


class Indicators:
    """Feed one price per tick; returns the indicator snapshot after it."""

    def __init__(self, settings: EventsSettings, ticks_per_year: float) -> None:
        if ticks_per_year <= 0.0:
            raise ValueError("ticks_per_year must be > 0")
        self._windows = tuple(sorted(set(settings.indicator_windows)))
        self._prices = {w: _Window(w) for w in self._windows}
        self._squared_returns = {w: _Window(w) for w in self._windows}
        self._rsi = _Rsi(settings.rsi_window)
        self._annualise = ticks_per_year
        self._last: float | None = None

    def update(self, price: float) -> IndicatorSnapshot:
        if not (math.isfinite(price) and price > 0.0):
            raise ValueError(f"price must be finite and > 0, got {price}")
        rsi = self._rsi.value()
        if self._last is not None:
            log_return = math.log(price / self._last)
            for window in self._squared_returns.values():
                window.push(log_return * log_return)
            rsi = self._rsi.push(price - self._last)
        self._last = price
        for window in self._prices.values():
            window.push(price)
        return IndicatorSnapshot(
            price=price,
            sma={w: self._prices[w].mean() for w in self._windows},
            realised_vol={w: self._vol(w) for w in self._windows},
            rsi=rsi,
        )

    def _vol(self, window: int) -> float | None:
        """Zero-mean estimator: at tick frequency the drift is noise, not signal."""
        mean_square = self._squared_returns[window].mean()
        if mean_square is None:
            return None
        return math.sqrt(max(mean_square, 0.0) * self._annualise)
