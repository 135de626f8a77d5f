"""The opening auction: one uniform-price cross over a book that filled up without matching.

The price maximises executable volume; ties go to the smallest imbalance, then to the midpoint
of the tied range rounded to the tick (half a tick rounds up). Every price inside the tied
range executes the same volume, so the midpoint is always a valid clearing price.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.matcher.book import Order, OrderBook

Match = tuple[Order, Order, int]  # (buy, sell, quantity)


def clearing_price(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]]
) -> tuple[int, int] | None:
    """(price, volume) for aggregated levels (price, quantity); None if nothing crosses.

    Demand and supply only change at level prices, so every tick is covered by evaluating each
    level price and each open gap between neighbouring level prices as one segment.
    """
    best: tuple[int, int] | None = None
    lo = hi = 0
    for first, last, demand, supply in _segments(bids, asks):
        volume = min(demand, supply)
        key = (volume, -abs(demand - supply))
        if not volume or (best is not None and key < best):
            continue
        if best is None or key > best:
            best, lo = key, first
        hi = last
    if best is None:
        return None
    return (lo + hi + 1) // 2, best[0]


def _segments(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]]
) -> Iterator[tuple[int, int, int, int]]:
    """(first tick, last tick, demand, supply) over runs of ticks with the same figures.

    One pass up the prices with running totals (re-summing the book at every price made the
    open of a book with thousands of levels take seconds): demand at a price is every bid at
    or above it, supply every ask at or below it."""
    bid_at, ask_at = dict(bids), dict(asks)  # one entry per price
    prices = sorted(bid_at.keys() | ask_at.keys())
    demand, supply = sum(bid_at.values()), 0
    for i, here in enumerate(prices):
        supply += ask_at.get(here, 0)
        yield here, here, demand, supply
        demand -= bid_at.get(here, 0)  # what is left: the bids above `here`
        after = prices[i + 1] if i + 1 < len(prices) else here
        if after - here >= 2:
            yield here + 1, after - 1, demand, supply


def uncross(book: OrderBook) -> tuple[int, list[Match], list[Order]] | None:
    """The cross for `book`: (price, matches, []), or (price, [], [order]) when a team would
    trade with itself — the caller cancels that newer order and asks again."""
    found = clearing_price(book.bids.depth(None), book.asks.depth(None))
    if found is None:
        return None
    price, volume = found
    matches: list[Match] = []
    buys, sells = _fills(book.bids.live_orders()), _fills(book.asks.live_orders())
    (buy, buy_left), (sell, sell_left) = next(buys), next(sells)
    while volume:
        if buy.team_id == sell.team_id:
            newer = max(buy, sell, key=lambda o: (o.ts_ns, o.order_id))
            return price, [], [newer]
        quantity = min(buy_left, sell_left, volume)
        matches.append((buy, sell, quantity))
        volume -= quantity
        buy_left -= quantity
        sell_left -= quantity
        if volume and not buy_left:
            buy, buy_left = next(buys)
        if volume and not sell_left:
            sell, sell_left = next(sells)
    return price, matches, []


def _fills(orders: list[Order]) -> Iterator[tuple[Order, int]]:
    return ((o, o.remaining) for o in orders)
