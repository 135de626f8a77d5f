"""Option maths a bot needs: ids, Black-Scholes (r = 0) price and delta, time to expiry.

The exchange marks options the same way (GAME.md): Black-Scholes with the current underlying
price and the current regime's volatility, European, cash-settled, multiplier 100. The game's
front expiry is 30 game days after the start, with a 365-day year (the exchange's defaults).
"""

from __future__ import annotations

import math
from typing import NamedTuple

MULTIPLIER = 100  # per option contract
EXPIRY_GAME_S = 30 * 86_400.0
YEAR_S = 365 * 86_400.0
TICK = 0.01


class Option(NamedTuple):
    underlying: str
    strike: float
    is_call: bool


def parse(instrument_id: str) -> Option | None:
    """`SPX_4500_CALL` -> Option("SPX", 4500.0, True); an underlying like `SPY` -> None."""
    parts = instrument_id.split("_")
    if len(parts) < 3 or parts[2] not in ("CALL", "PUT"):
        return None
    try:
        return Option(parts[0], float(parts[1]), parts[2] == "CALL")
    except ValueError:
        return None


def years_left(game_s: float, expiry_s: float = EXPIRY_GAME_S) -> float:
    return max(expiry_s - game_s, 3600.0) / YEAR_S


def _cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_scholes(spot: float, option: Option, years: float, vol: float) -> tuple[float, float]:
    """(price, delta) per unit of the underlying; multiply by MULTIPLIER for a contract."""
    sd = max(vol, 1e-4) * math.sqrt(years)
    d1 = (math.log(spot / option.strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if option.is_call:
        return spot * _cdf(d1) - option.strike * _cdf(d2), _cdf(d1)
    return option.strike * _cdf(-d2) - spot * _cdf(-d1), _cdf(d1) - 1.0


def to_tick(price: float, up: bool = False) -> float:
    """A valid price: a whole number of cents, at least one cent."""
    cents = math.ceil(price / TICK - 1e-9) if up else math.floor(price / TICK + 1e-9)
    return max(1, cents) / 100
