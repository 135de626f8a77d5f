"""The matcher's replay rings at `game.max_teams`: the memory they hold once every team has had
`--events` execution reports, under the default config's sizes and budget.

    python bench/replay_memory.py [--quick] [--teams N] [--events N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.config import load_config
from common.messages import ExecutionReport
from services.matcher.replay import ReplayRings

BATCH = 100  # events per topic per add, as the matcher feeds a batch


def report(team: str, seq: int) -> ExecutionReport:
    return ExecutionReport(
        seq=seq, ts_ns=10**18 + seq, epoch=1, order_id=f"ORD_{seq:08d}",
        client_order_id=f"c{seq}", team_id=team, trade_id=f"TRD_{seq:08d}",
        instrument_id="SPX_4500_CALL", side="buy", executed_quantity=1, executed_price=100,
        remaining_quantity=0, order_status="filled", liquidity="maker", fee=2)


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 30 s")
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--events", type=int, default=0)
    args = parser.parse_args()
    cfg = load_config(env={}, overrides={}).matcher
    events = args.events or (cfg.replay_ring if args.quick else 2 * cfg.replay_ring)
    before, start = rss_mb(), time.perf_counter()
    rings = ReplayRings(cfg.replay_ring, cfg.md_replay_ring, cfg.replay_total)
    for t in range(args.teams):
        team = f"TEAM_{t:04d}"
        topic = f"exec.{team}".encode()
        for first in range(1, events + 1, BATCH):
            last = min(first + BATCH - 1, events)
            rings.add(topic, last, [report(team, s) for s in range(first, last + 1)])
    grown = rss_mb() - before
    kept = sum(len(rings.replay(f"exec.TEAM_{t:04d}".encode(), 1).payloads)
               for t in range(min(args.teams, 10)))  # a sample: replays encode
    print(f"{args.teams} teams x {events} events (replay_ring {cfg.replay_ring}, replay_total "
          f"{cfg.replay_total}): {rings.share} kept per team ({kept // min(args.teams, 10)} in "
          f"a sample), RSS +{grown:.0f} MB, {time.perf_counter() - start:.0f} s")
    print(f"RESULT teams={args.teams} events_per_team={events} kept_per_team={rings.share} "
          f"rss_mb={grown:.0f}")


if __name__ == "__main__":
    main()
