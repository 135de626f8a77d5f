"""Example market maker: quote both sides around fair value, lean against inventory.

Fair value is Black-Scholes on the underlying price from the public indicators signal, with
a volatility estimated from its realised volatility. Each quote sits half a spread away from
fair, shifted by the inventory skew: long -> both prices lower (sell more easily, buy less
eagerly), short -> higher. A quote is replaced only when its price has drifted from target,
which keeps us under the 10 orders/s rate. Sizes always fit the position limits, resting
quotes counted as filled (`Bot.order` shrinks or skips what would not fit).
It also quotes SPX and SPY themselves, so hedgers and arbitrageurs find someone to trade with.

    itg bot market_maker --url http://127.0.0.1:8000 --team-name my-mm
"""

from __future__ import annotations

from bots.base import Bot
from bots.pricing import parse, to_tick

OPTIONS = [f"SPX_{k}_{t}" for k in (4300, 4400, 4500) for t in ("CALL", "PUT")] + [
    f"SPY_{k}_{t}" for k in (430, 440, 450) for t in ("CALL", "PUT")]
UNDERLYINGS = ["SPX", "SPY"]
SIZE = {"option": 5, "SPX": 20, "SPY": 100}
HALF_SPREAD = {"option": 0.02, "SPX": 0.0004, "SPY": 0.0004}  # of the fair value
SKEW = 1.0  # at a full position, the quotes move by this many half-spreads
REQUOTE = 0.5  # replace a quote that drifted by more than this share of the half-spread


class MarketMaker(Bot):
    role = "market_maker"
    interval_s = 0.2

    def setup(self) -> None:
        self.quotes: dict[tuple[str, str], str] = {}  # (instrument, side) -> order id
        self.turn = 0

    def step(self) -> None:
        names = OPTIONS + UNDERLYINGS
        for _ in range(4):  # a few instruments per step, round robin
            self.turn = (self.turn + 1) % len(names)
            self.quote(names[self.turn])

    def quote(self, iid: str) -> None:
        fair = self.fair(iid)
        if fair is None:
            return
        kind = "option" if parse(iid) else iid
        half = max(0.02, fair[0] * HALF_SPREAD[kind])
        limit = self.inv.limits.position if kind == "option" else self.inv.limits.underlying
        center = fair[0] - SKEW * half * self.position(iid) / limit
        targets = {"buy": to_tick(center - half), "sell": to_tick(center + half, up=True)}
        for side, price in targets.items():
            oid = self.quotes.get((iid, side))
            resting = self.inv.orders.get(oid) if oid else None
            if resting is not None and abs((resting.price or 0) - price) <= REQUOTE * half:
                continue  # still a good quote
            if resting is not None and oid is not None:
                self.cancel(oid)
            new = self.order(iid, side, SIZE[kind], price)
            if new is not None:
                self.quotes[(iid, side)] = new
            else:
                self.quotes.pop((iid, side), None)
