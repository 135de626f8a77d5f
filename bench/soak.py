"""Soak: the full cluster, one process per service over ipc, PostgreSQL, under bench/load.py's
load for 10 minutes (20 teams x 25 orders/s), watching memory.

    python bench/soak.py [--quick] [--minutes M] [--teams N] [--rate R] [--pg-url URL]

Services: dbwriter, matcher (journal fsync on), simulator (retail flow on), events, gateway,
each `itg service NAME` in its own process, so the RSS of each is its own. Memory is read
from /proc at minute 2 (after warm-up) and at the end; the replay rings and the gateway's
resume window are set to 2,000 messages so these bounded buffers are full by minute 2 (a team
gets ~36 private messages a second here: 2,000 in under a minute, 5,000 only after 140 s) and
"flat" means no unbounded growth. --quick: the same for 20 s (RSS at 5 s and at the end).
The load's consistency check runs against the PostgreSQL trades table (a fresh schema,
dropped afterwards unless the run failed or --keep).

Ends with one line: RESULT minutes=... requests_per_s=... errors=... lost_trades=...
duplicated_trades=... rest_p99_ms=... exec_p99_ms=... rss_growth_mb=... consistency=...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import load
import uvloop
from benchkit import RELAXED, free_port, ipc_config, start_service
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SERVICES = ("dbwriter", "matcher", "simulator", "events", "gateway")  # start order
PG_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CONFIG = """
[db]
url = "{db}"
[matcher]
replay_ring = 2000
md_replay_ring = 2000
[gateway]
port = {port}
session_window = 2000
"""


def schema(url: str, name: str, create: bool) -> str:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"{'create' if create else 'drop'} schema {name}"
                          f"{'' if create else ' cascade'}"))
    engine.dispose()
    return make_url(url).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
        hide_password=False)


def start(directory: Path, db_url: str) -> tuple[dict[str, subprocess.Popen[bytes]], int]:
    port = free_port()
    config = directory / "soak.toml"
    config.write_text(ipc_config(directory, "heartbeat_s = 0.2")
                      + CONFIG.format(db=db_url, port=port) + RELAXED)
    procs = {name: start_service(name, config, directory / f"{name}.log") for name in SERVICES}
    return procs, port


def stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for name in reversed(SERVICES):  # producers first, persistence last
        procs[name].terminate()
        try:
            procs[name].wait(20)
        except subprocess.TimeoutExpired:
            procs[name].kill()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sample(procs: dict[str, subprocess.Popen[bytes]], at: list[float],
                 into: dict[float, dict[str, float]]) -> None:
    start = time.perf_counter()
    for offset in at:
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        into[offset] = {name: rss_mb(p.pid) for name, p in procs.items() if p.poll() is None}


async def soak(url: str, args: argparse.Namespace, db_url: str,
               procs: dict[str, subprocess.Popen[bytes]]) -> tuple[list[str], dict[str, Any]]:
    await load.wait_up(url, None, 60)
    rss: dict[float, dict[str, float]] = {}
    marks = [args.warm_s, args.seconds - 1.0]
    sampler = asyncio.create_task(sample(procs, marks, rss))
    lines, out = await load.run(url, args, True, db_url, True)
    await sampler
    out["rss"] = [rss.get(m, {}) for m in marks]
    out["dead"] = [n for n, p in procs.items() if p.poll() is not None]
    return lines, out


def span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:g} min"


def memory_table(out: dict[str, Any], warm_s: float, end_s: float) -> tuple[list[str], float]:
    warm, end = out["rss"]
    lines = [f"RSS MB per service: at {span(warm_s)}, at {span(end_s)}, growth"]
    worst = 0.0
    for name in SERVICES:
        a, b = warm.get(name, float("nan")), end.get(name, float("nan"))
        worst = max(worst, b - a)
        lines.append(f"  {name:<9} {a:8.1f} {b:8.1f} {b - a:+8.1f} ({100 * (b - a) / a:+.1f}%)")
    return lines, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 s instead of 10 min")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--rate", type=float, default=25.0, help="orders/s per team")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--keep", action="store_true", help="keep the schema and the logs")
    args = parser.parse_args()
    args.seconds = 20.0 if args.quick else args.minutes * 60
    args.warm_s = 5.0 if args.quick else min(120.0, args.seconds / 5)
    args.role = "market_maker"
    directory = Path(tempfile.mkdtemp(prefix="itg-soak-"))
    name = f"itg_soak_{secrets.token_hex(4)}"
    db_url = schema(args.pg_url, name, create=True)
    procs, port = start(directory, db_url)
    url = f"http://127.0.0.1:{port}"
    print(f"soak: {', '.join(SERVICES)} as processes (ipc), PostgreSQL schema {name}, logs in "
          f"{directory}\nload: {args.teams} teams x {args.rate:g} orders/s for "
          f"{span(args.seconds)} on {url}", flush=True)
    try:
        lines, out = uvloop.run(soak(url, args, db_url, procs))
    finally:
        stop(procs)
    mem, growth = memory_table(out, args.warm_s, args.seconds)
    print("\n".join(lines + mem))
    if out["dead"]:
        print(f"services that died during the soak: {out['dead']}")
    c, s = out["counts"], out["stats"]
    failed = out["check"] != "ok" or out["dead"] or sum(s.errors.values())
    if not failed and not args.keep:
        schema(args.pg_url, name, create=False)
        shutil.rmtree(directory, ignore_errors=True)
    print(f"RESULT minutes={args.seconds / 60:.3g} teams={args.teams} rate={args.rate:g} "
          f"requests_per_s={len(s.rest) / out['wall']:.0f} errors={sum(s.errors.values())} "
          f"lost_trades={c.get('missing', 'na')}+{c.get('unseen', 'na')} "
          f"duplicated_trades={c.get('duplicates', 'na')} "
          f"rest_p99_ms={load.pct(s.rest, .99):.2f} exec_p99_ms={load.pct(s.execs, .99):.2f} "
          f"rss_growth_mb={growth:.1f} consistency={out['check']}")


if __name__ == "__main__":
    main()
