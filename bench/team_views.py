"""What one open team page (/ws/team) costs the gateway's event loop at each leaderboard
refresh, late in a game: an hour of P&L path (one point a second) and the last 200 fills.
The first view sends them whole; every later one only what is new.

    python bench/team_views.py [--quick] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from common.config import load_config
from common.messages import AccountReply, ExecutionReport, OpenOrder, TeamInfo
from services.gateway import views
from services.gateway.scores import FILLS, HISTORY, Standings

TEAM = "TEAM_001"


def late_game() -> Standings:
    standings = Standings(load_config(env={}, overrides={}))
    standings.add(TeamInfo(team_id=TEAM, team_name="late", role="market_maker", created_ns=0))
    iids = list(standings.instruments)
    orders = [OpenOrder(order_id=f"ORD_{i:08d}", client_order_id=None, instrument_id=iid,
                        side="buy", order_type="limit", price=100 + i, quantity=5,
                        remaining_quantity=5, ts_ns=10**18) for i, iid in enumerate(iids)]
    account = AccountReply(team_id=TEAM, found=True, positions={iid: 3 for iid in iids},
                           cash=12_345, fees=-5, open_orders=orders, open_count=len(orders),
                           exec_seq=FILLS)
    for second in range(HISTORY):
        standings.update(account, lambda iid: 123, 1_700_000_000 + second)
    for i in range(FILLS):
        standings.on_fill(ExecutionReport(
            seq=i + 1, ts_ns=10**18 + i * 1000, epoch=1, order_id=f"ORD_{i:08d}",
            client_order_id=None, team_id=TEAM, trade_id=f"T{i}", instrument_id=iids[0],
            side="buy", executed_quantity=1, executed_price=100, remaining_quantity=0,
            order_status="filled", liquidity="maker", fee=2), 110)
    return standings


def timed(view: Callable[[], bytes], runs: int) -> tuple[float, int]:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        view()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings), len(view())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 30 s")
    parser.add_argument("--runs", type=int, default=0)
    args = parser.parse_args()
    runs = args.runs or (200 if args.quick else 2000)
    standings = late_game()
    stats = standings.teams[TEAM]
    since = {"history_from": stats.history[-1][0], "fills_after": stats.fills_total}

    def view(**kw: int) -> bytes:
        data = standings.team_view(TEAM, lambda iid: 123, lambda iid: 0.5, **kw)
        return views.dumps({"type": "team", "data": data})

    whole_ms, whole_bytes = timed(view, runs)
    later_ms, later_bytes = timed(lambda: view(**since), runs)
    print(f"one team page, {HISTORY} s of path and {FILLS} fills, medians of {runs} runs: "
          f"first view {whole_ms:.3f} ms ({whole_bytes} bytes), each later view "
          f"{later_ms:.3f} ms ({later_bytes} bytes): {whole_ms / later_ms:.1f}x")
    print(f"RESULT whole_view_ms={whole_ms:.3f} whole_view_bytes={whole_bytes} "
          f"later_view_ms={later_ms:.3f} later_view_bytes={later_bytes} "
          f"ratio={whole_ms / later_ms:.1f}")


if __name__ == "__main__":
    main()
