"""The instrument universe, generated from config: underlyings plus an option chain on each."""

from __future__ import annotations

import msgspec

from common.config import GameConfig
from common.money import to_ticks


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    underlying: str
    kind: str  # "underlying" | "option"
    multiplier: int = 1
    strike: int | None = None  # ticks
    option_type: str | None = None  # "call" | "put"

    @property
    def is_option(self) -> bool:
        return self.kind == "option"


def option_id(underlying: str, strike: int, option_type: str) -> str:
    return f"{underlying}_{strike}_{option_type.upper()}"


def build_instruments(game: GameConfig) -> dict[str, Instrument]:
    out: dict[str, Instrument] = {}
    for u in game.underlyings:
        out[u.symbol] = Instrument(id=u.symbol, underlying=u.symbol, kind="underlying")
        for strike in range(u.strike_min, u.strike_max + 1, u.strike_step):
            for option_type in ("call", "put"):
                iid = option_id(u.symbol, strike, option_type)
                out[iid] = Instrument(
                    id=iid, underlying=u.symbol, kind="option", multiplier=u.multiplier,
                    strike=to_ticks(strike), option_type=option_type,
                )
    return out
