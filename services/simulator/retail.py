"""Retail order flow: noise traders with no edge by construction.

Every random choice (side, size, order type, limit offset) is independent of the fair value, and
limit prices scatter symmetrically around it, so trading against the flow is worth the spread
and nothing more.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate

import msgspec
import numpy as np

from common.market_settings import SimulatorSettings
from services.simulator.pricing import CALL, PUT, OptionSpec, bs_price, parse_option_id, to_ticks

BUY = "buy"
SELL = "sell"
MARKET = "market"
LIMIT = "limit"


class OrderIntent(msgspec.Struct, frozen=True, kw_only=True):
    """An order the house retail team wants to send; `fair` is the mark it was priced from."""

    instrument_id: str
    side: str  # "buy" | "sell"
    quantity: int
    order_type: str  # "market" | "limit"
    price: int | None  # ticks; None for market orders
    fair: int  # ticks


class RetailFlow:
    """Poisson number of option orders per tick on near-the-money strikes."""

    def __init__(
        self, settings: SimulatorSettings, rng: np.random.Generator, instruments: Sequence[str]
    ) -> None:
        self._s = settings
        self._rng = rng
        self._chains: dict[tuple[str, str], list[OptionSpec]] = {}
        for instrument_id in instruments:
            spec = parse_option_id(instrument_id)
            if spec is not None:
                self._chains.setdefault((spec.underlying, spec.kind), []).append(spec)
        self._underlyings = sorted({underlying for underlying, _ in self._chains})
        if not self._underlyings:
            raise ValueError("retail flow needs at least one option instrument")

    @property
    def underlyings(self) -> tuple[str, ...]:
        return tuple(self._underlyings)

    def generate(
        self,
        spots: Mapping[str, float],
        vol: float,
        years_to_expiry: float | Mapping[str, float],
    ) -> list[OrderIntent]:
        """This tick's orders; `years_to_expiry` is one figure or one per instrument id."""
        count = int(self._rng.poisson(self._s.retail_orders_per_tick))
        intents = []
        for _ in range(count):
            spec = self._pick_option(spots)
            years = (
                years_to_expiry
                if isinstance(years_to_expiry, float | int)
                else years_to_expiry[spec.instrument_id]
            )
            fair = bs_price(spots[spec.underlying], spec.strike, years, vol, spec.is_call)
            intents.append(self._order(spec, fair))
        return intents

    def _pick_option(self, spots: Mapping[str, float]) -> OptionSpec:
        underlying = self._underlyings[int(self._rng.integers(len(self._underlyings)))]
        wants_call = float(self._rng.random()) < self._s.retail_call_share
        kind = CALL if wants_call else PUT
        chain = self._chains.get((underlying, kind)) or self._chains[
            (underlying, PUT if wants_call else CALL)
        ]
        return chain[self._pick_strike(chain, spots[underlying])]

    def _pick_strike(self, chain: Sequence[OptionSpec], spot: float) -> int:
        """Gaussian weights around spot, so at-the-money strikes trade most."""
        width = self._s.retail_strike_width * spot
        weights = [math.exp(-0.5 * ((spec.strike - spot) / width) ** 2) for spec in chain]
        cumulative = list(accumulate(weights))
        total = cumulative[-1]
        u = float(self._rng.random())
        if total <= 0.0:  # spot far outside the chain: the nearest strike
            return min(range(len(chain)), key=lambda i: abs(chain[i].strike - spot))
        return min(bisect_right(cumulative, u * total), len(chain) - 1)

    def _order(self, spec: OptionSpec, fair: float) -> OrderIntent:
        s = self._s
        side = BUY if float(self._rng.random()) < s.retail_buy_share else SELL
        is_market = float(self._rng.random()) < s.retail_market_share
        size = round(float(self._rng.exponential(s.retail_size_mean)))
        quantity = min(max(size, s.retail_size_min), s.retail_size_max)
        fair_ticks = to_ticks(fair)
        price: int | None = None
        if not is_market:
            spread = max(s.retail_limit_offset * fair_ticks, 1.0)
            offset = round(spread * float(self._rng.standard_normal()))
            price = max(fair_ticks + offset, 1)
        return OrderIntent(
            instrument_id=spec.instrument_id,
            side=side,
            quantity=quantity,
            order_type=MARKET if is_market else LIMIT,
            price=price,
            fair=fair_ticks,
        )
