"""The standard matcher benchmark mix, generated against a shadow engine so it means the same
thing when it is replayed: 60% passive limit orders, 25% crossing orders that take 1-3 resting
orders, 15% cancels of live orders; 20 instruments, 10 teams, limits set out of the way.
"""

from __future__ import annotations

import random
from typing import Any

from common.config import Config, load_config, only_roles
from common.messages import CancelOrder, Command, NewOrder, RegisterTeam
from services.matcher.book import OrderBook
from services.matcher.engine import Engine

BENCH_ROLE: dict[str, Any] = {
    "maker_fee_cents": 1, "taker_fee_cents": -2, "position_limit": 10**7,
    "total_position_limit": 10**8, "underlying_position_limit": 10**7,
    "max_order_size": 10**6, "max_orders_per_s": 10**9,
}
TEAMS = 10
INSTRUMENTS = 20
STEP_NS = 10_000  # command time advances 10 us per order


def bench_config(data_dir: str = "bench-data", **extra: Any) -> Config:
    roles = only_roles({"bench": BENCH_ROLE})
    return load_config(env={}, overrides={"data_dir": data_dir, "game": {"roles": roles},
                                          **extra})


def registrations() -> list[Command]:
    return [RegisterTeam(team_name=f"bench{i}", role="bench", key_hash=f"k{i}", gw="bench",
                         req_id=f"r{i}") for i in range(TEAMS)]


def generate(n: int, seed: int = 1, gw: str = "bench") -> list[Command]:
    """n order-flow commands after the registrations; req_id is the command's index."""
    rng = random.Random(seed)
    shadow = Engine(bench_config().game)
    for seq, cmd in enumerate(registrations(), start=1):
        shadow.apply(cmd, seq, seq)
    iids = list(shadow.instruments)[:INSTRUMENTS]
    teams = list(shadow.accounts)
    seq = TEAMS
    cmds: list[Command] = []
    for i in range(n):
        cmd = _next(rng, shadow, iids, teams, gw, str(i))
        seq += 1
        shadow.apply(cmd, seq, seq * STEP_NS)
        cmds.append(cmd)
    return cmds


def _next(rng: random.Random, shadow: Engine, iids: list[str], teams: list[str], gw: str,
          req_id: str) -> Command:
    roll = rng.random()
    team = rng.choice(teams)
    if roll < 0.15 and shadow.live:
        oid = f"ORD_{shadow.counters['order'] - rng.randrange(200):08d}"  # a recent order
        order = shadow.live.get(oid)
        if order is not None:
            return CancelOrder(gw=gw, req_id=req_id, team_id=order.team_id, order_id=oid)
    iid = rng.choice(iids)
    side = rng.choice(("buy", "sell"))
    book = shadow.books[iid]
    if roll < 0.40:
        crossing = _crossing(rng, book, side, team)
        if crossing is not None:
            price, quantity = crossing
            return NewOrder(gw=gw, req_id=req_id, team_id=team, instrument_id=iid, side=side,
                            quantity=quantity, price=price)
    mid = 10_000
    offset = rng.randint(1, 30)
    price = mid - offset if side == "buy" else mid + offset
    return NewOrder(gw=gw, req_id=req_id, team_id=team, instrument_id=iid, side=side,
                    quantity=rng.randint(1, 10), price=price)


def _crossing(rng: random.Random, book: OrderBook, side: str,
              team: str) -> tuple[int, int] | None:
    """Price and size that take the first 1-3 resting orders of other teams."""
    opp = book.asks if side == "buy" else book.bids
    takes = rng.randint(1, 3)
    quantity, price = 0, None
    front = (o for key in opp.keys[:3] for o in opp.levels[opp.sign * key] if o.remaining)
    for order in front:
        if order.team_id == team:
            return None  # keep the mix free of self-trade cancels
        quantity += order.remaining
        price = order.price
        takes -= 1
        if not takes:
            break
    return None if price is None else (price, quantity)
