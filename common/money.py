"""Decimal <-> integer tick conversion, done strictly and in one place."""

from decimal import Decimal, InvalidOperation

TICKS_PER_UNIT = 100  # prices and money are integer cents inside the system


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
