"""The opening auction: `clearing_price` by hand and against brute force, and the engine's cross.

GAME.md: one uniform-price cross at the price of maximum executable volume, ties broken by the
smallest imbalance, then the midpoint of the tied range rounded to the tick (half a tick up).
Orders entered in `pre_open` rest crossed without matching; `SetPhase(continuous)` uncrosses
every book at one price. A team never trades with itself: the newer order of such a pair goes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from common.config import Config, load_config, only_roles
from common.messages import (
    CancelAck,
    Event,
    ExecutionReport,
    NewOrder,
    OrderReject,
    RegisterTeam,
    Response,
    SetHalt,
    SetPhase,
    TradePrint,
)
from services.matcher.auction import clearing_price
from services.matcher.engine import Engine

Levels = list[tuple[int, int]]  # (price, quantity), one entry per price

HUGE = 10**6  # no limit is reached (a config bounds them: 10**6 lots at max_price is the most)
FEES = {"maker_fee_cents": 2, "taker_fee_cents": -1}
IIDS = ("SPX_4500_CALL", "SPY")
MULTIPLIER = {"SPX_4500_CALL": 100, "SPY": 1}
TEAMS = ("TEAM_001", "TEAM_002", "TEAM_003")
LO, HI = 95, 105


def make_config() -> Config:
    role = {**FEES, "position_limit": HUGE, "total_position_limit": HUGE,
            "underlying_position_limit": HUGE, "max_order_size": HUGE, "max_orders_per_s": HUGE}
    return load_config(env={}, overrides={"game": {"roles": only_roles({"whale": role})}})


CONFIG = make_config()

# --- brute force ---


def demand_supply(bids: Levels, asks: Levels, price: int) -> tuple[int, int]:
    return (sum(q for p, q in bids if p >= price), sum(q for p, q in asks if p <= price))


def brute_force(bids: Levels, asks: Levels, prices: list[int]) -> tuple[int, int] | None:
    """GAME.md's rule evaluated at each candidate price, the dumbest way."""
    scored = []
    for price in prices:
        demand, supply = demand_supply(bids, asks, price)
        scored.append((price, min(demand, supply), abs(demand - supply)))
    volume = max((v for _, v, _ in scored), default=0)
    if not volume:
        return None
    imbalance = min(i for _, v, i in scored if v == volume)
    tied = [p for p, v, i in scored if (v, i) == (volume, imbalance)]
    return (tied[0] + tied[-1] + 1) // 2, volume  # midpoint, half a tick rounds up


def every_tick(bids: Levels, asks: Levels) -> list[int]:
    prices = [p for p, _ in bids + asks]
    return list(range(min(prices), max(prices) + 1)) if prices else []


def level_prices(bids: Levels, asks: Levels) -> list[int]:
    return sorted({p for p, _ in bids + asks})


# --- clearing_price by hand ---


@pytest.mark.parametrize(("bids", "asks"), [
    ([], []),
    ([(100, 5)], []),
    ([], [(100, 5)]),
    ([(99, 5), (98, 1)], [(100, 5), (101, 3)]),  # touching but not crossing
])
def test_nothing_crosses(bids: Levels, asks: Levels) -> None:
    assert clearing_price(bids, asks) is None


def test_single_cross_midpoint_rounds_half_tick_up() -> None:
    assert clearing_price([(101, 10)], [(100, 10)]) == (101, 10)  # 100.5 -> 101
    assert clearing_price([(103, 10)], [(100, 10)]) == (102, 10)  # 101.5 -> 102
    assert clearing_price([(104, 10)], [(100, 10)]) == (102, 10)  # exact midpoint
    assert clearing_price([(100, 7)], [(100, 4)]) == (100, 4)  # one price only


def test_maximum_volume_wins_over_imbalance() -> None:
    # 99 and 100 cross 15 (imbalance 5); 105 crosses only 10 (imbalance 5 too).
    assert clearing_price([(105, 10), (100, 10)], [(99, 15)]) == (100, 15)
    # 100 crosses 10 with an imbalance of 29; 103 is nearly balanced (4) but crosses only 9.
    assert clearing_price([(103, 9), (100, 30)], [(100, 10), (103, 3)]) == (100, 10)


def test_ties_broken_by_smallest_imbalance() -> None:
    # Every price 100..102 crosses 10; only 100 leaves no imbalance (the midpoint would be 101).
    assert clearing_price([(102, 10)], [(100, 10), (101, 5)]) == (100, 10)
    # Mirror image: 100 and 102 both cross 10; 100 has 5 more demand, 102 is balanced.
    assert clearing_price([(100, 5), (102, 10)], [(100, 10)]) == (102, 10)


def test_midpoint_of_tied_range() -> None:
    # 100 (+3 surplus of demand) and 102 (+3 surplus of supply) tie: midpoint 101.
    assert clearing_price([(102, 5), (100, 3)], [(100, 5), (102, 3)]) == (101, 5)
    # 102 and 103 both cross 10 with no imbalance: midpoint 102.5 rounds up to 103.
    assert clearing_price([(106, 6), (103, 4)], [(100, 6), (102, 4)]) == (103, 10)
    # 102 and 104 tie (and 103 between them): midpoint 103.
    assert clearing_price([(106, 6), (104, 4)], [(100, 6), (102, 4)]) == (103, 10)


# --- clearing_price against brute force ---

levels_st = st.dictionaries(st.integers(LO, HI), st.integers(1, 20), max_size=6).map(
    lambda d: sorted(d.items()))


@settings(max_examples=200, deadline=None)
@given(bids=levels_st, asks=levels_st)
def test_clearing_price_maximises_volume_over_every_tick(bids: Levels, asks: Levels) -> None:
    found = clearing_price(bids, asks)
    brute = brute_force(bids, asks, every_tick(bids, asks))
    assert (found is None) == (brute is None)
    if found is None or brute is None:
        return
    price, volume = found
    assert volume == brute[1]
    demand, supply = demand_supply(bids, asks, price)
    assert min(demand, supply) == volume  # the chosen price really executes that volume
    # ...and its imbalance is no worse than at any level price of maximum volume.
    assert abs(demand - supply) <= min(
        abs(d - s) for d, s in (demand_supply(bids, asks, p) for p in level_prices(bids, asks))
        if min(d, s) == volume)


@settings(max_examples=200, deadline=None)
@given(bids=levels_st, asks=levels_st)
@example(bids=[(105, 10)], asks=[(100, 10), (103, 5)])
def test_clearing_price_matches_brute_force_over_every_tick(bids: Levels, asks: Levels) -> None:
    assert clearing_price(bids, asks) == brute_force(bids, asks, every_tick(bids, asks))


# --- the opening auction through the engine ---


class Exchange:
    """An engine in a test world: three teams with no limits, commands stamped in order."""

    def __init__(self) -> None:
        self.engine = Engine(CONFIG.game)
        self.seq = 0
        for i, _ in enumerate(TEAMS):
            self.apply(RegisterTeam(team_name=f"team{i}", role="whale", key_hash="h"))
        assert list(self.engine.accounts) == list(TEAMS)

    def apply(self, cmd: RegisterTeam | NewOrder | SetPhase | SetHalt) -> list[Event]:
        self.seq += 1
        return [e for _, e in self.engine.apply(cmd, self.seq, self.seq * 1000)]

    def limit(self, team: str, side: str, price: int, qty: int, iid: str = IIDS[0]) -> str:
        events = self.apply(NewOrder(team_id=team, instrument_id=iid, side=side, quantity=qty,
                                     price=price, gw="gw"))
        resp = next(e for e in events if isinstance(e, Response))
        assert resp.ok and resp.order_id is not None, resp
        assert not [e for e in events if isinstance(e, TradePrint | ExecutionReport | CancelAck)]
        return resp.order_id

    def resting(self, iid: str) -> list[tuple[str, str, int | None, int]]:
        book = self.engine.books[iid]
        return [(o.order_id, o.side, o.price, o.remaining) for o in book.live_orders()]


AuctionTrade = tuple[str, str, int, int]  # (buy order id, sell order id, price, quantity)


def auction_trades(events: list[Event]) -> dict[str, list[AuctionTrade]]:
    """Trades per instrument, checking each has one buy and one sell report, both resting
    ('maker'), with the maker fee, and a print marked 'auction' with the same price and size."""
    reports: dict[str, list[ExecutionReport]] = defaultdict(list)
    for e in events:
        if isinstance(e, ExecutionReport):
            reports[e.trade_id].append(e)
    out: dict[str, list[AuctionTrade]] = defaultdict(list)
    prints = [e for e in events if isinstance(e, TradePrint)]
    assert [p.trade_id for p in prints] == list(reports)
    for p in prints:
        pair = reports[p.trade_id]
        buy = next(r for r in pair if r.side == "buy")
        sell = next(r for r in pair if r.side == "sell")
        assert len(pair) == 2 and buy.team_id != sell.team_id
        assert p.aggressor == "auction"
        for r in pair:
            assert (r.executed_price, r.executed_quantity) == (p.price, p.quantity)
            assert r.liquidity == "maker" and r.fee == r.executed_quantity * FEES[
                "maker_fee_cents"]
        out[p.instrument_id].append((buy.order_id, sell.order_id, p.price, p.quantity))
    return out


def test_pre_open_orders_rest_crossed_without_matching() -> None:
    x = Exchange()
    x.apply(SetPhase(phase="pre_open"))
    buy = x.limit(TEAMS[0], "buy", 103, 10)
    sell = x.limit(TEAMS[1], "sell", 100, 4)
    book = x.engine.books[IIDS[0]]
    assert book.crossed() and (book.best_bid(), book.best_ask()) == (103, 100)
    assert x.resting(IIDS[0]) == [(buy, "buy", 103, 10), (sell, "sell", 100, 4)]
    market = x.apply(NewOrder(team_id=TEAMS[2], instrument_id=IIDS[0], side="buy", quantity=1,
                              order_type="market"))
    assert [e.error_code for e in market if isinstance(e, OrderReject)] == ["MARKET_CLOSED"]


@pytest.mark.parametrize("via_auction_phase", [False, True])
def test_opening_uncrosses_at_one_price(via_auction_phase: bool) -> None:
    x = Exchange()
    x.apply(SetPhase(phase="pre_open"))
    a, b, c = TEAMS
    b1 = x.limit(a, "buy", 104, 6)
    b2 = x.limit(b, "buy", 102, 5)
    b3 = x.limit(c, "buy", 99, 7)
    s1 = x.limit(c, "sell", 100, 4)
    s2 = x.limit(c, "sell", 101, 3)
    s3 = x.limit(a, "sell", 103, 8)
    # demand/supply: 100: 11/4, 101: 11/7, 102: 11/7, 103: 6/15 -> max volume 7 at 101..102,
    # imbalance 4 at both -> midpoint 101.5 -> 102.
    assert clearing_price([(104, 6), (102, 5), (99, 7)], [(100, 4), (101, 3), (103, 8)]) == (
        102, 7)
    if via_auction_phase:
        assert not auction_trades(x.apply(SetPhase(phase="opening_auction")))
    events = x.apply(SetPhase(phase="continuous"))
    trades = auction_trades(events)[IIDS[0]]
    assert trades == [(b1, s1, 102, 4), (b1, s2, 102, 2), (b2, s2, 102, 1)]
    book = x.engine.books[IIDS[0]]
    assert not book.crossed() and (book.best_bid(), book.best_ask()) == (102, 103)
    assert x.resting(IIDS[0]) == [(b2, "buy", 102, 4), (b3, "buy", 99, 7), (s3, "sell", 103, 8)]
    accts = x.engine.accounts
    assert [accts[t].positions.get(IIDS[0], 0) for t in TEAMS] == [6, 1, -7]
    assert [accts[t].cash - accts[t].fees for t in TEAMS] == [-600 * 102, -100 * 102, 700 * 102]
    assert [accts[t].open_buy.get(IIDS[0], 0) for t in TEAMS] == [0, 4, 7]
    # Continuous trading from here: a crossing order trades at once at the resting price.
    s4 = x.apply(NewOrder(team_id=c, instrument_id=IIDS[0], side="sell", quantity=1, price=90))
    assert [(p.price, p.quantity, p.aggressor) for p in s4 if isinstance(p, TradePrint)] == [
        (102, 1, "sell")]


def test_auction_self_trade_cancels_the_newer_order() -> None:
    x = Exchange()
    x.apply(SetPhase(phase="pre_open"))
    a, b, _ = TEAMS
    bid = x.limit(a, "buy", 101, 10)
    other = x.limit(b, "sell", 100, 5)
    own = x.limit(a, "sell", 100, 10)  # would meet a's own bid in the cross
    events = x.apply(SetPhase(phase="continuous"))
    cancels = [(e.order_id, e.cancelled_quantity, e.reason) for e in events
               if isinstance(e, CancelAck)]
    assert cancels == [(own, 10, "self_trade")]
    # Without a's ask: bids 10@101 vs asks 5@100 -> volume 5, tied 100..101 -> 101.
    assert auction_trades(events)[IIDS[0]] == [(bid, other, 101, 5)]
    assert x.resting(IIDS[0]) == [(bid, "buy", 101, 5)]


def test_a_book_halted_through_the_open_crosses_when_it_resumes() -> None:
    """It traded in the opening cross while halted, when its own orders were refused."""
    x = Exchange()
    x.apply(SetPhase(phase="pre_open"))
    a, b, _ = TEAMS
    bid, ask = x.limit(a, "buy", 101, 5), x.limit(b, "sell", 100, 5)
    x.apply(SetHalt(instrument_id=IIDS[0], halted=True))
    assert not auction_trades(x.apply(SetPhase(phase="continuous")))
    assert x.engine.books[IIDS[0]].crossed()
    resumed = x.apply(SetHalt(instrument_id=IIDS[0], halted=False))
    assert auction_trades(resumed)[IIDS[0]] == [(bid, ask, 101, 5)]
    assert not x.resting(IIDS[0])


def test_a_deep_book_clears_in_one_pass() -> None:
    """Re-summing the book at each price made the open of a 4,000-level book take seconds per
    book, the matcher doing nothing else; one pass takes milliseconds."""
    bids = [(10_000 - i, 1) for i in range(5_000)]
    asks = [(9_000 + i, 1) for i in range(5_000)]
    start = time.perf_counter()
    assert clearing_price(bids, asks) == (9_500, 501)
    assert time.perf_counter() - start < 1.0  # one pass: ~10 ms; re-summing: 2 s here


# --- the engine's auction against a naive model ---


@dataclass
class Resting:
    order_id: str
    team: str
    side: str
    price: int
    remaining: int
    arrival: int


def model_auction(orders: list[Resting]) -> tuple[list[str], list[AuctionTrade]]:
    """Self-trade cancels (order ids) and trades of one book's opening cross; mutates `orders`
    (the survivors keep their remaining quantity). Price by the rule at level prices."""
    cancelled: list[str] = []
    while True:
        bids = sorted((o for o in orders if o.side == "buy" and o.remaining),
                      key=lambda o: (-o.price, o.arrival))
        asks = sorted((o for o in orders if o.side == "sell" and o.remaining),
                      key=lambda o: (o.price, o.arrival))
        bid_levels = _aggregate(bids)
        ask_levels = _aggregate(asks)
        found = brute_force(bid_levels, ask_levels, every_tick(bid_levels, ask_levels))
        if found is None:
            return cancelled, []
        price, volume = found
        # Units of quantity in priority order, paired one by one.
        buy_units = [o for o in bids for _ in range(o.remaining)][:volume]
        sell_units = [o for o in asks for _ in range(o.remaining)][:volume]
        clash = next(((b, s) for b, s in zip(buy_units, sell_units, strict=True)
                      if b.team == s.team), None)
        if clash is not None:
            newer = max(clash, key=lambda o: o.arrival)
            cancelled.append(newer.order_id)
            newer.remaining = 0
            continue
        trades: list[AuctionTrade] = []
        for b, s in zip(buy_units, sell_units, strict=True):
            assert s.price <= price <= b.price
            if trades and trades[-1][:2] == (b.order_id, s.order_id):
                trades[-1] = (b.order_id, s.order_id, price, trades[-1][3] + 1)
            else:
                trades.append((b.order_id, s.order_id, price, 1))
            b.remaining -= 1
            s.remaining -= 1
        return cancelled, trades


def _aggregate(orders: list[Resting]) -> Levels:
    totals: dict[int, int] = defaultdict(int)
    for o in orders:
        totals[o.price] += o.remaining
    return sorted(totals.items())


pre_open_orders = st.lists(
    st.tuples(st.sampled_from(TEAMS), st.sampled_from(IIDS), st.sampled_from(("buy", "sell")),
              st.integers(LO, HI), st.integers(1, 20)),
    max_size=30)


@settings(max_examples=150, deadline=None)
@given(orders=pre_open_orders)
def test_engine_opening_auction_matches_model(
    orders: list[tuple[str, str, str, int, int]],
) -> None:
    x = Exchange()
    x.apply(SetPhase(phase="pre_open"))
    model: dict[str, list[Resting]] = {iid: [] for iid in IIDS}
    for arrival, (team, iid, side, price, qty) in enumerate(orders):
        order_id = x.limit(team, side, price, qty, iid)
        model[iid].append(Resting(order_id, team, side, price, qty, arrival))
    events = x.apply(SetPhase(phase="continuous"))
    trades = auction_trades(events)
    cancels = [e.order_id for e in events if isinstance(e, CancelAck)]
    want_cancels: list[str] = []
    for iid in IIDS:
        book = x.engine.books[iid]
        iid_cancels, want = model_auction(model[iid])
        want_cancels += iid_cancels
        assert trades.get(iid, []) == want, iid
        assert len({price for _, _, price, _ in want}) <= 1  # one uniform price
        assert not book.crossed(), iid
        # After the cross nothing is left that could trade at any price.
        bids, asks = book.depth(None)
        assert brute_force(bids, asks, every_tick(bids, asks)) is None
        survivors = sorted((o for o in model[iid] if o.remaining),
                           key=lambda o: (o.side != "buy", -o.price if o.side == "buy"
                                          else o.price, o.arrival))
        assert x.resting(iid) == [(o.order_id, o.side, o.price, o.remaining) for o in survivors]
        positions = [x.engine.accounts[t].positions.get(iid, 0) for t in TEAMS]
        assert sum(positions) == 0
        for t, position in zip(TEAMS, positions, strict=True):
            bought = sum(q for b, _, _, q in want if _team(model[iid], b) == t)
            sold = sum(q for _, s, _, q in want if _team(model[iid], s) == t)
            assert position == bought - sold
    assert cancels == want_cancels
    accts = x.engine.accounts.values()
    assert sum(a.cash - a.fees for a in accts) == 0
    volume = sum(q for iid_trades in trades.values() for *_, q in iid_trades)
    assert sum(a.fees for a in accts) == 2 * volume * FEES["maker_fee_cents"]


def _team(orders: list[Resting], order_id: str) -> str:
    return next(o.team for o in orders if o.order_id == order_id)
