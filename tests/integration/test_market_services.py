"""Matcher + simulator + events as the embedded cluster runs them, with no bot connected."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import zmq

from common import topics
from common.game_master import GameMaster
from common.messages import (
    ExecutionReport,
    FairValues,
    Heartbeat,
    MarketStatus,
    Message,
    News,
    NewsShock,
    SimState,
    TrackingErrorSignal,
    TradePrint,
    UnderlyingTick,
    VolForecastSignal,
    decode_events,
    encode,
)
from common.transport import make_socket
from services.launcher import Cluster
from services.matcher.service import MatcherService
from services.simulator.service import SimulatorService
from tests.integration.test_market_feed import market_config

CHANNELS = ("matcher_pub", "matcher_private", "sim_pub", "sim_private", "events_pub",
            "events_private")


class Tap:
    """Subscribed to everything on every channel; frames kept per channel as (topic, message)."""

    def __init__(self, cluster: Cluster) -> None:
        self.socks = {}
        for channel in CHANNELS:
            sock = make_socket(cluster.ctx, cluster.config, channel, bind=False)
            sock.subscribe(b"")
            self.socks[channel] = sock
        self.seen: dict[str, list[tuple[bytes, Message]]] = defaultdict(list)

    def pump(self, until: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        for sock in self.socks.values():
            poller.register(sock, zmq.POLLIN)
        names = {sock: name for name, sock in self.socks.items()}
        while not until():
            assert time.monotonic() < deadline, "condition not met in time"
            for sock, _ in poller.poll(10):
                while sock.poll(0):
                    topic, payload = sock.recv_multipart()
                    self.seen[names[sock]] += [(topic, m) for m in decode_events(payload)]

    def of(self, kind: type[Message], channel: str | None = None) -> list[tuple[bytes, Message]]:
        return [(t, m) for ch, frames in self.seen.items() if channel in (None, ch)
                for t, m in frames if isinstance(m, kind)]

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(market_config(tmp_path / "data", speed=150.0),
                 ["matcher", "simulator", "events"]) as c:
        yield c


@pytest.fixture
def tap(cluster: Cluster) -> Iterator[Tap]:
    t = Tap(cluster)
    yield t
    t.close()


def spx_path(tap: Tap) -> dict[int, int]:
    return {m.tick: m.price for _, m in tap.of(UnderlyingTick)
            if isinstance(m, UnderlyingTick) and m.symbol == "SPX"}


def published_values(tap: Tap) -> dict[str, set[int]]:
    """Every price the simulator published per instrument: underlyings and fair values."""
    published: dict[str, set[int]] = defaultdict(set)
    for _, fv in tap.of(FairValues, "sim_pub"):
        assert isinstance(fv, FairValues)
        published[fv.underlying].add(fv.spot)
        for iid, ticks, _ in fv.values:
            published[iid].add(ticks)
    return published


def test_market_moves_and_trades_with_no_bot(cluster: Cluster, tap: Tap) -> None:
    tap.pump(lambda: len(tap.of(TradePrint)) >= 20 and len(spx_path(tap)) >= 100)
    gm = GameMaster(cluster.config, cluster.ctx)
    assert gm.set_speed(0.0).ok
    assert len(set(spx_path(tap).values())) > 20, "the underlying moves"
    fills = [m for _, m in tap.of(ExecutionReport, "matcher_private")
             if isinstance(m, ExecutionReport)]
    assert {f.team_id for f in fills} == {"HOUSE", "HOUSE_2"}
    house = cluster.config.game.roles["house"]
    for fill in fills:  # the same fees as any team of its role
        rate = house.maker_fee_cents if fill.liquidity == "maker" else house.taker_fee_cents
        assert fill.fee == fill.executed_quantity * rate
    matcher = cluster.services["matcher"]
    assert isinstance(matcher, MatcherService)

    def marked_to_published() -> bool:  # P&L is marked to the published numbers
        published, marks = published_values(tap), dict(matcher.engine.marks)
        return {"SPX", "SPY", "SPX_4500_CALL", "SPY_440_PUT"} <= set(marks) and all(
            mark in published[iid] for iid, mark in marks.items())

    tap.pump(marked_to_published)
    gm.close()


def test_signals_reach_only_their_role_topics(cluster: Cluster, tap: Tap) -> None:
    tap.pump(lambda: len(tap.of(VolForecastSignal)) >= 3 and len(tap.of(News)) >= 2)
    assert {(ch, t) for ch in CHANNELS for t, m in tap.seen[ch]
            if isinstance(m, VolForecastSignal)} == {("events_private", b"signal.hedge_fund")}
    assert {(ch, t) for ch in CHANNELS for t, m in tap.seen[ch]
            if isinstance(m, TrackingErrorSignal)} == {("events_private", b"signal.arbitrage")}
    secret = (SimState, NewsShock, VolForecastSignal, TrackingErrorSignal)
    for channel in ("matcher_pub", "sim_pub", "events_pub"):  # the public feeds
        assert not [m for _, m in tap.seen[channel] if isinstance(m, secret)], channel
    assert {t for t, _ in tap.seen["events_pub"]} == {
        topics.NEWS, topics.SENTIMENT, topics.indicators("SPX"), topics.indicators("SPY"),
        topics.heartbeat("events")}
    assert {t for t, _ in tap.seen["sim_pub"]} == {
        topics.underlying("SPX"), topics.underlying("SPY"), topics.fair("SPX"),
        topics.fair("SPY"), topics.heartbeat("simulator")}
    for channel, frames in tap.seen.items():  # every stream gap-free from its first frame
        last: dict[bytes, int] = {}
        for topic, msg in frames:
            seq = getattr(msg, "seq", None)
            if seq is not None and not topic.startswith(topics.HEARTBEAT):
                assert last.get(topic, seq - 1) == seq - 1, (channel, topic)
                last[topic] = seq


def test_game_master_controls(cluster: Cluster, tap: Tap) -> None:
    gm = GameMaster(cluster.config, cluster.ctx)
    tap.pump(lambda: len(spx_path(tap)) >= 20)
    reply = gm.inject_news("Martians land in Central Park", direction="down", jump=True,
                           magnitude=0.05)
    assert reply.ok and reply.details["jump"], reply

    def injected() -> list[News]:
        return [m for _, m in tap.of(News) if isinstance(m, News) and m.injected]

    tap.pump(lambda: bool(injected()) and injected()[0].tick in spx_path(tap))
    news, path = injected()[0], spx_path(tap)
    assert path[news.tick] / path[news.tick - 1] - 1 == pytest.approx(-0.05, abs=0.003)
    assert not gm.inject_news("x", direction="sideways").ok
    assert gm.force_regime("high").ok and not gm.force_regime("extreme").ok
    assert not gm.set_speed(-1.0).ok and not gm.set_speed(float("nan")).ok
    assert gm.halt("SPX_4500_CALL").ok and gm.set_phase("pre_open").ok

    def statuses() -> list[MarketStatus]:
        return [m for _, m in tap.of(MarketStatus) if isinstance(m, MarketStatus)]

    tap.pump(lambda: len(statuses()) >= 2)
    assert (statuses()[-1].phase, statuses()[-1].halted) == ("pre_open", ["SPX_4500_CALL"])
    assert gm.resume("SPX_4500_CALL").ok and gm.set_phase("continuous").ok
    sim = cluster.services["simulator"]
    assert isinstance(sim, SimulatorService)
    assert gm.set_speed(0.0).ok
    paused_at, beats = sim.step.tick, len(tap.of(Heartbeat, "sim_pub"))
    tap.pump(lambda: len(tap.of(Heartbeat, "sim_pub")) >= beats + 4)  # alive, but not ticking
    assert sim.step.tick == paused_at
    assert gm.set_speed(200.0).ok
    tap.pump(lambda: sim.step.tick > paused_at)
    gm.close()


def recorded_game(data_dir: Path, seed: int, ticks: int) -> tuple[dict[str, list[bytes]], int]:
    """Run a cluster from a paused start to `ticks`: per public channel, the path and the news
    in publication order, without the envelope fields that are wall-clock by nature (ts_ns,
    epoch); plus the simulator's count of shocks that arrived after their tick."""
    config = market_config(data_dir, speed=1e-6, game={"seed": seed})
    # The simulator holds at a news tick until the shock comes; on a loaded machine 5 s can
    # pass, and then the two runs differ by design. Determinism is what this test is about.
    config = msgspec.structs.replace(config, simulator=msgspec.structs.replace(
        config.simulator, news_wait_s=120.0))
    with Cluster(config, ["matcher", "simulator", "events"]) as cluster:
        tap, gm = Tap(cluster), GameMaster(config, cluster.ctx)
        assert gm.set_speed(250.0).ok
        tap.pump(lambda: max(spx_path(tap), default=0) >= ticks)
        assert gm.set_speed(0.0).ok
        sim = cluster.services["simulator"]
        assert isinstance(sim, SimulatorService)
        late = sim.step.late_shocks
        tap.close()
        gm.close()
    kinds = UnderlyingTick | FairValues | News
    return {ch: [encode(msgspec.structs.replace(m, ts_ns=0, epoch=0)) for _, m in tap.seen[ch]
                 if isinstance(m, kinds) and m.tick <= ticks]
            for ch in ("sim_pub", "events_pub")}, late


def test_same_seed_same_published_game_from_the_running_services(tmp_path: Path) -> None:
    first, late = recorded_game(tmp_path / "a", 7, 400)
    again, _ = recorded_game(tmp_path / "b", 7, 400)
    assert late == 0  # every news shock reached the simulator ahead of its tick
    assert len(first["sim_pub"]) == 4 * 400 and len(first["events_pub"]) >= 3  # ticks 1-400
    assert first == again
