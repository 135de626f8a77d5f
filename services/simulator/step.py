"""The simulator's per-tick logic as one pure object: shocks and controls in, a tick out.

No sockets, no clock: the service paces `advance` and publishes what it returns, and the
determinism test drives the very same object in a loop. All randomness comes from the seeded
streams in `common.rng`, so the same seed and the same inputs give the same ticks, bit for bit.

Order within tick t: the regime chain steps to r_t (from the game master's override if one is
set; by the news matrix if a regime-shift news is due at t); news jumps due at t apply; SPX
makes its GBM step at r_t's volatility; SPY follows SPX with its lag; fair values, marks and
retail orders are priced from the results.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from common.config import Config
from common.instruments import build_instruments
from common.market_settings import SimulatorSettings
from common.messages import FairValues, NewsShock, SimState, UnderlyingTick
from common.money import TICK
from common.rng import game_streams
from services.simulator.models import DOWN, UP, RegimeChain, SpyTracker, UnderlyingPath
from services.simulator.pricing import OptionSpec, bs_delta, fair_value_ticks, parse_option_id
from services.simulator.retail import OrderIntent, RetailFlow

SPX, SPY = "SPX", "SPY"
SYMBOLS = (SPX, SPY)
APPLIED_KEPT = 16  # recent applied news repeated in every SimState, so one lost frame loses none
JUMP_SIGN = {"up": UP, "down": DOWN}


class TickOutput(NamedTuple):
    tick: int
    underlyings: list[UnderlyingTick]
    fair_values: list[FairValues]
    state: SimState  # for the events service only: it holds the regime
    marks: list[tuple[str, int]]  # (instrument_id, ticks) changed since the last marks
    orders: list[tuple[str, OrderIntent]]  # (house team id, retail order)
    expiry: dict[str, int]  # at the front expiry (and on resuming after it): settlement prices


class SimStep:
    def __init__(
        self,
        settings: SimulatorSettings,
        instruments: Iterable[str],
        house_teams: Sequence[str],
        streams: Mapping[str, np.random.Generator],
    ) -> None:
        self._s = settings
        self._chain = RegimeChain(settings, streams["regime"])
        self._spx = UnderlyingPath.spx(settings, streams["spx"])
        self._spy = SpyTracker(settings, streams["spy"])
        self._known = set(instruments)
        specs = [spec for iid in self._known if (spec := parse_option_id(iid)) is not None]
        self._chains: dict[str, list[OptionSpec]] = {}
        for spec in sorted(specs, key=lambda o: (o.underlying, o.strike, o.kind, o.expiry or "")):
            if spec.underlying in SYMBOLS:
                self._chains.setdefault(spec.underlying, []).append(spec)
        option_ids = [spec.instrument_id for chain in self._chains.values() for spec in chain]
        self._teams = tuple(house_teams)
        self._retail = (RetailFlow(settings, streams["retail"], option_ids)
                        if option_ids and self._teams else None)
        self._house_rng = streams["house"]
        self.tick = 0
        self.game = 0  # the game's id (the service sets it when the game starts; see SimState)
        self.late_shocks = 0  # shocks that arrived after their tick (applied at once)
        self._pending: dict[int, NewsShock] = {}
        self._news_epoch = 0
        self._applied: deque[tuple[int, int]] = deque(maxlen=APPLIED_KEPT)
        self._applied_ids: set[int] = set()
        self._forced: int | None = None
        self._marks: dict[str, int] = {}
        self._horizon: int | None = None  # every scheduled shock up to here is in: not past it
        self.settled: dict[str, int] = {}  # underlying -> its price at the front expiry

    @property
    def can_advance(self) -> bool:
        """False at a scheduled news tick until the next scheduled shock is in: the price path
        never depends on how fast the events service answers."""
        return self._horizon is None or self.tick < self._horizon

    def release(self) -> None:
        """Run on without waiting for the next shock (the events service is gone)."""
        self._horizon = None

    @property
    def regime_names(self) -> tuple[str, ...]:
        return self._s.regime_names

    def add_shock(self, shock: NewsShock) -> bool:
        """Hold a news shock for its tick; False for one already held or applied."""
        if shock.news_epoch != self._news_epoch:  # a new news schedule numbers news afresh
            self._news_epoch = shock.news_epoch
            self._pending.clear()
            self._applied.clear()
            self._applied_ids.clear()
            self._horizon = None
        if shock.news_id in self._pending or shock.news_id in self._applied_ids:
            return False
        self._pending[shock.news_id] = shock
        if shock.tick > self.tick:  # a scheduled one, in time: nothing else is due before it
            self._horizon = max(self._horizon or 0, shock.tick)
        return True

    def force_regime(self, regime: int) -> None:
        """Put `regime` in force from the next tick on (the game master's override)."""
        if not 0 <= regime < len(self._s.regime_vols):
            raise ValueError(f"regime {regime} out of range")
        self._forced = regime

    def start(self) -> TickOutput:
        """The prices where the game stands, with no move and no retail flow: the opening at
        tick 0, or where a resumed game stopped (services/simulator/checkpoint.py)."""
        return self._output(retail=False)

    def advance(self) -> TickOutput:
        self.tick += 1
        due = sorted((s for s in self._pending.values() if s.tick <= self.tick),
                     key=lambda s: (s.tick, s.news_id))
        # a news shift replaces the tick's own switch (GAME.md); the operator's regime is in
        # force from this tick, and a news shift starts from it
        self._chain.step(shift=any(s.regime_shift for s in due), start=self._forced)
        self._forced = None
        self._apply_jumps(due)
        self._spx.step(self._chain.vol)
        self._spy.step(self._spx.price)
        return self._output(retail=True)

    def _apply_jumps(self, due: list[NewsShock]) -> None:
        for shock in due:
            del self._pending[shock.news_id]
            if 0 < shock.tick < self.tick:
                self.late_shocks += 1
            sign = JUMP_SIGN.get(shock.direction)
            if shock.jump and sign is not None and 0.0 <= shock.magnitude < 1.0:
                self._spx.apply_jump(sign, shock.magnitude)
            self._applied.append((shock.news_id, self.tick))
            self._applied_ids.add(shock.news_id)

    def _window(self) -> tuple[int, ...]:
        """The regimes ahead as the shocks held make them: a held shock hits at its tick, or
        at the next one if that is past (the game master's next regime is not foreseen)."""
        shifts = {max(s.tick - self.tick, 1) for s in self._pending.values() if s.regime_shift}
        return self._chain.window(shifts)

    def _output(self, retail: bool) -> TickOutput:
        s, tick = self._s, self.tick
        game_s = tick * s.tick_interval_s
        years = max(s.option_expiry_s - game_s, 0.0) / s.year_s
        spots = {SPX: self._spx.price_ticks, SPY: self._spy.price_ticks}
        underlyings = [UnderlyingTick(symbol=sym, price=price, tick=tick, game_s=game_s)
                       for sym, price in spots.items()]
        # European, cash-settled (GAME.md): at the expiry the options' values are fixed at the
        # underlying's price then, their books close, and retail flow (options only) stops
        announce = years == 0.0 and not self.settled and bool(self._chains)
        if announce:
            self.settled = {u: spots[u] for u in self._chains}
        fair = [self._fair_values(u, self.settled.get(u, spots[u]), years, game_s)
                for u in self._chains]
        marks = self._changed_marks(spots, fair) if tick % s.mark_every_ticks == 0 else []
        orders = self._retail_orders(spots, years) if retail and not self.settled else []
        expiry = ({iid: ticks for values in fair for iid, ticks, _ in values.values}
                  if announce or (self.settled and not retail) else {})  # again on resuming
        return TickOutput(tick, underlyings, fair, self._state(spots, game_s), marks, orders,
                          expiry)

    def _fair_values(self, underlying: str, spot_ticks: int, years: float,
                     game_s: float) -> FairValues:
        spot, vol, tick_size = spot_ticks * TICK, self._chain.vol, TICK
        values = [
            (spec.instrument_id, fair_value_ticks(spec, spot, years, vol, tick_size),
             round(bs_delta(spot, spec.strike, years, vol, spec.is_call), 6))
            for spec in self._chains[underlying]
        ]
        return FairValues(underlying=underlying, tick=self.tick, game_s=game_s, spot=spot_ticks,
                          years_to_expiry=years, values=values)

    def _changed_marks(self, spots: Mapping[str, int],
                       fair: Sequence[FairValues]) -> list[tuple[str, int]]:
        """Marks that changed: 0 included (a worthless option), as the leaderboard values it."""
        candidates = [*spots.items(), *((iid, ticks) for fv in fair for iid, ticks, _ in fv.values)]
        marks = [(iid, ticks) for iid, ticks in candidates
                 if ticks >= 0 and iid in self._known and self._marks.get(iid) != ticks]
        self._marks.update(marks)
        return marks

    def _retail_orders(self, spots: Mapping[str, int],
                       years: float) -> list[tuple[str, OrderIntent]]:
        if self._retail is None:
            return []
        prices = {sym: ticks * TICK for sym, ticks in spots.items()}
        intents = self._retail.generate(prices, self._chain.vol, years)
        teams = self._teams
        return [(teams[int(self._house_rng.integers(len(teams)))], intent) for intent in intents]

    def _state(self, spots: Mapping[str, int], game_s: float) -> SimState:
        return SimState(
            tick=self.tick, game_s=game_s, prices=dict(spots), window=list(self._window()),
            premium=self._spy.premium, next_premium=self._spy.next_premium,
            news_epoch=self._news_epoch, news_applied=list(self._applied),
            news_pending=sorted(self._pending), game=self.game,
        )


def house_teams(config: Config) -> list[str]:
    """The matcher creates one house team per non-registrable role, with id ROLE.upper()."""
    return [role.upper() for role, rules in config.game.roles.items() if not rules.registrable]


def build_step(config: Config) -> SimStep:
    return SimStep(config.simulator, build_instruments(config.game), house_teams(config),
                   game_streams(config.game.seed))
