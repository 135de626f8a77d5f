"""Decimal <-> integer tick conversion, done strictly and in one place."""

import math
from decimal import Decimal, InvalidOperation

TICKS_PER_UNIT = 100  # prices and money are integer cents inside the system
TICK = 1 / TICKS_PER_UNIT  # one tick as a float: for the market models' price paths only
EXACT_BELOW = 2**50 / TICKS_PER_UNIT  # float_to_ticks is exact below this magnitude


def to_ticks(value: str | int | float | Decimal) -> int:
    """Exact decimal amount -> ticks; ValueError if off-tick, not finite or not a number."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a price")
    try:
        dec = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not dec.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    ticks = dec * TICKS_PER_UNIT
    if ticks != ticks.to_integral_value():
        raise ValueError(f"{value!r} is not a multiple of the tick 0.01")
    return int(ticks)


def from_ticks(ticks: int) -> Decimal:
    return Decimal(ticks) / TICKS_PER_UNIT


def float_to_ticks(value: float) -> int:
    """A JSON number, as parsed to a float, -> ticks: what `to_ticks(Decimal(repr(value)))` gives
    (the float's shortest decimal form must be on the tick), without Decimal: an order's price
    is parsed on the gateway's hot path.

    A float is on the tick exactly when it is the float nearest k/100 for the k nearest
    value * 100, and int / int is correctly rounded, so `k / 100 == value` tests just that.
    Exact for |value| < 2**50 / 100; larger values (no price is that large) are refused, as
    `value * 100` may not even be finite."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    if abs(value) >= EXACT_BELOW:
        raise ValueError(f"{value!r} is too large for a price")
    ticks = round(value * TICKS_PER_UNIT)
    if ticks / TICKS_PER_UNIT != value:
        raise ValueError(f"{value!r} is not a multiple of the tick 0.01")
    return ticks
