"""The dashboard's picture of the market, fed by the public frames the gateway already reads.

Pure state, no I/O: the dashboard feeds it frames and asks it for a snapshot (a new spectator)
or for what changed since the last update (everyone else). Book depth and quotes are read from
the gateway's own book mirror; only what the mirror does not keep is kept here: the underlying
path, fair values, news, the trade tape, the game clock and the regime history.

The volatility regime in force is secret (hedge funds pay for forecasts of it). It reaches the
gateway on the simulator's private tick state; a regime is shown only for ticks that are at
least `regime_delay_s` of game time old, so the dashboard tells history, never the present.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from common import topics
from common.config import Config
from common.messages import (
    DecodeError,
    FairValues,
    FeedSnapshot,
    News,
    SimState,
    TradePrint,
    UnderlyingTick,
    decode,
)
from services.gateway.views import iso, price

Data = dict[str, Any]
HISTORY = 20_000  # underlying points kept per symbol
SNAPSHOT_POINTS = 4_000  # at most this many per symbol go to a new spectator (evenly thinned)
TAPE = 300  # trades kept on the tape
TAPE_PER_INSTRUMENT = 60
NEWS_KEPT = 100
SPEED_WINDOW_S = 5.0  # wall seconds over which the game speed is estimated


class Board:
    def __init__(self, config: Config) -> None:
        sim = config.simulator
        self.tick_s = sim.tick_interval_s
        self.delay_ticks = math.ceil(config.gateway.regime_delay_s / sim.tick_interval_s)
        self.regime_names = sim.regime_names
        self.epoch = 0  # the simulator's run: a restart, which may have resumed the game
        self.game = 0  # the simulator's game: a new one starts its picture afresh
        self.news: deque[Data] = deque(maxlen=NEWS_KEPT)
        # trades are kept as they came and shaped (trade_row) only when shown: they come at the
        # exchange's full rate, spectators see at most the last TAPE per update
        self.tape: deque[TradePrint] = deque(maxlen=TAPE)
        self.by_instrument: dict[str, deque[TradePrint]] = {}
        self.dirty_books: set[str] = set()
        self.reset()

    def reset(self) -> None:
        """The simulator's part of the picture, afresh (a new game is a new price path).
        The tape and the news come from the matcher and the events service: they stay."""
        self.points: dict[str, deque[tuple[int, float]]] = {}  # symbol -> (game s, price)
        self.fair: dict[str, tuple[int, float]] = {}  # option -> (ticks, delta)
        self.spots: dict[str, int] = {}  # underlying -> ticks
        self.tick = 0
        self.game_s = 0.0
        self._clock: deque[tuple[float, float]] = deque()  # (wall s, game s) recent ticks
        self._segments: list[tuple[int, int]] = []  # (first tick, regime): secret until old
        self._released = 0  # regime ticks already published (horizon + 1)
        self._regimes_sent = 0  # _released as of the last update that carried regimes
        self.changed: dict[str, Any] = {"reset": True}  # everyone gets a new snapshot

    # --- feeding ---

    def feed(self, topic: bytes, payload: bytes) -> None:
        """One frame from a public feed (or the simulator's private state)."""
        if topic.startswith(topics.BOOK):
            self.dirty_books.add(topic[len(topics.BOOK):].decode(errors="replace"))
            return
        if topic == topics.STATUS:
            self.changed["status"] = True
            return
        if not topic.startswith((topics.TRADE, topics.UNDERLYING, topics.FAIR, topics.NEWS,
                                 topics.SIM_STATE)):
            return
        try:
            event = decode(payload)
        except DecodeError:
            return
        match event:
            case TradePrint():
                self._trade(event)
            case UnderlyingTick():
                self._underlying(event)
            case FairValues():
                self._fair(event)
            case News():
                self._news(event)
            case SimState():
                self._regime(event)

    def load(self, snapshot: FeedSnapshot) -> None:
        """The simulator's last prices, for what the live feed has not brought yet: started
        while the game is paused, a gateway would otherwise have no spot or fair value (and
        mark to last trades) until the game goes on."""
        if self.epoch and snapshot.epoch != self.epoch:  # the live feed is ahead: a restart
            return
        for event in snapshot.events.values():
            if isinstance(event, UnderlyingTick) and event.symbol not in self.spots:
                self._underlying(event)
            elif isinstance(event, FairValues) and not any(
                    iid in self.fair for iid, _, _ in event.values):
                self._fair(event)

    def _new_epoch(self, epoch: int, tick: int) -> None:
        """A new simulator epoch from `tick`: a restarted simulator. One that resumed its game
        goes on from its last checkpoint, maybe a little before what was shown: what lies after
        `tick` comes again, the same. A new game is told by its tick state (`_new_game`)."""
        if epoch != self.epoch and self.epoch:
            until = round(tick * self.tick_s)
            for points in self.points.values():
                while points and points[-1][0] > until:
                    points.pop()
            while self._segments and self._segments[-1][0] > tick:
                self._segments.pop()
            self._clock.clear()  # the game speed is measured afresh
        self.epoch = epoch

    def _new_game(self, game: int) -> None:
        """Another game (not one resumed): the simulator's picture starts afresh, its regime
        release horizon too (the old game's would show the new one's regime at once)."""
        if game != self.game:
            if self.game:
                self.reset()
            self.game = game

    def _underlying(self, t: UnderlyingTick) -> None:
        self._new_epoch(t.epoch, t.tick)
        self.spots[t.symbol] = t.price
        points = self.points.setdefault(t.symbol, deque(maxlen=HISTORY))
        game_s = round(t.game_s)  # chart times: whole game seconds, strictly increasing
        if points and points[-1][0] >= game_s:
            points.pop()
        value = float(price(t.price) or 0)
        points.append((game_s, value))
        self.changed.setdefault("underlying", {}).setdefault(t.symbol, []).append(
            (game_s, value))
        if t.tick != self.tick or not self._clock:
            self.tick, self.game_s = t.tick, t.game_s
            self._clock.append((time.monotonic(), t.game_s))
            while self._clock[-1][0] - self._clock[0][0] > SPEED_WINDOW_S:
                self._clock.popleft()
            self.changed["clock"] = True

    def _fair(self, f: FairValues) -> None:
        self._new_epoch(f.epoch, f.tick)
        changed = self.changed.setdefault("fair", {})
        for iid, ticks, delta in f.values:
            if self.fair.get(iid) != (ticks, delta):
                self.fair[iid] = (ticks, delta)
                changed[iid] = fair_view(ticks, delta)

    def _trade(self, t: TradePrint) -> None:
        self.tape.append(t)
        self.by_instrument.setdefault(t.instrument_id, deque(maxlen=TAPE_PER_INSTRUMENT)
                                      ).append(t)
        self.changed.setdefault("trades", []).append(t)

    def _news(self, n: News) -> None:
        row = {"news_id": n.news_id, "tick": n.tick, "game_s": n.game_s,
               "headline": n.headline, "direction": n.direction, "magnitude": n.magnitude,
               "jump": n.jump, "injected": n.injected, "time": iso(n.ts_ns)}
        self.news.append(row)
        self.changed.setdefault("news", []).append(row)

    def _regime(self, s: SimState) -> None:
        self._new_epoch(s.epoch, s.tick)
        self._new_game(s.game)
        if not s.window:
            return
        if self._segments and s.tick < self._segments[-1][0]:  # back in time, same epoch
            self._segments, self._released, self._regimes_sent = [], 0, 0
        regime = s.window[0]  # in force at s.tick; the rest of the window is the future
        if not self._segments or self._segments[-1][1] != regime:
            self._segments.append((s.tick, regime))
            self._forget_old_regimes()
        horizon = s.tick - self.delay_ticks  # the newest tick that may be shown
        if horizon + 1 > self._released:
            self._released = horizon + 1
            self.changed["regimes"] = True

    def _forget_old_regimes(self) -> None:
        """Only spans the chart can show: those after its oldest point (HISTORY per symbol).
        Kept for ever, every update carried all of them (48 KB after 8 game hours)."""
        starts = [points[0][0] for points in self.points.values() if points]
        if not starts:
            return
        oldest_tick = min(starts) / self.tick_s
        drop = 0
        while drop + 1 < len(self._segments) and self._segments[drop + 1][0] <= oldest_tick:
            drop += 1
        del self._segments[:drop]

    # --- reading ---

    def regimes(self, after: int = 0) -> Data:
        """Past regimes as [first game s, end game s, name], cut at the release horizon.

        With `after` (a horizon sent before, in ticks), only the spans that end later: the one
        in force then, grown, and any since. `from_s` says which: 0 is the whole list, else a
        reader replaces its spans from the first one's start on (they are append-only)."""
        horizon = self._released  # ticks before this one are old enough
        spans = []
        for i, (first, regime) in enumerate(self._segments):
            if first >= horizon:
                break
            end = self._segments[i + 1][0] if i + 1 < len(self._segments) else horizon
            if end <= after:
                continue
            spans.append((first * self.tick_s, min(end, horizon) * self.tick_s,
                          self.regime_names[regime] if regime < len(self.regime_names)
                          else str(regime)))
        return {"spans": spans, "from_s": after * self.tick_s,
                "until_s": max(horizon, 0) * self.tick_s,
                "delay_s": self.delay_ticks * self.tick_s}

    def clock(self) -> Data:
        speed = None
        if len(self._clock) >= 2:
            (w0, g0), (w1, g1) = self._clock[0], self._clock[-1]
            speed = round((g1 - g0) / (w1 - w0), 2) if w1 > w0 else None
            if time.monotonic() - w1 > max(2.0, 3 * (w1 - w0) / (len(self._clock) - 1)):
                speed = 0.0  # no tick for a while: paused (or the simulator is gone)
        return {"tick": self.tick, "game_s": self.game_s, "speed": speed}

    def history(self) -> dict[str, list[tuple[int, float]]]:
        out = {}
        for symbol, points in self.points.items():
            step = max(1, math.ceil(len(points) / SNAPSHOT_POINTS))
            thinned = list(points)[::-1][::step][::-1]  # the newest point always kept
            out[symbol] = thinned
        return out

    def snapshot(self) -> Data:
        return {"underlying": self.history(), "spots": self.spot_view(),
                "fair": {iid: fair_view(*v) for iid, v in self.fair.items()},
                "news": list(self.news), "tape": [trade_row(t) for t in self.tape],
                "clock": self.clock(),
                "regimes": self.regimes()}

    def spot_view(self) -> dict[str, Any]:
        return {symbol: price(ticks) for symbol, ticks in self.spots.items()}

    def take_changes(self) -> tuple[dict[str, Any], set[str]]:
        """What changed since the last call (sections as the spectator stream sends them),
        and the instruments whose book changed."""
        changed, self.changed = self.changed, {}
        books, self.dirty_books = self.dirty_books, set()
        if changed.pop("clock", None):
            changed["clock"] = self.clock()
            changed["spots"] = self.spot_view()
        if changed.pop("regimes", None):  # only what is new: the whole list is ~35 KB late on
            changed["regimes"] = self.regimes(after=self._regimes_sent)
            self._regimes_sent = self._released
        if "trades" in changed:  # older ones would scroll off the tape at once
            changed["trades"] = [trade_row(t) for t in changed["trades"][-TAPE:]]
        return changed, books

    def trades_of(self, instrument_id: str) -> list[Data]:
        """The instrument's recent trades, newest first."""
        return [trade_row(t) for t in reversed(self.by_instrument.get(instrument_id, ()))]


def trade_row(t: TradePrint) -> Data:
    return {"trade_id": t.trade_id, "instrument_id": t.instrument_id, "price": price(t.price),
            "quantity": t.quantity, "aggressor": t.aggressor, "time": iso(t.ts_ns)}


def fair_view(ticks: int, delta: float) -> Data:
    return {"fair": price(ticks), "delta": round(delta, 3)}
