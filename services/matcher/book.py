"""A price-time priority limit order book with integer prices. Pure: no I/O, no clock.

Each side keeps sorted price keys (the negated price for bids, so the best level is always
key 0), a FIFO deque per level, and each level's total. Cancels are lazy: the order is zeroed
and the level total reduced at once, and the dead entry is dropped when it reaches the front.

The keys are a plain list kept sorted with bisect: books hold tens to a few thousand levels, where
a C-level list insert or delete beats a SortedList several times over, and the best key is a
plain index. The list is only touched when a level appears or disappears.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence

import msgspec

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


Fill = tuple[Order, int, int]  # (maker, quantity, price); a plain tuple is the cheapest record
Match = tuple[Sequence[Fill], Sequence[tuple[Order, int]]]  # (fills, self-trade cancels)
_NO_MATCH: Match = ((), ())  # shared: most orders cross nothing
Changes = dict[tuple[str, int], dict[int, int]]  # (side, price) touched -> that side's totals


class _Side:
    """One side of the book; `sign` maps prices to keys so the best key is always first.

    Every level it touches is recorded in `changed` (shared with the book), keyed (side, price)
    and mapped to `totals`, so a drain reads the new totals without asking which side it was.
    """

    __slots__ = ("changed", "keys", "levels", "name", "sign", "totals")

    def __init__(self, name: str, sign: int, changed: Changes) -> None:
        self.name = name
        self.sign = sign
        self.changed = changed
        self.keys: list[int] = []
        self.levels: dict[int, deque[Order]] = {}
        self.totals: dict[int, int] = {}

    def add(self, order: Order, price: int) -> None:
        """Queue `order` last at `price`; the sorted keys change only for a new level."""
        level = self.levels.get(price)
        if level is None:
            self.levels[price] = deque((order,))
            insort(self.keys, self.sign * price)
            self.totals[price] = order.remaining
        else:
            level.append(order)
            self.totals[price] += order.remaining
        self.changed[(self.name, price)] = self.totals

    def reduce(self, price: int, quantity: int) -> int:
        self.changed[(self.name, price)] = self.totals
        left = self.totals[price] - quantity
        self.set_total(price, left)
        return left

    def set_total(self, price: int, total: int) -> None:
        """A level's new total; at 0 the level goes (any entries left in it are dead)."""
        if total:
            self.totals[price] = total
        else:
            del self.totals[price], self.levels[price]
            keys = self.keys
            del keys[bisect_left(keys, self.sign * price)]

    def best(self) -> int | None:
        return self.sign * self.keys[0] if self.keys else None

    def depth(self, n: int | None) -> list[tuple[int, int]]:
        sign, totals = self.sign, self.totals
        return [(sign * k, totals[sign * k]) for k in self.keys[:n]]

    def live_orders(self) -> list[Order]:
        """Resting orders in priority order (best price first, then time)."""
        return [
            o for k in self.keys for o in self.levels[self.sign * k] if o.remaining
        ]


class OrderBook:
    __slots__ = ("_changed", "asks", "bids", "instrument_id")

    def __init__(self, instrument_id: str) -> None:
        self.instrument_id = instrument_id
        self._changed: Changes = {}
        self.bids = _Side(BUY, -1, self._changed)
        self.asks = _Side(SELL, 1, self._changed)

    def side(self, name: str) -> _Side:
        return self.bids if name == BUY else self.asks

    def match(self, taker: Order) -> Match:
        """Fill `taker` against the opposite side up to its limit (any price if it has none).

        A resting order of the taker's own team is cancelled instead of traded (self-trade
        prevention); those are returned second, with the quantity cancelled, to be reported.
        """
        opp = self.asks if taker.side == BUY else self.bids
        keys, sign = opp.keys, opp.sign
        limit_key = None if taker.price is None else sign * taker.price
        if not keys or (limit_key is not None and keys[0] > limit_key):
            return _NO_MATCH
        fills: list[Fill] = []
        cancelled: list[tuple[Order, int]] = []
        while taker.remaining and keys:
            key = keys[0]
            if limit_key is not None and key > limit_key:
                break
            self._match_level(taker, opp, sign * key, fills, cancelled)
        return fills, cancelled

    @staticmethod
    def _match_level(
        taker: Order,
        opp: _Side,
        price: int,
        fills: list[Fill],
        cancelled: list[tuple[Order, int]],
    ) -> None:
        """Match at one level until the taker is done or the level is empty; the level total
        is written back once, at the end."""
        opp.changed[(opp.name, price)] = opp.totals
        level = opp.levels[price]
        left = opp.totals[price]
        wanted = taker.remaining
        team = taker.team_id
        while wanted and left:
            maker = level[0]
            available = maker.remaining
            if not available:
                level.popleft()
                continue
            if maker.team_id == team:
                quantity = available
                cancelled.append((maker, quantity))
            else:
                quantity = wanted if wanted < available else available
                wanted -= quantity
                fills.append((maker, quantity, price))
            if quantity == available:
                level.popleft()
            maker.remaining = available - quantity
            left -= quantity
        taker.remaining = wanted
        opp.set_total(price, left)

    def rest(self, order: Order) -> None:
        assert order.price is not None, "only limit orders rest"
        (self.bids if order.side == BUY else self.asks).add(order, order.price)

    def cancel(self, order: Order) -> int:
        """Take a resting order out of the book; returns the quantity cancelled."""
        quantity, order.remaining = order.remaining, 0
        if quantity:
            assert order.price is not None
            (self.bids if order.side == BUY else self.asks).reduce(order.price, quantity)
        return quantity

    def take(self, order: Order, quantity: int) -> None:
        """Fill part of a resting order outside continuous matching (the opening auction)."""
        assert order.price is not None and quantity <= order.remaining
        order.remaining -= quantity
        self.side(order.side).reduce(order.price, quantity)

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

    def drain_changes(self) -> tuple[tuple[str, int, int], ...]:
        """Levels touched since the last drain, with their new totals (0 = level gone)."""
        changed = self._changed
        if not changed:
            return ()
        out = []  # a plain loop: a comprehension is one more function call (before 3.12)
        for (side, price), totals in changed.items():
            out.append((side, price, totals.get(price, 0)))
        changed.clear()
        return tuple(out)

    def live_orders(self) -> list[Order]:
        return self.bids.live_orders() + self.asks.live_orders()
