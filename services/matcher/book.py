"""A price-time priority limit order book with integer prices. Pure: no I/O, no clock.

Each side keeps sorted price keys (the negated price for bids, so the best level is always
key 0), a FIFO deque per level, and each level's total. Cancels are lazy: the order is zeroed
and the level total reduced at once, and the dead entry is dropped when it reaches the front.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import msgspec
from sortedcontainers import SortedList

BUY, SELL = "buy", "sell"


class Order(msgspec.Struct, kw_only=True, gc=False):
    order_id: str
    team_id: str
    instrument_id: str
    side: str
    order_type: str
    price: int | None
    quantity: int
    remaining: int
    client_order_id: str | None = None
    ts_ns: int = 0
    filled: int = 0
    notional: int = 0  # sum of price * quantity over fills


class Fill(NamedTuple):
    maker: Order
    quantity: int
    price: int


class _Side:
    """One side of the book; `sign` maps prices to keys so the best key is always first."""

    __slots__ = ("keys", "levels", "name", "sign", "totals")

    def __init__(self, name: str, sign: int) -> None:
        self.name = name
        self.sign = sign
        self.keys = SortedList()
        self.levels: dict[int, deque[Order]] = {}
        self.totals: dict[int, int] = {}

    def add(self, order: Order, price: int) -> None:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = deque()
            self.keys.add(self.sign * price)
            self.totals[price] = 0
        level.append(order)
        self.totals[price] += order.remaining

    def reduce(self, price: int, quantity: int) -> int:
        left = self.totals[price] - quantity
        if left:
            self.totals[price] = left
        else:
            del self.totals[price], self.levels[price]
            self.keys.remove(self.sign * price)
        return left

    def best(self) -> int | None:
        return self.sign * self.keys[0] if self.keys else None

    def depth(self, n: int | None) -> list[tuple[int, int]]:
        sign, totals = self.sign, self.totals
        return [(sign * k, totals[sign * k]) for k in self.keys.islice(0, n)]

    def live_orders(self) -> list[Order]:
        """Resting orders in priority order (best price first, then time)."""
        return [
            o for k in self.keys for o in self.levels[self.sign * k] if o.remaining
        ]


class OrderBook:
    __slots__ = ("_changed", "asks", "bids", "instrument_id")

    def __init__(self, instrument_id: str) -> None:
        self.instrument_id = instrument_id
        self.bids = _Side(BUY, -1)
        self.asks = _Side(SELL, 1)
        self._changed: dict[tuple[str, int], None] = {}

    def side(self, name: str) -> _Side:
        return self.bids if name == BUY else self.asks

    def match(self, taker: Order) -> tuple[list[Fill], list[tuple[Order, int]]]:
        """Fill `taker` against the opposite side up to its limit (any price if it has none).

        A resting order of the taker's own team is cancelled instead of traded (self-trade
        prevention); those are returned second, with the quantity cancelled, to be reported.
        """
        opp = self.asks if taker.side == BUY else self.bids
        limit_key = None if taker.price is None else opp.sign * taker.price
        fills: list[Fill] = []
        cancelled: list[tuple[Order, int]] = []
        keys = opp.keys
        while taker.remaining and keys:
            key = keys[0]
            if limit_key is not None and key > limit_key:
                break
            price = opp.sign * key
            self._changed[(opp.name, price)] = None
            self._match_level(taker, opp, price, fills, cancelled)
        return fills, cancelled

    def _match_level(
        self,
        taker: Order,
        opp: _Side,
        price: int,
        fills: list[Fill],
        cancelled: list[tuple[Order, int]],
    ) -> None:
        level = opp.levels[price]
        while taker.remaining:
            maker = level[0]
            if not maker.remaining:
                level.popleft()
                continue
            if maker.team_id == taker.team_id:
                quantity = maker.remaining
                cancelled.append((maker, quantity))
            else:
                quantity = min(taker.remaining, maker.remaining)
                taker.remaining -= quantity
                fills.append(Fill(maker, quantity, price))
            if quantity == maker.remaining:
                level.popleft()
            maker.remaining -= quantity
            if not opp.reduce(price, quantity):
                return

    def rest(self, order: Order) -> None:
        assert order.price is not None, "only limit orders rest"
        (self.bids if order.side == BUY else self.asks).add(order, order.price)
        self._changed[(order.side, order.price)] = None

    def cancel(self, order: Order) -> int:
        """Take a resting order out of the book; returns the quantity cancelled."""
        quantity, order.remaining = order.remaining, 0
        if quantity:
            assert order.price is not None
            self.side(order.side).reduce(order.price, quantity)
            self._changed[(order.side, order.price)] = None
        return quantity

    def take(self, order: Order, quantity: int) -> None:
        """Fill part of a resting order outside continuous matching (the opening auction)."""
        assert order.price is not None and quantity <= order.remaining
        order.remaining -= quantity
        self.side(order.side).reduce(order.price, quantity)
        self._changed[(order.side, order.price)] = None

    def contra_liquidity(self, side: str, team_id: str) -> bool:
        """Whether an order of `team_id` on `side` would find anyone else's order to trade with."""
        opp = self.asks if side == BUY else self.bids
        for key in opp.keys:
            for order in opp.levels[opp.sign * key]:
                if order.remaining and order.team_id != team_id:
                    return True
        return False

    def best_bid(self) -> int | None:
        return self.bids.best()

    def best_ask(self) -> int | None:
        return self.asks.best()

    def crossed(self) -> bool:
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask

    def depth(self, n: int | None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self.bids.depth(n), self.asks.depth(n)

    def level_total(self, side: str, price: int) -> int:
        return self.side(side).totals.get(price, 0)

    def drain_changes(self) -> list[tuple[str, int, int]]:
        """Levels touched since the last drain, with their new totals (0 = level gone)."""
        if not self._changed:
            return []
        out = [(s, p, self.side(s).totals.get(p, 0)) for s, p in self._changed]
        self._changed.clear()
        return out

    def live_orders(self) -> list[Order]:
        return self.bids.live_orders() + self.asks.live_orders()
