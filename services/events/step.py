"""The events service's per-tick logic as one pure object: a simulator tick in, events out.

The simulator's tick stream is the game clock here too, so signals line up with the regime
window and prices of the same tick. News reach the price path through shocks sent ahead of
their tick: the next scheduled item is realised as soon as the previous one is published (at
least the minimum news gap ahead), and a shock is re-sent until the simulator lists it, so a
lost frame delays nothing. News are published once the simulator reports them applied, at the
tick they hit the market.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import msgspec
import numpy as np

from common import topics
from common.config import Config, RoleConfig
from common.market_settings import EventsSettings, Headline, SimulatorSettings
from common.messages import (
    MAX_HEADLINE,
    Event,
    FeedEvent,
    IndicatorSignal,
    InjectNews,
    News,
    NewsShock,
    SentimentSignal,
    SimState,
    TrackingErrorSignal,
    VolForecastSignal,
)
from common.money import TICK
from common.rng import KeyedDraws, game_streams
from services.events.models import (
    Indicators,
    IndicatorSnapshot,
    NewsEvent,
    NewsScheduler,
    Sentiment,
    TrackingSignal,
    VolForecaster,
)

VOL_FORECAST = "volatility_forecast"
TRACKING_ERROR = "tracking_error"
RESEND_TICKS = 3  # a shock the simulator does not list after this many ticks is sent again

Out = list[tuple[bytes, Event]]
PublicOut = list[tuple[bytes, FeedEvent]]


class EventsOutput(NamedTuple):
    public: PublicOut  # news, sentiment, indicators: for everyone
    private: Out  # role signals (signal.<role>) and shocks for the simulator


class _Pending(NamedTuple):
    event: NewsEvent
    injected: bool


class EventsStep:
    def __init__(self, events: EventsSettings, sim: SimulatorSettings,
                 roles: Mapping[str, RoleConfig], streams: Mapping[str, np.random.Generator],
                 epoch: int = 0) -> None:
        self._e, self._sim, self.epoch = events, sim, epoch
        self._news_rng = streams["news"]
        self._scheduler = NewsScheduler(events, self._news_rng)
        self._forecaster = VolForecaster(events, streams["forecast"], sim.tick_regime_matrix(),
                                         sim.regime_vols)
        self._tracking = TrackingSignal(events, streams["tracking"])
        self._sentiment = Sentiment(events)
        self._indicators: dict[str, Indicators] = {}
        self._topics = {kind: [topics.signal(r) for r, rules in sorted(roles.items())
                               if kind in rules.signals] for kind in (VOL_FORECAST, TRACKING_ERROR)}
        self._pending: dict[int, _Pending] = {}  # realised, not yet seen applied
        self._sent: dict[int, int] = {}  # news_id -> tick its shock was last sent
        self._scheduled: int | None = None  # id of the scheduled item in flight
        self.tick = -1

    @property
    def game_s(self) -> float:
        return max(self.tick, 0) * self._sim.tick_interval_s

    def on_state(self, state: SimState) -> EventsOutput:
        """One simulator tick; ticks at or before the last one seen are ignored."""
        if state.tick <= self.tick:
            return EventsOutput([], [])
        elapsed = (state.tick - max(self.tick, 0)) * self._sim.tick_interval_s
        if self.tick < 0 and state.game_s >= self._scheduler.next_due_s:  # joined mid-game:
            # news of its own from this tick (from the stream's start, every restart told the
            # same news at the same distance: one logged restart foretold all later ones)
            self._news_rng = KeyedDraws(self._news_rng).at(state.tick)
            self._scheduler = NewsScheduler(self._e, self._news_rng, start_s=state.game_s)
        self.tick = state.tick
        self._sentiment.advance(elapsed)
        public = self._news(state)
        if self._scheduled is None:
            self._schedule_next()
        private = self._shocks(state) + self._role_signals(state)
        public += self._public_signals(state)
        return EventsOutput(public, private)

    def inject(self, request: InjectNews) -> NewsEvent:
        """Realise operator news now; its shock goes out with the next output. Raises
        ValueError for a row that does not validate."""
        event = self._scheduler.inject(self._headline(request), self.game_s)
        self._pending[event.index] = _Pending(event, True)
        return event

    def due_shocks(self) -> Out:
        """Shocks never sent yet (an injection), without waiting for the next tick."""
        return [self._shock(p) for i, p in sorted(self._pending.items()) if i not in self._sent]

    def _headline(self, request: InjectNews) -> Headline:
        if not 1 <= len(request.headline) <= MAX_HEADLINE:  # the admin API's bound, for any sender
            raise ValueError(f"a headline has 1 to {MAX_HEADLINE} characters")
        row = next((h for h in self._e.headlines if h.headline == request.headline), None)
        fields = {"headline": request.headline, "p_regime_shift": 0.0, "p_jump": 0.0,
                  "direction": "none"} if row is None else msgspec.structs.asdict(row)
        if request.direction is not None:
            fields["direction"] = request.direction
        if request.magnitude is not None:
            fields["magnitude_min"] = fields["magnitude_max"] = request.magnitude
        elif request.jump and (row is None or row.magnitude_max == 0):  # a jump must move
            fields["magnitude_min"] = self._sim.jump_min
            fields["magnitude_max"] = self._sim.jump_max
        if request.regime_shift is not None:
            fields["p_regime_shift"] = float(request.regime_shift)
        if request.jump is not None:
            fields["p_jump"] = float(request.jump)
        return Headline(**fields)

    def _schedule_next(self) -> None:
        tick_s = self._sim.tick_interval_s
        due_tick = max(math.ceil(self._scheduler.next_due_s / tick_s - 1e-9), self.tick + 1)
        event = self._scheduler.poll(max(due_tick * tick_s, self._scheduler.next_due_s))
        assert event is not None, "polled at its due time"
        self._pending[event.index] = _Pending(event, False)
        self._scheduled = event.index

    def _news(self, state: SimState) -> PublicOut:
        if state.news_epoch != self.epoch:
            return []
        out: PublicOut = []
        for news_id, tick in state.news_applied:
            pending = self._pending.pop(news_id, None)
            if pending is None:
                continue
            self._sent.pop(news_id, None)
            if news_id == self._scheduled:
                self._scheduled = None
            event = pending.event
            self._sentiment.add(event)
            out.append((topics.NEWS, News(
                news_id=news_id, tick=tick, game_s=tick * self._sim.tick_interval_s,
                headline=event.headline, direction=event.direction, magnitude=event.magnitude,
                jump=event.jump, injected=pending.injected)))
        return out

    def _shocks(self, state: SimState) -> Out:
        held = set(state.news_pending) if state.news_epoch == self.epoch else set()
        return [self._shock(p) for i, p in sorted(self._pending.items())
                if i not in held and self.tick - self._sent.get(i, -RESEND_TICKS) >= RESEND_TICKS]

    def _shock(self, pending: _Pending) -> tuple[bytes, Event]:
        event = pending.event
        self._sent[event.index] = self.tick
        tick = 0 if pending.injected else round(event.time_s / self._sim.tick_interval_s)
        return topics.NEWS_SHOCK, NewsShock(
            news_epoch=self.epoch, news_id=event.index, tick=tick, direction=event.direction,
            magnitude=event.magnitude, regime_shift=event.regime_shift, jump=event.jump)

    def _role_signals(self, state: SimState) -> Out:
        out: Out = []
        names = self._sim.regime_names
        for f in self._forecaster.observe(state.tick, state.window):
            signal = VolForecastSignal(tick=f.announce_tick, target_tick=f.target_tick,
                                       lead_ticks=f.lead_ticks, regime=names[f.regime], vol=f.vol)
            out += _to_topics(self._topics[VOL_FORECAST], signal)
        reading = self._tracking.evaluate(state.tick, state.premium, state.next_premium)
        if reading.direction is not None:
            signal2 = TrackingErrorSignal(tick=state.tick, error=reading.error,
                                          direction=reading.direction,
                                          threshold=self._e.arb_threshold)
            out += _to_topics(self._topics[TRACKING_ERROR], signal2)
        return out

    def _public_signals(self, state: SimState) -> PublicOut:
        game_s = state.tick * self._sim.tick_interval_s
        out: PublicOut = [(topics.SENTIMENT, SentimentSignal(tick=state.tick, game_s=game_s,
                                                       score=self._sentiment.value))]
        for symbol, ticks in sorted(state.prices.items()):
            if symbol not in self._indicators:
                self._indicators[symbol] = Indicators(self._e, self._sim.ticks_per_year)
            snap = self._indicators[symbol].update(ticks * TICK)
            out.append((topics.indicators(symbol), _indicator_signal(symbol, ticks, state, snap,
                                                                     game_s)))
        return out


def _indicator_signal(symbol: str, ticks: int, state: SimState, snap: IndicatorSnapshot,
                      game_s: float) -> IndicatorSignal:
    return IndicatorSignal(
        symbol=symbol, tick=state.tick, game_s=game_s, price=ticks,
        sma={str(w): v for w, v in snap.sma.items()},
        realised_vol={str(w): v for w, v in snap.realised_vol.items()}, rsi=snap.rsi)


def _to_topics(role_topics: list[bytes], signal: Event) -> Out:
    """One copy per role topic: each carries its own topic's seq."""
    return [(topic, msgspec.structs.replace(signal)) for topic in role_topics]


def build_step(config: Config, epoch: int = 0) -> EventsStep:
    return EventsStep(config.events, config.simulator, config.game.roles,
                      game_streams(config.game.seed), epoch)
