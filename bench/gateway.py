"""Bots through one gateway process over real HTTP and WebSocket, matcher in its own process.

N bot clients (a keep-alive HTTP connection each, and a WebSocket reader each) trade in pairs:
on each pair's instrument one client sells and the other buys at the same price, so about half
the orders trade on arrival. Two phases:
- saturation: every client posts orders back to back -> orders/s through the gateway;
- paced at --rate orders/s in total (default 500) -> REST order -> response latency, and
  order sent -> its execution_report received on the WebSocket (orders that trade on arrival).

    python bench/gateway.py [--quick] [--clients N] [--seconds S] [--rate R] [--fsync]

Then the yardstick, with the same clients on the same machine: bench/reference_server.py, a
bare Starlette endpoint doing one ZeroMQ round trip to another process (what the target of
>= 4,000 orders/s was set against: ~5,000 req/s where it was set). The gateway's share of it
is the figure that carries from one machine to another.

The matcher runs with its journal's fsync off unless --fsync is given: these are the gateway's
figures, and the matcher's own cost of durability (journal before ack) is measured by
bench/matcher_service.py. With --fsync the answer waits for the matcher's fsync too.

Ends with one line: RESULT orders_per_s=... rest_p50_us=... rest_p99_us=... exec_p50_us=...
exec_p99_us=... reference_req_per_s=... of_reference=...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
import websockets
from benchkit import RELAXED, free_port, ipc_config, start_service

CONFIG = """
[matcher]
fsync = {fsync}
[gateway]
port = {port}
ws_queue_size = 100000
"""
INSTRUMENTS = [f"SPX_{k}_{t}" for k in range(4200, 4601, 100) for t in ("CALL", "PUT")] + [
    f"SPY_{k}_{t}" for k in range(420, 461, 10) for t in ("CALL", "PUT")]


def start(directory: Path, fsync: bool) -> tuple[list[subprocess.Popen[bytes]], int]:
    port = free_port()
    path = directory / "bench.toml"
    path.write_text(ipc_config(directory, "heartbeat_s = 0.1")
                    + CONFIG.format(port=port, fsync=str(fsync).lower()) + RELAXED)
    # the services' logs are kept out of the bench's own output
    procs = [start_service(name, path, directory / f"{name}.log")
             for name in ("matcher", "gateway")]
    return procs, port


class Http:
    """A minimal keep-alive HTTP/1.1 client: the bench measures the server, not a client."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def call(self, method: str, path: str, body: bytes = b"", key: str = "") -> dict:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        if key:
            head += f"X-API-Key: {key}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return json.loads(await self.reader.readexactly(length))  # type: ignore[no-any-return]


class Bot:
    def __init__(self, index: int, port: int) -> None:
        self.index = index
        self.port = port
        self.http = Http(port)
        self.side = "sell" if index % 2 == 0 else "buy"
        self.instrument = INSTRUMENTS[(index // 2) % len(INSTRUMENTS)]
        self.exec_seen: dict[str, int] = {}
        self.rest: list[int] = []
        self.taker_sent: dict[str, int] = {}
        self.count = 0
        self.errors: dict[str, int] = {}

    async def setup(self, run: str) -> None:
        await self.http.open()
        body = json.dumps({"team_name": f"bench-{run}-{self.index}", "role": "market_maker"})
        reply = await self.http.call("POST", "/game/teams/register", body.encode())
        self.key = reply["data"]["api_key"]
        self.ws = await websockets.connect(f"ws://127.0.0.1:{self.port}/ws?api_key={self.key}",
                                           max_size=None, compression=None)
        await self.ws.recv()  # position_snapshot
        self.reader = asyncio.get_running_loop().create_task(self.read())

    async def read(self) -> None:
        clock = time.perf_counter_ns
        async for raw in self.ws:
            if '"execution_report"' in raw:
                data = json.loads(raw)["data"]
                coid = data["client_order_id"]
                if coid is not None and coid not in self.exec_seen:
                    self.exec_seen[coid] = clock()

    async def order(self, record: bool) -> None:
        self.count += 1
        coid = f"b{self.index}-{self.count}"
        body = (f'{{"instrument_id":"{self.instrument}","side":"{self.side}","quantity":1,'
                f'"price":100.00,"client_order_id":"{coid}"}}').encode()
        sent = time.perf_counter_ns()
        reply = await self.http.call("POST", "/exchange/orders", body, self.key)
        if record:
            self.rest.append(time.perf_counter_ns() - sent)
            if reply["success"] and reply["data"]["status"] == "filled":
                self.taker_sent[coid] = sent
        if not reply["success"]:
            code = reply["error"]["code"]
            self.errors[code] = self.errors.get(code, 0) + 1

    def exec_latencies(self) -> list[int]:
        return [self.exec_seen[c] - t for c, t in self.taker_sent.items() if c in self.exec_seen]

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        self.http.writer.close()


async def saturate(bots: list[Bot], seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * len(bots)

    async def loop(i: int, bot: Bot) -> None:
        while time.monotonic() < stop:
            await bot.order(record=False)
            counts[i] += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(i, b) for i, b in enumerate(bots)))
    return sum(counts) / (time.perf_counter() - start)


async def paced(bots: list[Bot], seconds: float, rate: float) -> None:
    interval = len(bots) / rate

    async def loop(i: int, bot: Bot) -> None:
        t0 = time.perf_counter() + interval * i / len(bots)
        n = int(seconds / interval)
        for k in range(n):
            delay = t0 + k * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await bot.order(record=True)

    await asyncio.gather(*(loop(i, b) for i, b in enumerate(bots)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


async def wait_up(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            http = Http(port)
            await http.open()
            health = await http.call("GET", "/")
            http.writer.close()
            if health["status"] == "ok" and health["services"]["gateway"]["synced"]:
                return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        await asyncio.sleep(0.05)
    raise SystemExit("gateway did not come up in time (see the service logs)")


async def bench(port: int, args: argparse.Namespace, pids: dict[str, int]) -> str:
    await wait_up(port, time.monotonic() + 30)
    bots = [Bot(i, port) for i in range(args.clients)]
    run = f"{os.getpid()}"
    for bot in bots:
        await bot.setup(run)
    gc.collect()
    gc.freeze()  # the clients' own GC pauses are not the gateway's latency
    await saturate(bots, 1.0)  # warm-up
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wall = time.monotonic()
    per_s = await saturate(bots, args.seconds)
    wall = time.monotonic() - wall
    cpu = ", ".join(f"{name} {100 * (cpu_seconds(pid) - before[name]) / wall:.0f}%"
                    for name, pid in pids.items())
    print(f"saturation: {args.clients} clients, {per_s:,.0f} orders/s (CPU: {cpu}; "
          f"matcher fsync {'on' if args.fsync else 'off'})")
    await paced(bots, args.seconds, args.rate)
    await asyncio.sleep(0.2)  # the last execution reports
    rest = [v for b in bots for v in b.rest]
    execs = [v for b in bots for v in b.exec_latencies()]
    errors: dict[str, int] = {}
    for b in bots:
        for code, n in b.errors.items():
            errors[code] = errors.get(code, 0) + n
    print(f"paced at {args.rate:g}/s: {len(rest)} orders, REST p50 {pct(rest, .5):.0f} us "
          f"p99 {pct(rest, .99):.0f} us (mean {statistics.mean(rest) / 1000:.0f} us); "
          f"{len(execs)} taker execution reports p50 {pct(execs, .5):.0f} us "
          f"p99 {pct(execs, .99):.0f} us; rejects {errors or 'none'}")
    for bot in bots:
        await bot.close()
    return (f"RESULT orders_per_s={per_s:.0f} rest_p50_us={pct(rest, .5):.0f} "
            f"rest_p99_us={pct(rest, .99):.0f} exec_p50_us={pct(execs, .5):.0f} "
            f"exec_p99_us={pct(execs, .99):.0f}")


async def reference_rate(port: int, clients: int, seconds: float) -> float:
    """Requests/s through the reference server, `clients` keep-alive clients back to back."""
    await wait_listening(port, time.monotonic() + 30)
    body = b'{"instrument_id":"SPX_4500_CALL","side":"buy","quantity":1,"price":100.00}'
    https = [Http(port) for _ in range(clients)]
    for http in https:
        await http.open()

    async def loop(http: Http, stop: float) -> int:
        n = 0
        while time.monotonic() < stop:
            await http.call("POST", "/exchange/orders", body, "key")
            n += 1
        return n

    await asyncio.gather(*(loop(h, time.monotonic() + 1.0) for h in https))  # warm-up
    start = time.perf_counter()
    stop = time.monotonic() + seconds
    counts = await asyncio.gather(*(loop(h, stop) for h in https))
    rate = sum(counts) / (time.perf_counter() - start)
    for http in https:
        http.writer.close()
    return rate


async def wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit("the reference server did not come up in time")


def run_reference(directory: Path, clients: int, seconds: float) -> float:
    port, address = free_port(), f"ipc://{directory}/reference.sock"
    script = str(Path(__file__).resolve().parent / "reference_server.py")
    procs = [subprocess.Popen([sys.executable, script, "echo", address]),
             subprocess.Popen([sys.executable, script, "http", str(port), address])]
    try:
        return uvloop.run(reference_rate(port, clients, seconds))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (< 30 s in all)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, help="length of each phase")
    parser.add_argument("--rate", type=float, default=500.0, help="paced phase, orders/s")
    parser.add_argument("--fsync", action="store_true",
                        help="matcher journal with fsync per batch (answers wait for it)")
    args = parser.parse_args()
    args.seconds = args.seconds or (5.0 if args.quick else 15.0)
    directory = Path(tempfile.mkdtemp(prefix="itg-gw-"))
    procs, port = start(directory, fsync=args.fsync)
    print(f"services: matcher and gateway processes, logs in {directory}")
    try:
        pids = {"gateway": procs[1].pid, "matcher": procs[0].pid, "bench clients": os.getpid()}
        result = uvloop.run(bench(port, args, pids))
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    reference = run_reference(directory, args.clients, args.seconds)
    shutil.rmtree(directory, ignore_errors=True)  # kept (with the service logs) on a failure
    per_s = float(result.split("orders_per_s=")[1].split()[0])
    print(f"reference (bare Starlette endpoint + one ZeroMQ round trip, same clients): "
          f"{reference:,.0f} req/s; the gateway does {100 * per_s / reference:.0f}% of it")
    print(f"{result} reference_req_per_s={reference:.0f} of_reference={per_s / reference:.2f}")


if __name__ == "__main__":
    main()
