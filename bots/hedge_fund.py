"""Example hedge fund: trade volatility on the forecast signal, delta-hedge with SPX.

The private `volatility_forecast` signal announces a regime change a few ticks ahead (right
about two times in three). Options are worth more when volatility is higher, so when the
forecast volatility is well above what the market prices (our estimate: realised volatility),
we buy an at-the-money straddle (a call and a put: little delta, much vega); well below, we
sell one; in between, we hold none. Options also have delta, which moves with the price:
every step we trade SPX to bring the portfolio's delta back near zero, so what we earn or
lose is volatility, not direction. Orders not traded within a couple of seconds are cancelled.

    itg bot hedge_fund --url http://127.0.0.1:8000 --team-name my-fund
"""

from __future__ import annotations

from typing import Any

from bots.base import Bot
from bots.pricing import MULTIPLIER, parse

STRADDLES = 10  # contracts per leg while we hold a view
EDGE = 0.03  # pay up to 3% through fair value to get an option trade done
HEDGE_EDGE = 0.001  # and 0.1% for the underlying
HEDGE_BAND = 25  # SPX units of delta left unhedged
MARGIN = 0.3  # act on forecasts 30% above or below the volatility the market prices
STRIKES = range(4200, 4601, 100)


class HedgeFund(Bot):
    role = "hedge_fund"
    interval_s = 0.25

    def setup(self) -> None:
        self.target = 0  # straddles we want: +N long volatility, -N short, 0 none

    def on_signal(self, data: dict[str, Any]) -> None:
        if data.get("signal_type") != "volatility_forecast":
            return
        forecast = float(data["vol"])
        if forecast > self.vol * (1 + MARGIN):
            self.target = STRADDLES
        elif forecast < self.vol * (1 - MARGIN):
            self.target = -STRADDLES
        else:
            self.target = 0
        self.stats["forecasts"] += 1

    def step(self) -> None:
        spot = self.spot.get("SPX")
        if spot is None:
            return
        self.cancel_older(2.0)
        atm = min(STRIKES, key=lambda k: abs(k - spot))
        legs = {f"SPX_{atm}_CALL", f"SPX_{atm}_PUT"}
        held = {i for i, p in self.inv.positions.items() if p and parse(i)}
        for iid in sorted(legs | held):  # the current straddle; anything else is unwound
            self.trade_towards(iid, self.target if iid in legs else 0, EDGE)
        self.hedge()

    def delta(self) -> float:
        """The portfolio's delta in SPX units: options (x100 each) plus SPX held or resting."""
        total = float(self.position("SPX") + self.pending("SPX"))
        for iid, pos in self.inv.positions.items():
            option, fair = parse(iid), self.fair(iid)
            if option is not None and option.underlying == "SPX" and fair is not None:
                total += pos * fair[1] * MULTIPLIER
        return total

    def hedge(self) -> None:
        delta = self.delta()
        if abs(delta) > HEDGE_BAND:
            self.trade_towards("SPX", self.position("SPX") + self.pending("SPX") - round(delta),
                               HEDGE_EDGE)
