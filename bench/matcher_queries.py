"""The matcher's read-only answers at the game's size limits: what one leaderboard refresh
(every account at once), one team's account, a key lookup and a snapshot (every
`matcher.snapshot_interval_s`, with each team's window of client order ids full) cost the
matching thread.

    python bench/matcher_queries.py [--quick] [--teams N] [--orders N] [--runs R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from common.config import load_config
from common.messages import CancelOrder, NewOrder, OrderAck, RegisterTeam, encode
from services.matcher import queries
from services.matcher.engine import COID_WINDOW, Engine
from services.matcher.state import snapshot_bytes


def build(teams: int, orders: int) -> Engine:
    """`teams` market makers and `orders` resting one-lot limits spread over the book."""
    config = load_config(env={}, overrides={"game": {"max_teams": teams,
                                                       "initial_phase": "continuous"}})
    engine, seq, rng = Engine(config.game), 0, random.Random(1)
    for i in range(teams):
        seq += 1
        engine.apply(RegisterTeam(team_name=f"t{i}", role="market_maker",
                                  key_hash=f"{i:064x}"), seq, seq)
    ids, iids = [t for t in engine.teams if t.startswith("TEAM")], list(engine.instruments)
    ts = 10**18
    while len(engine.live) < orders:  # bids 1.00-1.50, asks 2.00-2.50: nothing crosses
        seq, ts = seq + 1, ts + 10**8  # 10 a second per team at most: spread them in time
        side = rng.choice(("buy", "sell"))
        price = (100 if side == "buy" else 200) + rng.randint(0, 50)
        engine.apply(NewOrder(team_id=rng.choice(ids), instrument_id=rng.choice(iids),
                              side=side, quantity=1, price=price), seq, ts)
    for team in ids:  # each team's window of client order ids full: placed, then cancelled
        for i in range(COID_WINDOW):
            seq, ts = seq + 2, ts + 10**8
            out = engine.apply(NewOrder(team_id=team, instrument_id=iids[0], side="buy",
                                        quantity=1, price=50, client_order_id=f"c{i}"), seq, ts)
            order_id = next(e.order_id for _, e in out if isinstance(e, OrderAck))
            engine.apply(CancelOrder(team_id=team, order_id=order_id), seq + 1, ts)
    return engine


def median_ms(call: object, runs: int) -> float:
    assert callable(call)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 30 s")
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=0)
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 21)
    engine = build(args.teams, args.orders)
    team = "TEAM_001"  # a registered team with its share of the orders (not the house's)
    every = median_ms(lambda: queries.accounts(engine), runs)  # no team's page open
    size_kb = len(encode(queries.accounts(engine))) / 1000
    one = median_ms(lambda: queries.account(engine, team), runs)
    # ms for 1,000 lookups = us for one
    snapshot = median_ms(lambda: snapshot_bytes(engine), max(3, runs // 4))
    snapshot_mb = len(snapshot_bytes(engine)) / 1e6
    key_us = median_ms(lambda: [queries.team(engine, None, f"{i:064x}") for i in range(1000)], runs)
    print(f"{args.teams} teams, {len(engine.live)} resting orders, medians of {runs} runs: "
          f"every account {every:.2f} ms ({size_kb:.0f} KB), one account ({team}: "
          f"{len(queries.account(engine, team).open_orders)} orders) {one:.3f} ms, "
          f"a key {key_us:.2f} us, a snapshot {snapshot:.0f} ms ({snapshot_mb:.1f} MB)")
    print(f"RESULT teams={args.teams} resting_orders={len(engine.live)} "
          f"accounts_query_ms={every:.2f} accounts_reply_kb={size_kb:.0f} "
          f"account_query_ms={one:.3f} key_lookup_us={key_us:.2f} snapshot_ms={snapshot:.0f} "
          f"snapshot_mb={snapshot_mb:.1f}")


if __name__ == "__main__":
    main()
