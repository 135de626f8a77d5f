"""Load generator: N teams x R orders/s through the gateway, over HTTP and WebSocket.

Each team is an `AsyncClient` (keep-alive HTTP over bench/leanhttp.py, so that the generator
is not the bottleneck) with its WebSocket stream. Every second it
sends R trading requests at a steady pace (open loop, at most 16 in flight per team): 60% limit
orders (a third of them priced to trade at once), 10% market orders, 30% cancels of its own
resting orders; plus one query (positions, open orders or a book) per 10 trading requests.
It prints a progress bar, then throughput, latency percentiles (REST: request -> answer;
execution report: order sent -> its first fill on the WebSocket, for orders that trade on
arrival), errors and rejects by code, and a consistency check:
- positions from the API sum to zero per instrument (other traders, e.g. the house's retail
  flow, are added from the trades table);
- every fill a client saw is in the trades table, no trade of these teams is missing from
  what the clients saw, and no client saw a fill twice.

    python bench/load.py [--quick] [--teams N] [--rate R] [--seconds S] [--retail]
    python bench/load.py --url http://HOST:8000 --db-url postgresql+psycopg://...  # a live one

Without --url it runs its own embedded exchange (`itg up`, SQLite; the market makers' limits
raised so the load is never rate- or position-limited; retail flow off unless --retail).
Ends with one line: RESULT requests_per_s=... rest_p50_ms=... rest_p99_ms=... exec_p99_ms=...
errors=... consistency=ok|FAILED|partial
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop
from benchkit import RELAXED, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checks import consistency
from leanhttp import LeanHttp

from bots.aclient import AsyncClient, AsyncStream
from bots.api import POSITION_CODES, UNKNOWN_OUTCOME, UNREACHABLE, Retry, WsMessage
from bots.pricing import black_scholes, parse, to_tick

INSTRUMENTS = ["SPX", "SPY", "SPX_4400_CALL", "SPX_4400_PUT", "SPX_4500_CALL", "SPX_4300_PUT",
               "SPY_440_CALL", "SPY_440_PUT"]
ERROR_CODES = {"INTERNAL_ERROR", "PROCESSING_TIMEOUT", "SERVICE_UNAVAILABLE", UNREACHABLE,
               UNKNOWN_OUTCOME, "HTTP_ERROR", "UNAUTHORIZED", "VALIDATION_ERROR"}
IN_FLIGHT = 16


def mids() -> dict[str, float]:
    spot = {"SPX": 4400.0, "SPY": 440.0}
    out = {}
    for iid in INSTRUMENTS:
        option = parse(iid)
        out[iid] = spot[iid] if option is None else black_scholes(
            spot[option.underlying], option, 30 / 365, 0.2)[0]
    return out


class Stats:
    def __init__(self) -> None:
        self.rest: list[int] = []  # ns
        self.execs: list[int] = []
        self.kinds: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.skipped = 0


class Team:
    def __init__(self, index: int, client: AsyncClient, stats: Stats, seed: int) -> None:
        self.index, self.client, self.stats = index, client, stats
        self.rng = random.Random(seed * 1000 + index)
        self.mids = mids()
        self.resting: dict[str, None] = {}  # order ids, oldest first
        self.sent: dict[str, int] = {}  # client_order_id -> send time, for takers
        self.fills: Counter[tuple[str, str]] = Counter()  # (trade_id, order_id) seen
        self.in_flight = 0
        self.stream: AsyncStream | None = None

    def on_ws(self, msg: WsMessage) -> None:
        if msg.type != "execution_report":
            return
        data = msg.data
        self.fills[(data["trade_id"], data["order_id"])] += 1
        sent = self.sent.pop(data.get("client_order_id") or "", None)
        if sent is not None and data.get("liquidity_type") == "taker":
            self.stats.execs.append(time.perf_counter_ns() - sent)
        if data.get("order_status") == "filled":
            self.resting.pop(data["order_id"], None)

    async def act(self, query: bool) -> None:
        self.in_flight += 1
        try:
            await (self._query() if query else self._trade())
        finally:
            self.in_flight -= 1

    async def _trade(self) -> None:
        r, rng = self.rng.random(), self.rng
        if r >= 0.7 and self.resting:
            oid = next(iter(self.resting))
            del self.resting[oid]
            await self._timed("cancel", self.client.cancel(oid))
            return
        iid, side = rng.choice(INSTRUMENTS), rng.choice(("buy", "sell"))
        qty, mid, sign = rng.randint(1, 10), self.mids[iid], 1 if side == "buy" else -1
        coid = self.client.ids.next()
        if r < 0.6:
            aggressive = rng.random() < 1 / 3
            offset = 0.002 if aggressive else -rng.uniform(0.001, 0.01)
            price = to_tick(mid * (1 + sign * offset), up=side == "buy")
            kind, call = "limit", self.client.place(iid, side, qty, price, client_order_id=coid)
        else:
            aggressive, kind = True, "market"
            call = self.client.place(iid, side, qty, client_order_id=coid)
        if aggressive:
            self.sent[coid] = time.perf_counter_ns()
        reply = await self._timed(kind, call)
        if reply is not None and reply.ok and reply.order_id and reply.status in (
                "new", "partially_filled"):
            self.resting[reply.order_id] = None

    async def _query(self) -> None:
        which = self.rng.choice(("positions", "orders", "book"))
        call = {"positions": self.client.positions, "orders": self.client.open_orders}.get(which)
        try:
            await self._timed(which, call() if call else self.client.order_book(
                self.rng.choice(INSTRUMENTS)))
        except Exception as exc:
            self.stats.errors[f"{which}: {type(exc).__name__} {getattr(exc, 'code', '')}"] += 1

    async def _timed(self, kind: str, call: Any) -> Any:
        start = time.perf_counter_ns()
        result = await call
        self.stats.rest.append(time.perf_counter_ns() - start)
        self.stats.kinds[kind] += 1
        code = getattr(result, "code", None)
        if code in ERROR_CODES:
            self.stats.errors[f"{kind}: {code}"] += 1
        elif code is not None:
            self.stats.rejects[code] += 1
        return result


async def open_teams(url: str, count: int, seed: int, role: str, relaxed: bool,
                     stats: Stats) -> list[Team]:
    run = f"{os.getpid()}-{random.randrange(1 << 16):04x}"
    teams = []
    for i in range(count):
        client = AsyncClient(url, retry=Retry(attempts=4, total_s=10.0), http=LeanHttp(url))
        await client.register(f"load-{run}-{i}", role)
        if relaxed:
            client.gate.limit = None  # the exchange's limits were raised for the load
        team = Team(i, client, stats, seed)
        team.stream = client.stream(handler=team.on_ws)
        teams.append(team)
    for team in teams:
        assert team.stream is not None
        if not await team.stream.wait_connected(10):
            raise SystemExit(f"team {team.index}: no WebSocket")
    return teams


async def drive(teams: list[Team], rate: float, seconds: float, stats: Stats,
                progress: Progress | None) -> float:
    """Open-loop pacing: R trading requests per second per team, spread evenly."""
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    interval = 1.0 / rate

    async def pace(team: Team) -> None:
        k = 0
        offset = interval * team.index / len(teams)
        while (due := start + offset + k * interval) < start + seconds:
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            k += 1
            if team.in_flight >= IN_FLIGHT:
                stats.skipped += 1
                continue
            for query in (False, True) if k % 10 == 0 else (False,):
                task = asyncio.get_running_loop().create_task(team.act(query))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    pacers = [asyncio.create_task(pace(t)) for t in teams]
    while not all(p.done() for p in pacers):
        await asyncio.sleep(0.25)
        if progress is not None:
            progress.show(time.perf_counter() - start, stats)
    await asyncio.gather(*pacers)
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


class Progress:
    def __init__(self, seconds: float, every_s: float | None = None) -> None:
        self.seconds = seconds
        self.tty = sys.stderr.isatty()
        self.every_s = every_s if every_s is not None else (0.25 if self.tty else 10.0)
        self.next = 0.0

    def show(self, elapsed: float, stats: Stats) -> None:
        if elapsed < self.next and elapsed < self.seconds:
            return
        self.next = elapsed + self.every_s
        done = min(1.0, elapsed / self.seconds)
        bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
        n = len(stats.rest)
        line = (f"[{bar}] {100 * done:3.0f}% {elapsed:5.0f}/{self.seconds:.0f} s  "
                f"{n:,} requests ({n / max(elapsed, 1e-9):,.0f}/s)  "
                f"p99 {pct(stats.rest, 0.99):.1f} ms  errors {sum(stats.errors.values())}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)
        if self.tty and done >= 1.0:
            print(file=sys.stderr)


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def summary(stats: Stats, wall: float, teams: int) -> list[str]:
    lat = "  ".join(f"p{q * 100:g} {pct(stats.rest, q):.2f}" for q in (0.5, 0.9, 0.99, 0.999))
    ex = "  ".join(f"p{q * 100:g} {pct(stats.execs, q):.2f}" for q in (0.5, 0.9, 0.99, 0.999))
    n = len(stats.rest)
    return [
        f"requests: {n:,} in {wall:.1f} s = {n / wall:,.0f}/s from {teams} teams "
        f"({dict(stats.kinds)}); skipped for backpressure: {stats.skipped}",
        f"REST latency ms: {lat}  max {pct(stats.rest, 1.0):.2f}",
        f"execution report latency ms ({len(stats.execs):,} takers): {ex}",
        f"errors: {sum(stats.errors.values())} {dict(stats.errors) or ''}",
        f"rejects (business answers, not errors): {dict(stats.rejects) or 'none'}",
    ]


async def finish(teams: list[Team]) -> None:
    """Cancel what rests, then wait until the WebSockets are quiet."""
    for team in teams:
        for order in await team.client.open_orders():
            await team.client.cancel(order.order_id)
    quiet, last = time.monotonic() + 1.0, -1
    while time.monotonic() < quiet:
        total = sum(sum(t.fills.values()) for t in teams)
        if total != last:
            last, quiet = total, time.monotonic() + 1.0
        await asyncio.sleep(0.1)


async def run(url: str, args: argparse.Namespace, relaxed: bool, db_url: str | None,
              retail: bool) -> tuple[list[str], dict[str, Any]]:
    stats = Stats()
    teams = await open_teams(url, args.teams, args.seed, args.role, relaxed, stats)
    progress = Progress(args.seconds)
    wall = await drive(teams, args.rate, args.seconds, stats, progress)
    await finish(teams)
    lines = summary(stats, wall, len(teams))
    check = await consistency(teams, db_url, retail)
    lines += check["lines"]
    for team in teams:
        if team.stream is not None:
            await team.stream.close()
            stats.errors["ws reconnects"] += team.stream.reconnects
        await team.client.aclose()
    stats.errors = +stats.errors  # drop zero counts
    lines[3] = f"errors: {sum(stats.errors.values())} {dict(stats.errors) or ''}"
    return lines, {"stats": stats, "wall": wall, "check": check["status"], "counts": check,
                   "position_rejects": sum(stats.rejects[c] for c in POSITION_CODES)}


def result_line(out: dict[str, Any]) -> str:
    s: Stats = out["stats"]
    return (f"RESULT requests_per_s={len(s.rest) / out['wall']:.0f} "
            f"rest_p50_ms={pct(s.rest, .5):.2f} rest_p99_ms={pct(s.rest, .99):.2f} "
            f"exec_p50_ms={pct(s.execs, .5):.2f} exec_p99_ms={pct(s.execs, .99):.2f} "
            f"errors={sum(s.errors.values())} consistency={out['check']}")


def start_exchange(directory: Path, retail: bool) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    config = directory / "load.toml"
    config.write_text(f'data_dir = "{directory}/data"\nlog_level = "WARNING"\n'
                      f"[gateway]\nport = {port}\n[simulator]\n"
                      f"retail_orders_per_tick = {3.0 if retail else 0.0}\n" + RELAXED)
    log = (directory / "exchange.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parent.parent)
    return proc, port, f"sqlite:///{directory}/data/itg.db"


async def wait_up(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with AsyncClient(url) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise SystemExit("the exchange exited during start-up (see its log)")
            try:
                health = await client.health()
                if health.get("services", {}).get("gateway", {}).get("synced"):
                    return
            except Exception:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"no healthy exchange at {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 30 s in all)")
    parser.add_argument("--teams", type=int)
    parser.add_argument("--rate", type=float, help="trading requests per second per team")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--role", default="market_maker")
    parser.add_argument("--url", help="a running exchange (default: start one)")
    parser.add_argument("--db-url", help="its database, for the trades check")
    parser.add_argument("--retail", action="store_true", help="own exchange: retail flow on")
    args = parser.parse_args()
    args.teams = args.teams or (5 if args.quick else 10)
    args.rate = args.rate or 20.0
    args.seconds = args.seconds or (10.0 if args.quick else 60.0)
    directory, proc, url, db_url = None, None, args.url, args.db_url
    if url is None:
        directory = Path(tempfile.mkdtemp(prefix="itg-load-"))
        proc, port, db_url = start_exchange(directory, args.retail)
        url = f"http://127.0.0.1:{port}"
        print(f"exchange: itg up (every service a thread, SQLite), logs in {directory}")
    print(f"load: {args.teams} teams x {args.rate:g} requests/s for {args.seconds:g} s on {url}")
    try:
        uvloop.run(wait_up(url, proc, 60))
        lines, out = uvloop.run(run(url, args, args.url is None, db_url,
                                    args.retail or args.url is not None))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
    print("\n".join(lines))
    if directory is not None and out["check"] != "FAILED":
        shutil.rmtree(directory, ignore_errors=True)
    print(result_line(out))


if __name__ == "__main__":
    main()
