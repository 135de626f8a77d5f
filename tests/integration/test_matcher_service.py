"""The matcher as a running service on real ZeroMQ sockets (threads over inproc)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import msgspec
import pytest

from common import topics
from common.bus_client import MatcherClient
from common.config import Config
from common.messages import (
    AccountQuery,
    AccountReply,
    BookDelta,
    CancelAll,
    ErrorReply,
    Heartbeat,
    MarketSnapshot,
    NewOrder,
    OrderAck,
    Ping,
    Pong,
    Probe,
    RegisterTeam,
    ReplayReply,
    ReplayRequest,
    Response,
    SnapshotRequest,
    TeamQuery,
    TeamReply,
    decode,
    decode_events,
    encode,
)
from common.service import FULL_COLLECTION_EVERY
from common.transport import make_socket, recv_frames
from services.launcher import Cluster, ClusterError
from services.matcher.engine import Engine
from services.matcher.service import MatcherService
from tests.conftest import FAST, make_config, nested, wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(make_config(tmp_path / "data", bus={"heartbeat_s": 0.05}), ["matcher"]) as running:
        yield running


@pytest.fixture
def config(cluster: Cluster) -> Config:
    return cluster.config


@pytest.fixture
def client(cluster: Cluster, config: Config) -> Iterator[MatcherClient]:
    c = MatcherClient(config, cluster.ctx)
    c.wait_ready()
    yield c
    c.close()



def register(client: MatcherClient, name: str, role: str = "market_maker") -> str:
    r = client.request(RegisterTeam(team_name=name, role=role, key_hash=f"h-{name}"))
    assert r.ok, r
    return r.result.team_id  # type: ignore[union-attr]


def account(client: MatcherClient, team: str) -> AccountReply:
    """The team's state, without the time of the answer."""
    reply = client.call(AccountQuery(team_id=team), AccountReply)
    return msgspec.structs.replace(reply, as_of_ns=0)


def order(team: str, side: str, qty: int, price: int, iid: str = "SPX_4500_CALL") -> NewOrder:
    return NewOrder(team_id=team, instrument_id=iid, side=side, quantity=qty, price=price)


def test_orders_trade_and_queries_answer(client: MatcherClient) -> None:
    a, b = register(client, "a"), register(client, "b")
    assert client.request(order(a, "sell", 3, 12850)).ok
    r = client.request(order(b, "buy", 2, 12850))
    assert r.result.status == "filled"  # type: ignore[union-attr]
    acct = client.call(AccountQuery(team_id=a), AccountReply)
    assert acct.positions == {"SPX_4500_CALL": -2}
    assert [o.remaining_quantity for o in acct.open_orders] == [1]
    team = client.call(TeamQuery(key_hash="h-b"), TeamReply).team
    assert team is not None and team.team_id == b
    assert client.call(TeamQuery(key_hash="nope"), TeamReply).team is None


def test_bad_frames_are_counted_dropped_and_service_goes_on(
    cluster: Cluster, client: MatcherClient, config: Config
) -> None:
    team = register(client, "a")
    raw = make_socket(cluster.ctx, config, "commands", bind=False)
    bad = [
        [b"\xff\xfe garbage"],
        [b"cmd", msgpack.packb({"type": "new_order", "team_id": team, "quantity": "ten"})],
        [b"cmd", msgpack.packb({"type": "no_such_message"})],
        [b"cmd", msgpack.packb([1, 2, 3])],
        [b"cmd", encode(Ping())],  # well-formed, but not a command
        [b"cmd", b""],
        [b"cmd", nested("new_order")],  # once, it killed the matcher (RecursionError)
    ]
    for frames in bad:
        raw.send_multipart(frames)
    raw.close()
    acks = make_socket(cluster.ctx, config, "matcher_acks", bind=False)
    acks.send_multipart([b"ack", nested("rec_batch_ack")])
    assert client.request(order(team, "buy", 1, 100)).ok
    counters = cluster.services["matcher"].counters
    wait_for(lambda: counters["bad_frames.malformed"] == 7, 5, "the bad ack counted")
    assert counters["bad_frames.unexpected"] == 1
    acks.close()
    for channel in ("matcher_rpc", "matcher_pub_rpc"):
        rpc = make_socket(cluster.ctx, config, channel, bind=False)
        for junk in (b"\x00not msgpack", nested("ping"),
                     encode(order(team, "buy", 1, 1))):  # a command is not a request
            rpc.send(junk)
            assert rpc.poll(5000), channel
            assert isinstance(decode(rpc.recv()), ErrorReply)
        rpc.close()
    assert client.call(Ping(), Pong).last_seq == 2


def test_snapshot_plus_stream_rebuilds_the_book(
    cluster: Cluster, client: MatcherClient, config: Config
) -> None:
    a, b = register(client, "a"), register(client, "b")
    for price in (100, 101, 102):
        client.request(order(a, "sell", 5, price))
    sub = make_socket(cluster.ctx, config, "matcher_pub", bind=False)
    sub.subscribe(topics.book("SPX_4500_CALL"))
    sub.subscribe(topics.heartbeat("matcher"))
    buffered = []  # the join procedure: buffer until a heartbeat proves we are joined
    while True:
        assert sub.poll(5000), "no heartbeat"
        events = decode_events(recv_frames(sub)[-1])
        if isinstance(events[0], Heartbeat):
            break
        buffered += events
    sub.unsubscribe(topics.heartbeat("matcher"))
    snap = client.call(SnapshotRequest(), MarketSnapshot)
    levels = {lv.instrument_id: lv for lv in snap.books}["SPX_4500_CALL"]
    asks = dict(levels.asks)
    assert asks == {100: 5, 101: 5, 102: 5}
    client.request(order(b, "buy", 7, 101))
    client.request(order(a, "sell", 2, 99))
    book_seq = snap.seqs["md.book.SPX_4500_CALL"]
    while sub.poll(200):
        buffered += decode_events(recv_frames(sub)[-1])
    for delta in buffered:
        assert isinstance(delta, BookDelta)
        if delta.seq <= book_seq:
            continue
        assert delta.seq == book_seq + 1
        book_seq = delta.seq
        for side, price, qty in delta.changes:
            if side == "sell":
                asks[price] = qty
    sub.close()
    assert {p: q for p, q in asks.items() if q} == {101: 3, 102: 5, 99: 2}
    engine_asks = cluster.services["matcher"].engine.books["SPX_4500_CALL"].depth(None)[1]
    assert sorted(engine_asks) == sorted((p, q) for p, q in asks.items() if q)


def test_replay_returns_a_teams_private_stream(client: MatcherClient) -> None:
    a, b = register(client, "a"), register(client, "b")
    client.request(order(a, "sell", 5, 100))
    client.request(order(b, "buy", 5, 100))
    reply = client.call(ReplayRequest(topic="exec." + a, from_seq=1), ReplayReply)
    events = [decode(p) for p in reply.payloads]
    assert reply.complete
    assert [type(e).__name__ for e in events] == ["OrderAck", "ExecutionReport"]
    assert [e.seq for e in events] == [1, 2]  # type: ignore[union-attr]
    later = client.call(ReplayRequest(topic="exec." + a, from_seq=2), ReplayReply)
    assert len(later.payloads) == 1


@pytest.mark.parametrize("fsync", [True, False], ids=["disk-thread", "inline"])
def test_restart_recovers_from_snapshot_and_journal(tmp_path: Path, fsync: bool) -> None:
    config = make_config(tmp_path / "data", matcher={"snapshot_interval_s": 0.05, "fsync": fsync})
    matcher_dir = tmp_path / "data" / "matcher"
    with Cluster(config, ["matcher"]) as cluster:
        client = MatcherClient(config, cluster.ctx)
        client.wait_ready()
        a, b = register(client, "a"), register(client, "b")
        for i in range(40):
            if i == 20:  # the rest goes to the journal after a snapshot of the first 20
                wait_for(lambda: any(int(p.stem.split("-")[1]) > 0
                                     for p in matcher_dir.glob("snapshot-*.bin")))
            client.request(order(a if i % 2 else b, "buy" if i % 3 else "sell", 1, 100 + i % 3))
        matcher = cluster.services["matcher"]
        assert isinstance(matcher, MatcherService)
        before = {t: account(client, t) for t in (a, b)}
        last_seq, orders = matcher.engine.last_seq, matcher.engine.counters["order"]
        client.close()
    assert len(list(matcher_dir.glob("journal-*.log"))) >= 2
    with Cluster(config, ["matcher"]) as cluster:
        client = MatcherClient(config, cluster.ctx)
        assert client.wait_ready().last_seq == last_seq
        after = {t: account(client, t) for t in (a, b)}
        assert after == before
        r = client.request(order(register(client, "c"), "buy", 1, 50))  # a's 1 s window is full
        assert r.order_id == f"ORD_{orders + 1:08d}"
        client.close()


def snapshot_seqs(directory: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in directory.glob("snapshot-*.bin"))


def segment_seqs(directory: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in directory.glob("journal-*.log"))


@pytest.mark.parametrize("keep_full", [False, True], ids=["bounded", "full"])
def test_the_journal_is_kept_back_to_the_oldest_kept_snapshot(
        tmp_path: Path, keep_full: bool) -> None:
    """A long game's journal stays bounded: a segment goes once no kept snapshot needs it, and
    a restart still recovers the same state. With keep_full_journal every segment stays."""
    config = make_config(tmp_path / "data", matcher={
        "snapshot_interval_s": 0.05, "snapshots_kept": 2, "keep_full_journal": keep_full})
    matcher_dir = tmp_path / "data" / "matcher"
    with Cluster(config, ["matcher"]) as cluster:
        client = MatcherClient(config, cluster.ctx)
        client.wait_ready()
        a, b = register(client, "a"), register(client, "b")
        matcher = cluster.services["matcher"]
        assert isinstance(matcher, MatcherService)
        for round_ in range(4):  # each round ends in a snapshot of everything so far
            for i in range(10):
                client.request(order(a if i % 2 else b, "buy" if i % 3 else "sell", 1,
                                     100 + round_))
            last = matcher.engine.last_seq
            wait_for(lambda seq=last: seq in snapshot_seqs(matcher_dir), what=f"snapshot {last}")
        wait_for(lambda: segment_seqs(matcher_dir)[-1] > last, what="the segment after it")
        before = {t: account(client, t) for t in (a, b)}
        last_seq = matcher.engine.last_seq
        client.close()
    oldest = snapshot_seqs(matcher_dir)[0]
    assert oldest > 1
    if keep_full:
        assert segment_seqs(matcher_dir)[0] == 1
    else:
        assert min(segment_seqs(matcher_dir)) == oldest + 1
    with Cluster(config, ["matcher"]) as cluster:
        client = MatcherClient(config, cluster.ctx)
        assert client.wait_ready().last_seq == last_seq
        assert {t: account(client, t) for t in (a, b)} == before
        client.close()


def test_a_frame_holds_a_topics_events_and_no_response_overtakes_its_events(
    cluster: Cluster, client: MatcherClient, config: Config
) -> None:
    teams = [register(client, f"f{n}") for n in range(4)]
    sub = make_socket(cluster.ctx, config, "matcher_private", bind=False)
    sub.subscribe(topics.EXEC)
    sub.subscribe(topics.response(client.gw))

    def joined() -> bool:  # the matcher publishes a Pong on resp.<gw> for each probe
        client.call(Probe(gw=client.gw), Pong)
        return bool(sub.poll(100))

    wait_for(joined)
    while sub.poll(100):  # the probes' pongs
        recv_frames(sub)
    sent = 36  # within every limit: 9 one-lot orders per team (market makers: 10/s)
    for i in range(sent):  # sent without waiting: the matcher takes them in batches
        client.send(order(teams[i % 4], "sell" if i % 2 else "buy", 1, 12800 + i % 3))
    frames: list[tuple[bytes, list[object]]] = []
    responses = 0
    while responses < sent:
        assert sub.poll(5000), f"{responses} of {sent} responses"
        topic, payload = recv_frames(sub)
        events = decode_events(payload)
        assert events, "a frame holds at least one event"
        frames.append((topic, list(events)))
        responses += sum(isinstance(e, Response) for e in events)
        assert all(e.ok for e in events if isinstance(e, Response)), [
            (e.code, e.message) for e in events if isinstance(e, Response) and not e.ok]
    acked_at = {e.order_id: n for n, (t, evs) in enumerate(frames) if t.startswith(topics.EXEC)
                for e in evs if isinstance(e, OrderAck)}
    answered_at = {e.order_id: n for n, (t, evs) in enumerate(frames)
                   if t == topics.response(client.gw) for e in evs if isinstance(e, Response)}
    assert len(answered_at) == sent and answered_at.keys() == acked_at.keys()
    assert all(acked_at[oid] < answered_at[oid] for oid in answered_at)
    assert max(len(evs) for _, evs in frames) > 1, "some frame carried several events"
    for topic, evs in frames:  # one topic per frame, seqs contiguous inside it
        seqs = [e.seq for e in evs]  # type: ignore[attr-defined]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), topic
    sub.close(linger=0)


@pytest.mark.parametrize("owns_process", [True, False], ids=["process", "thread"])
def test_a_service_that_owns_its_process_freezes_its_heap_and_spaces_full_collections(
        tmp_path: Path, owns_process: bool) -> None:
    """run_process sets owns_process: the recovered state then leaves the collector's scans.
    A service running as one thread of a bigger process (tests, itg up) leaves the heap to
    the process's owner."""
    service = MatcherService(make_config(tmp_path / "data"))
    service.owns_process = owns_process
    gc.unfreeze()
    thresholds = gc.get_threshold()
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        assert service.ready.wait(10)
        assert (gc.get_freeze_count() > 0) is owns_process
        spaced = FULL_COLLECTION_EVERY if owns_process and thresholds[2] else thresholds[2]
        assert gc.get_threshold()[2] == spaced
    finally:
        service.stop()
        thread.join(10)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_a_command_that_breaks_the_engine_stops_the_matcher_unjournaled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail-stop: whatever the failing command changed is never published nor journaled, and
    the restart rebuilds the state of the commands before it."""
    def boom(self: Engine, cmd: CancelAll) -> None:
        self.accounts[cmd.team_id].cash += 1  # a half-applied change, then the failure
        raise RuntimeError("engine bug")

    config = make_config(tmp_path / "data")
    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_cancel_all", boom)  # before the engine binds its handlers
        cluster = Cluster(config, ["matcher"])
        cluster.start()
        client = MatcherClient(config, cluster.ctx)
        client.wait_ready()
        a = register(client, "a")
        assert client.request(order(a, "buy", 2, 100)).ok
        before = account(client, a)
        client.send(CancelAll(team_id=a))
        wait_for(lambda: "matcher" in cluster._errors, what="the matcher stopping")
        client.close()
        cluster.stop()
    with Cluster(config, ["matcher"]) as cluster:
        client = MatcherClient(config, cluster.ctx)
        client.wait_ready()
        assert account(client, a) == before
        client.close()


def test_a_second_matcher_on_the_same_data_dir_refuses_to_start(client: MatcherClient,
                                                                 config: Config) -> None:
    second = MatcherService(config)
    with pytest.raises(RuntimeError, match="another matcher is running"):
        second.run()
    assert register(client, "still-served")  # the first one serves on


def _fees(config: Config, fills: int) -> dict[str, int]:
    """Run the matcher on `config`, make `fills` one-lot trades between two teams (registered
    on the first run), stop it; every team's fees as the matcher then holds them."""
    with Cluster(config, ["matcher"]) as running:
        client = MatcherClient(config, running.ctx)
        try:
            client.wait_ready()
            for name in ("maker", "taker"):
                client.request(RegisterTeam(team_name=name, role="fast", key_hash=name))
            matcher = running.services["matcher"]
            assert isinstance(matcher, MatcherService)
            ids = {t.team_name: t.team_id for t in matcher.engine.teams.values()
                   if t.team_name in ("maker", "taker")}
            for side, team in [("sell", "maker"), ("buy", "taker")] * fills:
                answer = client.request(NewOrder(team_id=ids[team], instrument_id="SPX_4500_CALL",
                                                 side=side, quantity=1, price=1000))
                assert answer.ok, answer
            return {name: matcher.engine.accounts[i].fees for name, i in ids.items()}
        finally:
            client.close()


def test_fills_replayed_after_a_rules_change_keep_the_fees_they_were_published_with(
        tmp_path: Path) -> None:
    """The journal after the last snapshot is replayed at start. Under the new config it gave
    the fills already published, and stored, other fees: the state disagreed with both."""
    old = {**FAST, "maker_fee_cents": 1, "taker_fee_cents": -2}
    new = {**FAST, "maker_fee_cents": 5, "taker_fee_cents": -7}

    def config(role: dict[str, int]) -> Config:
        return make_config(tmp_path / "data", game={"roles": {"fast": role}},
                           matcher={"snapshot_interval_s": 3600.0})  # all of it replayed
    assert _fees(config(old), fills=3) == {"maker": 3, "taker": -6}
    assert _fees(config(new), fills=1) == {"maker": 3 + 5, "taker": -6 - 7}
    assert _fees(config(new), fills=0) == {"maker": 8, "taker": -13}  # and so it stays
    assert _fees(config(old), fills=0) == {"maker": 8, "taker": -13}


def test_a_restart_without_an_instrument_that_holds_orders_or_positions_is_refused_clearly(
        tmp_path: Path) -> None:
    """Strikes cut from the config while the game holds orders or positions in them: the start
    is refused with a message naming them (it was a KeyError), and nothing is changed, so the
    old config starts the game again. A strike that held nothing may go."""
    def config(strike_min: int) -> Config:
        spx = {"symbol": "SPX", "start_price": 4400, "strike_min": strike_min,
               "strike_max": 4600, "strike_step": 100}
        return make_config(tmp_path / "data", game={"underlyings": [spx]})
    with Cluster(config(4200), ["matcher"]) as cluster:
        client = MatcherClient(cluster.config, cluster.ctx)
        client.wait_ready()
        a, b = register(client, "a"), register(client, "b")
        for team, side in ((a, "sell"), (b, "buy")):  # a fill: positions of -1 / +1
            assert client.request(order(team, side, 1, 100, iid="SPX_4300_PUT")).ok
        assert client.request(order(a, "buy", 2, 90, iid="SPX_4400_CALL")).ok  # resting
        assert client.request(order(b, "buy", 2, 90, iid="SPX_4200_CALL")).ok
        assert client.request(CancelAll(team_id=b)).ok  # 4200 holds nothing now
        client.close()
    with pytest.raises(ClusterError) as refused:
        Cluster(config(4500), ["matcher"]).start()
    message = str(refused.value)
    assert "SPX_4300_PUT" in message and "SPX_4400_CALL" in message
    assert "SPX_4200_CALL" not in message
    with Cluster(config(4300), ["matcher"]) as cluster:  # 4200 dropped: nothing was in it
        matcher = cluster.services["matcher"]
        assert isinstance(matcher, MatcherService)
        assert "SPX_4200_CALL" not in matcher.engine.books
        assert [o.instrument_id for o in matcher.engine.live.values()] == ["SPX_4400_CALL"]
        client = MatcherClient(cluster.config, cluster.ctx)
        reply = client.call(AccountQuery(team_id=a), AccountReply)
        assert reply.positions == {"SPX_4300_PUT": -1}
        client.close()


def test_a_restart_without_the_role_of_a_team_in_the_game_is_refused_clearly(
        tmp_path: Path) -> None:
    """A role disabled between runs: its teams' next order, or a fill against their resting
    orders, stopped the matcher (KeyError) on every start after. Now the start is refused,
    naming them, and nothing is changed: the old config starts the game again."""
    def config(hedge_funds: bool) -> Config:
        return make_config(tmp_path / "data",
                           game={"roles": {"hedge_fund": {"enabled": hedge_funds}}})
    with Cluster(config(True), ["matcher"]) as cluster:
        client = MatcherClient(cluster.config, cluster.ctx)
        client.wait_ready()
        fund = register(client, "fund", role="hedge_fund")
        assert client.request(order(fund, "sell", 5, 1000)).ok  # resting
        client.close()
    with pytest.raises(ClusterError) as refused:
        Cluster(config(False), ["matcher"]).start()
    assert f"{fund} (hedge_fund)" in str(refused.value)
    with Cluster(config(True), ["matcher"]) as cluster:
        client = MatcherClient(cluster.config, cluster.ctx)
        client.wait_ready()
        taker = register(client, "taker")
        filled = client.request(order(taker, "buy", 5, 1000)).result
        assert filled is not None and filled.status == "filled"
        client.close()
