"""The example bots and the client library against a real embedded cluster: matcher, simulator
and events as threads over inproc, a real uvicorn gateway on a fixed port (so it can be
restarted in the middle of a game), real HTTP and WebSocket clients.

The game is short and seeded, at 20x speed: forecasts and tracking-error signals come every
second or so, and retail flow trades against whoever quotes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bots.aclient import AsyncClient
from bots.api import POSITION_CODES, Limits
from bots.base import Bot
from bots.client import Client
from bots.feed import MarketFeed
from bots.pricing import parse
from bots.run import leaderboard, limits_from, make_bot, start_demo
from common.config import Config
from common.transport import address
from services import cli
from services.gateway.service import GatewayService
from services.launcher import Cluster
from tests.conftest import make_config, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Game:
    """The cluster, with a gateway this test can stop and start again on the same port."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.config: Config = cluster.config
        self.url = f"http://127.0.0.1:{self.config.gateway.port}"
        self.gateway: GatewayService | None = None
        self.thread: threading.Thread | None = None
        self.start_gateway()

    def start_gateway(self) -> None:
        self.gateway = GatewayService(self.config, self.cluster.ctx)
        self.thread = threading.Thread(target=self.gateway.run, daemon=True, name="test-gw")
        self.thread.start()
        gateway, thread = self.gateway, self.thread
        wait_for(lambda: gateway.ready.is_set() or not thread.is_alive(), 30)
        assert gateway.ready.is_set(), "the gateway did not start"

    def stop_gateway(self) -> None:
        assert self.gateway is not None and self.thread is not None
        self.gateway.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()

    def limits(self, role: str) -> Limits:
        return limits_from(self.config.game.roles[role])


@pytest.fixture(scope="module")
def game(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Game]:
    data: Path = tmp_path_factory.mktemp("bots") / "data"
    config = make_config(
        data, gateway={"port": free_port()}, bus={"heartbeat_s": 0.05},
        game={"seed": 7}, simulator={"speed": 20.0, "news_wait_s": 0.0},
        matcher={"fsync": False})
    with Cluster(config, ["matcher", "simulator", "events"]) as cluster:
        g = Game(cluster)
        try:
            yield g
        finally:
            g.stop_gateway()


def within_limits(bot: Bot, positions: dict[str, int]) -> None:
    lim = bot.inv.limits
    for iid, peak in bot.max_abs.items():
        assert peak <= (lim.position if parse(iid) else lim.underlying), (bot.name, iid, peak)
    assert bot.max_total <= lim.total, (bot.name, bot.max_total)
    options = {i: p for i, p in positions.items() if parse(i)}
    assert all(abs(p) <= lim.position for p in options.values()), (bot.name, options)
    assert sum(abs(p) for p in options.values()) <= lim.total
    assert not [k for k in bot.stats if k.removeprefix("reject ") in POSITION_CODES], bot.stats


def test_example_bots_trade_within_limits_through_a_gateway_restart(game: Game) -> None:
    bots = [make_bot(kind, game.url, f"test-{kind}", seed=i, limits=game.limits(kind),
                     verbose=False)
            for i, kind in enumerate(("market_maker", "hedge_fund", "arbitrage"))]
    stop = threading.Event()
    threads = [threading.Thread(target=b.run, args=(stop,), daemon=True) for b in bots]
    for t in threads:
        t.start()
    wait_for(lambda: all(b.stats["fills"] >= 3 for b in bots), 30)
    before = [b.stats.copy() for b in bots]
    game.stop_gateway()  # bots see refused connections and a dropped WebSocket
    game.start_gateway()
    wait_for(lambda: all(b.stats["fills"] >= s["fills"] + 3 and b.stats["orders"] > s["orders"]
                         for b, s in zip(bots, before, strict=True)), 30)
    stop.set()
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    for bot in bots:
        assert bot.stream is not None and bot.stream.reconnects >= 1, bot.name
        assert bot.stream.tracker.counters["resets"] >= 1  # a fresh snapshot after the restart
        positions = bot.client.positions()
        assert {i: p for i, p in positions.items() if p} == {
            i: p for i, p in bot.inv.positions.items() if p}, bot.name  # resynced exactly
        within_limits(bot, positions)
        assert bot.client.open_orders() == []  # cancelled on the way out
        bot.client.close()


def test_a_bot_whose_team_connects_elsewhere_stops_and_leaves_the_orders(game: Game) -> None:
    """Without its stream it would trade blind to its own fills; cancelling on the way out
    would cancel the orders of the process that took over (the same team)."""
    bot = make_bot("market_maker", game.url, "test-replaced", limits=game.limits("market_maker"),
                   verbose=False)
    thread = threading.Thread(target=bot.run, daemon=True)
    thread.start()
    wait_for(lambda: len(bot.inv.orders) >= 2, 30, "quoting")
    other = Client(game.url, bot.client.api_key)
    stream = other.stream()
    try:
        thread.join(10)
        assert not thread.is_alive() and bot.stream is not None and bot.stream.replaced
        assert other.open_orders(), "the bot cancelled the team's orders on its way out"
    finally:
        stream.close()
        other.cancel_all()
        other.close()
        bot.client.close()


def test_a_bot_written_for_the_original_api_runs_unchanged(game: Game) -> None:
    """The original's bots: plain HTTP with X-API-Key, the same paths, fields and codes."""
    http = httpx.Client(base_url=game.url, timeout=10)
    reg = http.post("/game/teams/register", json={"team_name": "legacy", "role": "market_maker"})
    body = reg.json()
    assert body["success"] and body["data"]["api_key"].startswith("itg_")
    headers = {"X-API-Key": body["data"]["api_key"], "Content-Type": "application/json"}
    # an underlying: retail flow trades options only, and would fill a resting option order
    order = {"instrument_id": "SPY", "side": "buy", "quantity": 10, "price": 1.0,
             "request_id": f"req_{time.time()}", "client_order_id": "my_SPY_buy_1"}
    placed = http.post("/exchange/orders", json=order, headers=headers).json()
    assert placed["success"] and placed["order_id"] and placed["request_id"] == order[
        "request_id"]
    opened = http.get("/exchange/orders", headers=headers).json()["data"]["orders"]
    assert [o["order_id"] for o in opened] == [placed["order_id"]]
    positions = http.get("/positions", headers=headers).json()["data"]["positions"]
    assert isinstance(positions, dict)
    cancelled = http.delete(f"/exchange/orders/{placed['order_id']}", headers=headers).json()
    assert cancelled["success"]
    again = http.delete(f"/exchange/orders/{placed['order_id']}", headers=headers).json()
    assert again["error"]["code"] == "CANCEL_FAILED"
    assert http.get("/positions").status_code == 401
    http.close()


def test_client_resends_with_the_same_id_and_waits_out_the_rate_limit(game: Game) -> None:
    client = Client(game.url)
    client.register("client-retries", "arbitrage")
    first = client.place("SPY_440_PUT", "buy", 1, 0.5, client_order_id="same-1")
    again = client.place("SPY_440_PUT", "buy", 1, 0.5, client_order_id="same-1")
    assert first.ok and again.ok and again.order_id == first.order_id
    client.gate.limit = None  # forget the role's rate: the exchange has to say it
    replies = [client.place("SPY_440_PUT", "buy", 1, 0.5 + i / 100) for i in range(20)]
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    assert client.counters["rate_limited"] >= 1 and client.gate.limit == 7  # learnt
    ids = [o.client_order_id for o in client.open_orders()]
    assert len(ids) == len(set(ids))
    # each order placed once: cancelled now, or filled whole (retail flow sells into bids)
    cancelled = client.cancel_all()
    assert cancelled + client.positions().get("SPY_440_PUT", 0) == 21
    client.close()


def test_async_client_stream_resumes_where_it_left_off(game: Game) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncClient(game.url) as client:
            await client.register("async-client", "hedge_fund")
            seen: list[Any] = []
            stream = client.stream(handler=seen.append)
            assert await stream.wait_connected(10)
            # the snapshot first: an order placed before the gateway took it would be in it,
            # and its ack (older than the snapshot) rightly never sent
            await until(lambda: any(m.type == "position_snapshot" for m in seen))
            placed = await client.place("SPY", "buy", 2, 0.25)  # no retail flow fills it
            assert placed.ok
            await until(lambda: any(m.type == "new_order_ack" for m in seen))
            await stream.close()  # away: an order is cancelled meanwhile
            assert (await client.cancel(placed.order_id or "")).ok
            resumed = client.stream(handler=seen.append, since=stream.tracker.last)
            await until(lambda: any(m.type == "cancel_ack" for m in seen))
            await resumed.close()
            book = await client.order_book("SPY")
            return {"seqs": [m.seq for m in seen], "types": [m.type for m in seen],
                    "resumes": resumed.tracker.counters["resumes"], "book": book}

    out = asyncio.run(scenario())
    assert out["seqs"] == list(range(1, len(out["seqs"]) + 1))  # no gap, no repeat
    assert out["types"][0] == "position_snapshot" and out["types"].count("position_snapshot") == 1
    assert out["resumes"] == 1
    assert out["book"].instrument_id == "SPY"


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_market_feed_client_follows_books_prices_and_fair_values(game: Game) -> None:
    config = game.config
    feed = MarketFeed({name: (address(config, f"{ch}_pub"), address(config, f"{ch}_pub_rpc"))
                       for name, ch in (("matcher", "matcher"), ("simulator", "sim"),
                                        ("events", "events"))}, ctx=game.cluster.ctx)
    client = Client(game.url)
    try:
        assert feed.wait_synced(10)
        client.register("quant-check", "hedge_fund")
        placed = client.place("SPY", "sell", 3, 999.99)  # retail flow trades options only
        assert placed.ok

        def shows_order() -> bool:
            feed.poll(20)
            return (999.99, 3) in feed.book("SPY")[1]

        wait_for(shows_order, 10)
        wait_for(lambda: feed.poll(20) is not None and feed.signal("indicators.SPX") is not None)
        spot, fair = feed.underlying("SPX"), feed.fair("SPX_4500_CALL")
        assert spot is not None and 3000 < spot < 6000
        assert fair is not None and fair[0] > 0 and 0 < fair[1] < 1
        assert client.cancel(placed.order_id or "").ok
        wait_for(lambda: not shows_order(), 10)
        assert feed.stats()["matcher"]["snapshots"] >= 1
    finally:
        feed.close()
        client.close()


def test_itg_bot_and_the_demo_bots_of_make_run(game: Game, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    assert cli.main(["bot", "arb", "--url", game.url, "--team-name", "cli-arb",
                     "--seconds", "1.5"]) == 0
    assert "[arbitrage cli-arb]" in capsys.readouterr().out
    assert cli.main(["bot", "nobody", "--url", game.url]) == 2
    demo = start_demo(game.config, game.config.gateway.port, 3)
    try:
        wait_for(lambda: all(b.stats["fills"] for b in demo.bots), 30)
        board = leaderboard(demo.bots)
        assert all(f"demo-{kind}" in board for kind in ("market-maker", "hedge-fund", "arbitrage"))
    finally:
        demo.close()
    first = demo.bots[0].client.team
    with demo.bots[0].client.stream() as stream:  # what a resumed bot is told first
        snapshot = stream.get(timeout=5)
    assert snapshot is not None and snapshot.type == "position_snapshot"
    assert round(snapshot.data["cash"] * 100) == demo.bots[0].cash_cents != 0
    again = start_demo(game.config, game.config.gateway.port, 1)  # the same team, its key kept
    try:
        team = again.bots[0].client.team
        assert first is not None and team is not None and team.team_id == first.team_id
    finally:
        again.close()
    # the resumed bot values what it holds against what it paid (it started from 0 cash, and
    # the leaderboard of `make run` showed a loss of everything it had bought)
    resumed = again.bots[0]
    resumed.handle(snapshot)
    assert resumed.cash_cents == demo.bots[0].cash_cents
