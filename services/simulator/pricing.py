"""Black-Scholes fair values (r = 0) and option instrument ids.

Pure float maths with `math.erf`, so marks and retail limits need no scipy. Published prices are
integer ticks: `to_ticks` is the single rounding point.
"""

from __future__ import annotations

import math

import msgspec

CALL = "call"
PUT = "put"
_SQRT2 = math.sqrt(2.0)


class OptionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An option parsed from an id like `SPX_4500_CALL` or `SPY_440_PUT_20240119`."""

    instrument_id: str
    underlying: str
    strike: float
    kind: str  # "call" | "put"
    expiry: str | None = None  # YYYYMMDD for a later expiry; None for the front one

    @property
    def is_call(self) -> bool:
        return self.kind == CALL


def parse_option_id(instrument_id: str) -> OptionSpec | None:
    """The option behind an id, or None for an underlying or a malformed id."""
    parts = instrument_id.split("_")
    if len(parts) not in (3, 4) or parts[2].lower() not in (CALL, PUT):
        return None
    expiry = parts[3] if len(parts) == 4 else None
    if expiry is not None and not (len(expiry) == 8 and expiry.isdigit()):
        return None
    try:
        strike = float(parts[1])
    except ValueError:
        return None
    if not math.isfinite(strike) or strike <= 0.0:
        return None
    return OptionSpec(
        instrument_id=instrument_id,
        underlying=parts[0],
        strike=strike,
        kind=parts[2].lower(),
        expiry=expiry,
    )


def option_id(underlying: str, strike: float, kind: str, expiry: str | None = None) -> str:
    """Inverse of `parse_option_id`; integral strikes print without a decimal point."""
    strike_text = str(int(strike)) if float(strike).is_integer() else repr(float(strike))
    suffix = f"_{expiry}" if expiry else ""
    return f"{underlying}_{strike_text}_{kind.upper()}{suffix}"


def norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def _d1_d2(spot: float, strike: float, years: float, vol: float) -> tuple[float, float]:
    sd = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + 0.5 * sd * sd) / sd
    return d1, d1 - sd


def _expired(years: float, vol: float) -> bool:
    return years <= 0.0 or vol <= 0.0


def bs_price(spot: float, strike: float, years: float, vol: float, is_call: bool) -> float:
    """Black-Scholes price with r = 0; intrinsic value at expiry or with zero vol."""
    if _expired(years, vol):
        return max(spot - strike, 0.0) if is_call else max(strike - spot, 0.0)
    d1, d2 = _d1_d2(spot, strike, years, vol)
    call = spot * norm_cdf(d1) - strike * norm_cdf(d2)
    if is_call:
        return max(call, 0.0)
    return max(call - spot + strike, 0.0)  # put-call parity with r = 0


def bs_delta(spot: float, strike: float, years: float, vol: float, is_call: bool) -> float:
    """dPrice/dSpot; a step function (0.5 at the strike) at expiry."""
    if _expired(years, vol):
        call_delta = 0.5 if spot == strike else float(spot > strike)
    else:
        call_delta = norm_cdf(_d1_d2(spot, strike, years, vol)[0])
    return call_delta if is_call else call_delta - 1.0


def to_ticks(price: float, tick: float = 0.01) -> int:
    """Round a float price to the nearest integer number of ticks (the published form)."""
    return round(price / tick)


def fair_value_ticks(
    spec: OptionSpec, spot: float, years: float, vol: float, tick: float = 0.01
) -> int:
    return to_ticks(bs_price(spot, spec.strike, years, vol, spec.is_call), tick)
