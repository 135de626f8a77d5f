"""Pure event models: the news schedule, sentiment and the arbitrage tracking signal.

Driven by explicit game time / tick numbers and a seeded `numpy.random.Generator`, never by a
clock, so a seeded game replays the same news. The volatility forecaster lives in
`forecast.py` and the technical indicators in `indicators.py`; all are re-exported here.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from itertools import accumulate

import msgspec
import numpy as np

from common.market_settings import EventsSettings, Headline
from common.rng import KeyedDraws
from services.events.forecast import VolForecast, VolForecaster, forecast_is_right
from services.events.indicators import Indicators, IndicatorSnapshot

__all__ = [
    "IndicatorSnapshot",
    "Indicators",
    "NewsEvent",
    "NewsScheduler",
    "Sentiment",
    "TrackingReading",
    "TrackingSignal",
    "VolForecast",
    "VolForecaster",
    "direction_sign",
    "forecast_is_right",
    "tracking_call_is_right",
]

def direction_sign(direction: str) -> int:
    """+1 / -1 / 0 for "up" / "down" / "none"."""
    if direction not in ("up", "down", "none"):
        raise ValueError(f"unknown direction {direction!r}")
    return {"up": 1, "down": -1}.get(direction, 0)


class NewsEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A realised headline: what the simulator must do and what everyone is told."""

    index: int  # 0, 1, 2... per scheduler
    time_s: float  # game time of publication
    headline: str
    direction: str  # "up" | "down" | "none"
    magnitude: float  # fraction of the price; the jump size if `jump`
    regime_shift: bool
    jump: bool


class NewsScheduler:
    """Poisson news: gaps are min_gap + exponential, so the mean gap is exactly the configured one.

    Poll with the game time; an event is published at the poll time and the next one is
    scheduled from there, so published gaps never fall below the minimum.
    """

    def __init__(
        self, settings: EventsSettings, rng: np.random.Generator, start_s: float = 0.0
    ) -> None:
        self._s = settings
        self._rng = rng
        self._count = 0
        self._cum_weights = list(accumulate(h.weight for h in settings.headlines))
        self._next_due = start_s + self._gap()

    @property
    def next_due_s(self) -> float:
        return self._next_due

    def poll(self, now_s: float) -> NewsEvent | None:
        """The event due at or before `now_s`, if any."""
        if now_s < self._next_due:
            return None
        headline = self._pick_headline()
        return self._publish(headline, now_s)

    def inject(self, headline: Headline, now_s: float) -> NewsEvent:
        """Operator news: realised like a scheduled one; the next arrival keeps the min gap."""
        event = self._realise(headline, now_s)
        self._next_due = max(self._next_due, now_s + self._s.news_min_gap_s)
        return event

    def _publish(self, headline: Headline, now_s: float) -> NewsEvent:
        event = self._realise(headline, now_s)
        self._next_due = now_s + self._gap()
        return event

    def _realise(self, headline: Headline, now_s: float) -> NewsEvent:
        rng = self._rng
        regime_shift = float(rng.random()) < headline.p_regime_shift
        jump = float(rng.random()) < headline.p_jump
        magnitude = float(rng.uniform(headline.magnitude_min, headline.magnitude_max))
        event = NewsEvent(
            index=self._count,
            time_s=now_s,
            headline=headline.headline,
            direction=headline.direction,
            magnitude=magnitude,
            regime_shift=regime_shift,
            jump=jump,
        )
        self._count += 1
        return event

    def _gap(self) -> float:
        spread = self._s.news_mean_gap_s - self._s.news_min_gap_s
        extra = float(self._rng.exponential(spread)) if spread > 0.0 else 0.0
        return self._s.news_min_gap_s + extra

    def _pick_headline(self) -> Headline:
        u = float(self._rng.random()) * self._cum_weights[-1]
        index = min(bisect_right(self._cum_weights, u), len(self._cum_weights) - 1)
        return self._s.headlines[index]


class Sentiment:
    """Exponentially decaying sum of news direction * magnitude, in percent points."""

    def __init__(self, settings: EventsSettings) -> None:
        self._half_life = settings.sentiment_half_life_s
        self._value = 0.0

    @property
    def value(self) -> float:
        return self._value

    def advance(self, elapsed_s: float) -> float:
        """Decay by `elapsed_s` of game time."""
        if elapsed_s < 0.0:
            raise ValueError("time cannot run backwards")
        self._value *= 0.5 ** (elapsed_s / self._half_life)
        return self._value

    def add(self, event: NewsEvent) -> float:
        self._value += direction_sign(event.direction) * event.magnitude * 100.0
        return self._value


class TrackingReading(msgspec.Struct, frozen=True, kw_only=True):
    """The arbitrage desk's view: the SPY premium and, above the threshold, a direction call.

    `direction` "up" says the premium will rise next tick (SPY outperforms SPX/ratio), "down"
    that it will fall; None below the threshold.
    """

    tick: int
    error: float
    direction: str | None


class TrackingSignal:
    """Calls the next move of the tracking error, right with probability `arb_accuracy`.

    It is an oracle with noise: the caller passes the pre-drawn next error, and the call is the
    truth or, with probability 1 - accuracy, its opposite. That makes accuracy exact and testable.
    """

    def __init__(self, settings: EventsSettings, rng: np.random.Generator) -> None:
        self._threshold = settings.arb_threshold
        self._accuracy = settings.arb_accuracy
        self._draws = KeyedDraws(rng)  # by tick

    def evaluate(self, tick: int, error: float, next_error: float) -> TrackingReading:
        if not math.isfinite(error) or abs(error) <= self._threshold:
            return TrackingReading(tick=tick, error=error, direction=None)
        rises = next_error > error
        if float(self._draws.at(tick).random()) >= self._accuracy:
            rises = not rises
        return TrackingReading(tick=tick, error=error, direction="up" if rises else "down")


def tracking_call_is_right(reading: TrackingReading, next_error: float) -> bool | None:
    """Score a reading against what happened; None when no call was made."""
    if reading.direction is None:
        return None
    return (next_error > reading.error) == (reading.direction == "up")
