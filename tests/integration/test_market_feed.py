"""The quant feed over real sockets: subscribers that join late or lose frames end with exactly
the publishers' state (books, last trades, status, underlyings, fair values, and every seq)."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from bots.feed import MarketFeed
from bots.quant_feed import RETRY_BEATS, QuantFeed, Source, book_levels, content
from common.bus_client import MatcherClient
from common.config import Config
from common.messages import (
    AccountQuery,
    ForceRegime,
    InjectNews,
    Message,
    NewOrder,
    Ping,
    Probe,
    RegisterTeam,
    ReplayRequest,
    SetPhase,
    SetSpeed,
    SnapshotRequest,
    TeamInfo,
    TeamQuery,
    encode,
)
from common.transport import CHANNELS, address
from services.launcher import Cluster
from services.matcher.service import MatcherService
from services.simulator.service import SimulatorService
from tests.conftest import FAST, make_config, nested
from tests.game_master import GameMaster


def market_config(data_dir: Path, speed: float = 100.0, bus: dict[str, Any] | None = None,
                  **extra: Any) -> Config:
    return make_config(
        data_dir, bus={"heartbeat_s": 0.05, **(bus or {})}, matcher={"fsync": False},
        simulator={"speed": speed, "mark_every_ticks": 1, "retail_order_ttl_s": 30.0},
        events={"news_mean_gap_s": 60.0, "news_min_gap_s": 20.0}, **extra)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(market_config(tmp_path / "data"), ["matcher", "simulator", "events"]) as c:
        yield c


def endpoints(config: Config) -> dict[str, tuple[str, str]]:
    """The public channels only: what a quant outside the cluster can reach."""
    return {"matcher": (address(config, "matcher_pub"), address(config, "matcher_pub_rpc")),
            "simulator": (address(config, "sim_pub"), address(config, "sim_pub_rpc"))}


def poll_until(feeds: list[QuantFeed], done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not met in time"
        for feed in feeds:
            feed.poll(5)


def publishers_state(cluster: Cluster) -> tuple[dict[str, Any], dict[str, int]]:
    """The truth, read from the producers themselves (call while the market is paused)."""
    matcher, sim = cluster.services["matcher"], cluster.services["simulator"]
    assert isinstance(matcher, MatcherService) and isinstance(sim, SimulatorService)
    engine = matcher.engine
    state: dict[str, Any] = {"md.status": content(msgpack.unpackb(encode(engine.status())))}
    for iid, book in engine.books.items():
        bids, asks = book.depth(None)
        state["md.book." + iid] = book_levels([list(b) for b in bids], [list(a) for a in asks])
    for iid, trade in engine.last_trades.items():
        state["md.trade." + iid] = content(msgpack.unpackb(encode(trade)))
    for topic, event in sim.feed.last.items():
        state[topic.decode()] = content(msgpack.unpackb(encode(event)))
    seqs = {t.decode(): n for t, n in engine.seqs.items() if t.startswith(b"md.")}
    seqs |= {t.decode(): n for t, n in sim.feed.seqs.items() if t in sim.feed.last}
    return state, seqs


class Dropper:
    """Loses frames on purpose: every 7th one while `sparse`, all of them while `all`."""

    def __init__(self) -> None:
        self.mode = "sparse"
        self.dropped = 0

    def __call__(self, source: str, n: int, topic: bytes) -> bool:
        drop = self.mode == "all" or (self.mode == "sparse" and n % 7 == 3)
        self.dropped += drop
        return drop


def test_late_and_lossy_subscribers_end_with_the_publishers_state(cluster: Cluster) -> None:
    config = cluster.config
    sim = cluster.services["simulator"]
    assert isinstance(sim, SimulatorService)
    deadline = time.monotonic() + 10
    while sim.step.tick < 100:  # join mid-run
        assert time.monotonic() < deadline
        time.sleep(0.01)
    dropper = Dropper()
    late = QuantFeed(endpoints(config), cluster.ctx)
    lossy = QuantFeed(endpoints(config), cluster.ctx, drop=dropper)
    feeds = [late, lossy]
    start = sim.step.tick
    poll_until(feeds, lambda: sim.step.tick >= start + 150)  # sparse losses, gaps, resyncs
    dropper.mode = "all"  # lose everything up to the pause: last messages that no later
    poll_until(feeds, lambda: sim.step.tick >= start + 170)  # seq reveals (heartbeats do)
    gm = GameMaster(config, cluster.ctx)
    assert gm.set_speed(0.0).ok  # pause: the market goes idle
    paused_at = time.monotonic()
    poll_until(feeds, lambda: time.monotonic() > paused_at + 0.3)
    dropper.mode = "none"
    poll_until(feeds, lambda: late.settled() and lossy.settled())
    truth, seqs = publishers_state(cluster)
    assert any(k.startswith("md.trade.") for k in truth), "the market traded"
    for feed in feeds:
        assert feed.seqs() == seqs
        assert feed.state() == truth
    late_stats = {s.name: s.stats for s in late.sources}
    # joined by snapshot, then no gap; a snapshot answer slower than 5 heartbeats (a loaded
    # machine) is asked for again, so one or more
    assert all(s["gaps"] == 0 and s["repairs"] == 0 and s["snapshots"] >= 1
               for s in late_stats.values()), late_stats
    lossy_stats = {s.name: s.stats for s in lossy.sources}
    assert dropper.dropped > 100
    assert all(s["gaps"] > 0 and s["snapshots"] > 1 for s in lossy_stats.values()), lossy_stats
    gm.close()
    for feed in feeds:
        feed.close()


def test_feed_frames_are_plain_msgpack_and_snapshots_answer_plain_requests(
    cluster: Cluster,
) -> None:
    config = cluster.config
    rpc = cluster.ctx.socket(zmq.DEALER)
    rpc.connect(address(config, "sim_pub_rpc"))
    rpc.send(msgpack.packb({"type": "snapshot_request"}))
    assert rpc.poll(5000)
    snap = msgpack.unpackb(rpc.recv())
    assert snap["type"] == "feed_snapshot" and snap["service"] == "simulator"
    assert set(snap["events"]) == {"md.underlying.SPX", "md.underlying.SPY", "md.fair.SPX",
                                   "md.fair.SPY"}
    fair = snap["events"]["md.fair.SPX"]
    assert fair["seq"] == snap["seqs"]["md.fair.SPX"]
    assert {iid for iid, _, _ in fair["values"]} >= {"SPX_4500_CALL", "SPX_4500_PUT"}
    for junk in (b"\xc1 not msgpack", nested("snapshot_request")):  # the latter killed it
        rpc.send(junk)
        assert rpc.poll(5000) and msgpack.unpackb(rpc.recv())["type"] == "error_reply"
    rpc.close(linger=0)


def test_market_feed_gives_the_indicators_price_in_dollars(cluster: Cluster) -> None:
    """It gave the tick count (440011) next to moving averages in dollars (4400.11)."""
    feed = MarketFeed(endpoints(cluster.config) | {"events": (
        address(cluster.config, "events_pub"), address(cluster.config, "events_pub_rpc"))},
        cluster.ctx)
    try:
        assert feed.wait_synced(10)
        deadline = time.monotonic() + 15
        while feed.signal("indicators.SPX") is None:
            assert time.monotonic() < deadline, "no indicators signal"
            feed.poll(20)
        signal, raw = feed.signal("indicators.SPX"), feed.raw.state()
        assert signal is not None
        ticks = raw["signal.public.indicators.SPX"]["price"]
        assert isinstance(ticks, int) and signal["price"] == ticks / 100
        assert feed.signal("indicators.SPX") == signal  # converted on a copy, not in place
        spot = feed.underlying("SPX")
        assert spot is not None and abs(signal["price"] - spot) < 0.05 * spot
    finally:
        feed.close()


def ask(sock: zmq.Socket[bytes], request: Message) -> dict[str, Any]:
    sock.send(encode(request))
    assert sock.poll(5000), f"no answer to {request!r}"
    answer: dict[str, Any] = msgpack.unpackb(sock.recv())
    return answer


def test_the_public_routers_serve_market_data_and_nothing_about_teams(cluster: Cluster) -> None:
    """What a quant can reach answers snapshots, pings and md.* replays; account and team
    queries, private replays, probes, controls and commands get an error and change nothing."""
    sockets = {}
    for name in ("matcher_rpc", "matcher_pub_rpc", "sim_pub_rpc", "events_pub_rpc"):
        sockets[name] = cluster.ctx.socket(zmq.DEALER)
        sockets[name].connect(address(cluster.config, name))
    private, public = sockets["matcher_rpc"], sockets["matcher_pub_rpc"]
    try:
        deadline = time.monotonic() + 15
        while not ask(private, ReplayRequest(topic="exec.HOUSE", from_seq=1))["payloads"]:
            assert time.monotonic() < deadline, "the house team never traded"
            time.sleep(0.05)
        assert ask(private, AccountQuery(team_id="HOUSE"))["found"]  # the private one does
        secrets = [AccountQuery(team_id="HOUSE"), TeamQuery(team_id="HOUSE"),
                   ReplayRequest(topic="exec.HOUSE", from_seq=1),
                   ReplayRequest(topic="resp.gw", from_seq=1), Probe(gw="gw"),
                   SetPhase(phase="closed")]
        for request in secrets:
            answer = ask(public, request)
            assert answer["type"] == "error_reply", (request, answer)
            assert "not served on the public endpoint" in answer["message"]
        assert ask(public, SnapshotRequest())["type"] == "market_snapshot"
        assert ask(public, Ping())["type"] == "pong"
        assert ask(public, SnapshotRequest())["status"]["phase"] == "continuous"
        seqs = ask(public, SnapshotRequest())["seqs"]
        book = next(t for t, n in seqs.items() if t.startswith("md.book.") and n > 0)
        replay = ask(public, ReplayRequest(topic=book, from_seq=1))
        assert replay["type"] == "replay_reply" and len(replay["payloads"]) >= seqs[book]
        for name, control in (("sim_pub_rpc", SetSpeed(speed=0.0)),
                              ("sim_pub_rpc", ForceRegime(regime="high")),
                              ("events_pub_rpc", InjectNews(headline="Public injection")),
                              ("events_pub_rpc", Probe(gw="gw"))):
            answer = ask(sockets[name], control)
            assert answer["type"] == "error_reply", (name, answer)
            assert ask(sockets[name], SnapshotRequest())["type"] == "feed_snapshot"
        sim = cluster.services["simulator"]
        assert isinstance(sim, SimulatorService) and sim.clock.speed == 100.0
    finally:
        for sock in sockets.values():
            sock.close(linger=0)


def free_base_port() -> int:
    """A tcp_base_port whose every channel port is free on this host now."""
    rng = random.Random()
    while True:
        base, taken = rng.randrange(20_000, 60_000), []
        try:
            for channel in CHANNELS.values():
                sock = socket.socket()
                taken.append(sock)
                sock.bind(("127.0.0.1", base + channel.port_offset))
            return base
        except OSError:
            continue
        finally:
            for sock in taken:
                sock.close()


def test_a_quant_outside_syncs_over_tcp_at_the_default_offsets(tmp_path: Path) -> None:
    """MarketFeed.tcp, as a quant would run it against the published ports."""
    base = free_base_port()
    config = market_config(tmp_path / "data", bus={"transport": "tcp", "tcp_base_port": base})
    with Cluster(config, ["matcher", "simulator", "events"]) as cluster:
        feed = MarketFeed.tcp("127.0.0.1", base, ctx=cluster.ctx)
        try:
            assert feed.wait_synced(10)
            assert feed.underlying("SPX") is not None
            assert {s.name: s.synced for s in feed.raw.sources} == {
                "matcher": True, "simulator": True, "events": True}
        finally:
            feed.close()


def test_a_late_answer_to_an_earlier_snapshot_request_is_not_taken_for_the_latest(
    tmp_path: Path,
) -> None:
    """The producer answered the first request after the feed had asked again: that answer is
    older than the events buffered since, and must not be taken for the second's."""
    ctx = zmq.Context()
    pub, router = ctx.socket(zmq.PUB), ctx.socket(zmq.ROUTER)
    pub.bind(f"ipc://{tmp_path}/pub")
    router.bind(f"ipc://{tmp_path}/rpc")
    source = Source(ctx, "matcher", f"ipc://{tmp_path}/pub", f"ipc://{tmp_path}/rpc")

    def beat() -> None:
        pub.send_multipart([b"sys.heartbeat.matcher", msgpack.packb(
            [{"type": "heartbeat", "seq": 1, "epoch": 7, "ts_ns": 0, "last_seq": 5}])])
        while source.sub.poll(20):
            source.on_feed()

    def snapshot(phase: str) -> bytes:
        return msgpack.packb({"type": "market_snapshot", "epoch": 7, "seqs": {"md.status": 1},
                              "books": [], "last_trades": [], "status": {
                                  "type": "market_status", "phase": phase, "halted": []}})
    try:
        deadline = time.monotonic() + 5
        while source.waited is None:  # the subscription joins, then the first request goes
            assert time.monotonic() < deadline, "no snapshot request"
            beat()
        assert router.poll(2000)
        first = router.recv_multipart()
        for _ in range(RETRY_BEATS):
            beat()
        assert router.poll(2000)
        second = router.recv_multipart()
        assert first[1] != second[1]  # each request carries its own correlation frame
        router.send_multipart([*first[:-1], snapshot("stale")])
        assert source.rpc.poll(2000)
        source.on_reply()
        assert not source.synced and source.waited is not None
        router.send_multipart([*second[:-1], snapshot("continuous")])
        assert source.rpc.poll(2000)
        source.on_reply()
        assert source.synced and source.state["md.status"]["phase"] == "continuous"
    finally:
        source.close()
        pub.close(linger=0)
        router.close(linger=0)
        ctx.term()


def test_a_lost_last_delta_of_a_quiet_book_is_found_while_the_market_stays_busy(
        tmp_path: Path) -> None:
    """The only delta of a quiet book is lost, and the matcher never goes idle (another book
    trades without a pause), so no later seq and no idle check reveals it: the heartbeat's
    count of public events does."""
    config = market_config(tmp_path / "data", game={"roles": {"fast": FAST}})
    quiet = "md.book.SPX_4400_PUT"
    with Cluster(config, ["matcher"]) as cluster:
        client = MatcherClient(config, cluster.ctx)
        client.wait_ready()
        a, b = (register(client, name) for name in ("a", "b"))
        feed = QuantFeed({"matcher": endpoints(config)["matcher"]}, cluster.ctx,
                         drop=lambda source, n, topic: topic == quiet.encode())
        poll_until([feed], feed.settled)
        stop = threading.Event()
        busy = threading.Thread(target=trade_until, args=(config, cluster, (a, b), stop))
        busy.start()
        try:
            poll_until([feed], lambda: "md.trade.SPX_4500_CALL" in feed.state())
            assert client.request(order(a, "buy", 1, 90, "SPX_4400_PUT")).ok
            poll_until([feed], lambda: feed.state().get(quiet) == book_levels([[90, 1]], []),
                       timeout=5.0)
            assert busy.is_alive()  # found while the market was busy, not at an idle check
        finally:
            stop.set()
            busy.join()
        assert feed.sources[0].stats["gaps"] >= 1
        feed.close()
        client.close()


def register(client: MatcherClient, name: str) -> str:
    answer = client.request(RegisterTeam(team_name=name, role="fast", key_hash=f"h-{name}"))
    assert answer.ok and isinstance(answer.result, TeamInfo), answer
    return answer.result.team_id


def order(team: str, side: str, quantity: int, price: int, iid: str) -> NewOrder:
    return NewOrder(team_id=team, instrument_id=iid, side=side, quantity=quantity, price=price)


def trade_until(config: Config, cluster: Cluster, teams: tuple[str, str],
                stop: threading.Event) -> None:
    """Fills on one book, back and forth between two teams, until told to stop."""
    client = MatcherClient(config, cluster.ctx)
    a, b = teams
    try:
        while not stop.is_set():
            for seller, buyer in ((a, b), (b, a)):
                client.request(order(seller, "sell", 1, 100, "SPX_4500_CALL"))
                client.request(order(buyer, "buy", 1, 100, "SPX_4500_CALL"))
            time.sleep(0.002)
    finally:
        client.close()
