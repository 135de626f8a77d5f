"""Matcher + simulator + events as the embedded cluster runs them, with no bot connected."""

from __future__ import annotations

import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from common import topics
from common.bus_client import BusTimeout, MatcherClient
from common.messages import (
    ExecutionReport,
    FairValues,
    Heartbeat,
    MarketStatus,
    Message,
    NewOrder,
    News,
    NewsShock,
    RegisterTeam,
    SimState,
    TrackingErrorSignal,
    TradePrint,
    UnderlyingTick,
    VolForecastSignal,
    decode_events,
    encode,
)
from common.transport import make_socket
from services.dbwriter.store import Store
from services.launcher import Cluster
from services.matcher.service import MatcherService
from services.simulator.checkpoint import Checkpoint
from services.simulator.service import SimulatorService
from services.simulator.step import SimStep
from tests.conftest import make_config, wait_for
from tests.game_master import GameMaster
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


def test_options_expire_on_the_running_exchange(tmp_path: Path) -> None:
    """The simulator's expiry reaches the matcher: the option books close for good, their
    resting orders are cancelled, and their marks stay at the settlement prices."""
    config = make_config(tmp_path / "data", bus={"heartbeat_s": 0.05}, matcher={"fsync": False},
                         simulator={"speed": 20.0, "mark_every_ticks": 1,
                                    "option_expiry_s": 60.0, "retail_orders_per_tick": 0.0})
    with Cluster(config, ["matcher", "simulator"]) as cluster:
        matcher: Any = cluster.services["matcher"]
        sim: Any = cluster.services["simulator"]
        client = MatcherClient(config, cluster.ctx)
        try:
            client.wait_ready(10)
            team = client.request(RegisterTeam(team_name="holder", role="market_maker",
                                               key_hash="k")).result.team_id  # type: ignore
            rest = client.request(NewOrder(team_id=team, instrument_id="SPX_4500_CALL",
                                           side="sell", quantity=1, price=99_900))
            assert rest.ok and sim.step.tick < 60, "placed before the expiry"
            assert rest.order_id in matcher.engine.live  # no retail flow to fill it
            wait_for(lambda: matcher.engine.expired, 20, what="the expiry")
            assert rest.order_id not in matcher.engine.live  # cancelled, "expired"
            refused = client.request(NewOrder(team_id=team, instrument_id="SPX_4500_CALL",
                                              side="buy", quantity=1, price=100))
            assert (refused.code, refused.details["expired"]) == ("MARKET_CLOSED", True)
            assert client.request(NewOrder(team_id=team, instrument_id="SPX", side="buy",
                                           quantity=1, price=100)).ok  # underlyings trade on
            settled = {iid: t for v in sim._last.fair_values for iid, t, _ in v.values}
            assert matcher.engine.expired == set(settled)  # every option of both chains
            assert {iid: matcher.engine.marks[iid] for iid in settled} == settled
        finally:
            client.close()


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
        # one tick past: its first frame comes after every frame of `ticks` (one socket, in
        # order); stopping at `ticks`' own SPX frame sometimes missed the rest of that tick
        tap.pump(lambda: max(spx_path(tap), default=0) > ticks)
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
    assert len(first["sim_pub"]) == len(again["sim_pub"]) == 4 * 400  # ticks 1-400
    assert len(first["events_pub"]) >= 3
    assert first == again


def test_a_game_master_call_to_a_service_that_is_gone_times_out(tmp_path: Path) -> None:
    """Over inproc, a DEALER with no peer blocked in send: a call to a crashed simulator hung
    for good, whatever its timeout."""
    config = market_config(tmp_path / "data")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    simulator = make_socket(ctx, config, "sim_rpc", bind=True)
    gm = GameMaster(config, ctx, timeout=0.5)
    simulator.close(linger=0)  # the simulator's thread died: its end of the pipe is gone
    wait_for(lambda: not gm.sim.poll(0, zmq.POLLOUT), 5, "the pipe to the dead peer gone")
    try:
        started = time.monotonic()
        with pytest.raises(BusTimeout):
            gm.set_speed(2.0)
        assert time.monotonic() - started < 2.0
    finally:
        gm.close()
        ctx.term()


def test_a_restarted_simulator_goes_on_with_the_game_where_it_stood(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It opened again at tick 0 (marks back at the opening prices) and, with the same seed,
    replayed the same path: a team that had logged the first run knew every future price."""
    config = market_config(tmp_path / "data", speed=200.0)
    with Cluster(config, ["matcher", "simulator", "events"]) as cluster:
        sim: Any = cluster.services["simulator"]
        wait_for(lambda: sim.step.tick >= 200, what="200 ticks")
        gm = GameMaster(config, cluster.ctx)
        assert gm.set_speed(0.0).ok  # paused: stays paused after the restart
        gm.close()
        def where(sim: Any) -> list[tuple[str, int, int]]:
            return [(u.symbol, u.price, u.tick) for u in sim._last.underlyings]

        before, game = where(sim), sim.step.game
        assert before[0][2] >= 200 and game == sim.epoch
        matcher: Any = cluster.services["matcher"]
    marks = dict(matcher.engine.marks)  # as it stopped: every mark sent before is in
    knobs = msgspec.structs.replace(config, simulator=msgspec.structs.replace(  # not the game
        config.simulator, speed=50.0, status_log_s=7.0, news_wait_s=1.0))
    with Cluster(knobs, ["matcher", "simulator", "events"]) as cluster:
        sim = cluster.services["simulator"]
        assert where(sim) == before  # a new epoch, the same prices at the same tick
        assert sim.step.game == game  # the same game
        assert sim.clock.speed == 0.0  # and it says so: the config's 50 applies to new games
        assert "saved speed 0, not the configured 50" in caplog.text
        assert cluster.services["matcher"].engine.marks == marks  # type: ignore[attr-defined]
        gm = GameMaster(config, cluster.ctx)
        assert gm.set_speed(200.0).ok
        gm.close()
        wait_for(lambda: sim.step.tick >= before[0][2] + 20, what="the game going on")
    other = msgspec.structs.replace(config, game=msgspec.structs.replace(config.game, seed=8))
    with Cluster(other, ["simulator"]) as cluster:  # another game: the path starts afresh
        sim = cluster.services["simulator"]
        assert sim.step.tick == 0 and sim.step.game not in (0, game)
    kept = list((tmp_path / "data" / "simulator").glob("checkpoint.set-aside-*.pkl"))
    assert len(kept) == 1  # the other game's checkpoint is kept, not overwritten


def test_a_simulator_that_cannot_save_its_checkpoint_goes_on_with_the_game(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A full disk made every save raise: the simulator died, and each restart replayed the
    same second. Here the saves fail for real: a directory takes the checkpoint's name."""
    config = market_config(tmp_path / "data", speed=200.0)
    path = tmp_path / "data" / "simulator" / "checkpoint.pkl"
    with Cluster(config, ["simulator"]) as cluster:
        sim: Any = cluster.services["simulator"]
        wait_for(path.exists, what="a first save")
        path.unlink()
        (path / "in the way").mkdir(parents=True)
        failed_at = sim.step.tick
        wait_for(lambda: sim.step.tick >= failed_at + 600, what="the game going on")
        assert caplog.text.count("checkpoint not saved") == 1  # once, not once a second
        shutil.rmtree(path)  # space again
        # The file appears before the save logs that it worked: wait for the log line.
        wait_for(lambda: "checkpoint saved again" in caplog.text, what="a save again")
        assert path.is_file()
        assert cluster._threads["simulator"].is_alive()
    saved = Checkpoint(path.parent, config).load()
    assert saved is not None and saved.step.tick >= failed_at + 600


def test_a_simulator_that_crashed_resumes_from_a_whole_tick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its stop saved the state a failing tick had left half done."""
    config = market_config(tmp_path / "data", speed=200.0)
    with Cluster(config, ["simulator"]) as cluster:
        sim: Any = cluster.services["simulator"]
        wait_for(lambda: sim.step.tick >= 300, what="300 ticks")

        def fails(step: SimStep, due: object) -> None:
            step.tick += 1000  # part of a tick's work, then the fault
            raise RuntimeError("injected")

        monkeypatch.setattr(SimStep, "_apply_jumps", fails)
        cluster._threads["simulator"].join(10)
        published = sim._last.tick
    saved = Checkpoint(tmp_path / "data" / "simulator", config).load()
    assert saved is not None and saved.step.tick <= published < 1000


def test_ticks_computed_again_after_a_crash_are_stored_and_traded_once(
        short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed game computes the ticks after its last checkpoint again: their prices were
    stored a second time (the price history stepped back and replayed) and their retail
    orders were sent again as new ones. Over ipc: inproc peers do not reconnect."""
    config = market_config(short_dir / "data", speed=100.0,
                           bus={"transport": "ipc", "ipc_dir": str(short_dir)})
    with Cluster(config, ["dbwriter", "matcher", "simulator"]) as cluster:
        sim: Any = cluster.services["simulator"]
        wait_for(lambda: sim.step.tick >= 150, what="150 ticks")

        def fails(step: SimStep, due: object) -> None:
            raise RuntimeError("injected")  # a crash: no checkpoint at this stop

        monkeypatch.setattr(SimStep, "_apply_jumps", fails)
        cluster._threads["simulator"].join(10)
        monkeypatch.undo()
        published = sim._last.tick
        saved = Checkpoint(short_dir / "data" / "simulator", config).load()
        assert saved is not None and saved.step.tick < published  # ticks to compute again
        resumed = SimulatorService(cluster.config, cluster.ctx)
        thread = threading.Thread(target=resumed.run, daemon=True, name="test-sim-again")
        thread.start()
        cluster.services["simulator"], cluster._threads["simulator"] = resumed, thread
        assert resumed.ready.wait(10)
        wait_for(lambda: resumed.step.tick >= published + 20, what="past the crash")
    last = resumed.step.tick
    with Store(config.db_url) as store, store.engine.connect() as conn:
        spx = conn.exec_driver_sql("select count(*), count(distinct seq) from prices where "
                                   "instrument_id = 'SPX' and kind = 'underlying'").one()
        house = conn.exec_driver_sql(
            "select count(*), count(distinct client_order_id), count(client_order_id) from "
            "orders where team_id in ('HOUSE', 'HOUSE_2')").one()
    assert tuple(spx) == (last + 1, last + 1)  # ticks 0..last, each once
    assert house[0] > 0 and tuple(house) == (house[0], house[0], house[0])


def test_news_reach_a_simulator_that_resumed_its_game(short_dir: Path) -> None:
    """The events service numbered news afresh under the same news epoch when the simulator
    restarted; a simulator that resumed its game took them for news it had already applied.
    Over ipc, as under supervisord: a peer does not reconnect to a restarted inproc binder."""
    config = market_config(short_dir / "data", speed=100.0)
    config = msgspec.structs.replace(
        config, bus=msgspec.structs.replace(config.bus, transport="ipc", ipc_dir=str(short_dir)),
        events=msgspec.structs.replace(config.events, news_mean_gap_s=20.0, news_min_gap_s=5.0))
    with Cluster(config, ["matcher", "simulator", "events"]) as cluster:
        sim: Any = cluster.services["simulator"]
        wait_for(lambda: len(sim.step._applied_ids) >= 3, what="three news applied")
        sim.stop()
        cluster._threads["simulator"].join(10)
        resumed = SimulatorService(cluster.config, cluster.ctx)
        thread = threading.Thread(target=resumed.run, daemon=True, name="test-sim-again")
        thread.start()
        cluster.services["simulator"], cluster._threads["simulator"] = resumed, thread
        assert resumed.ready.wait(10)
        restart_tick = resumed.step.tick
        assert restart_tick > 0  # it went on with the game
        events: Any = cluster.services["events"]
        wait_for(lambda: events._sim_epoch == resumed.epoch, what="events following it")
        gm = GameMaster(config, cluster.ctx)
        reply = gm.inject_news("Operator test", direction="up", magnitude=0.01, jump=True)
        gm.close()
        assert reply.ok
        news_id = reply.details["news_id"]
        wait_for(lambda: any(i == news_id and t > restart_tick
                             for i, t in resumed.step._applied), what="the news applied")
