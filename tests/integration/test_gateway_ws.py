"""The WebSocket stream: contiguous seq, resume with ?since=N, one connection per team, slow
clients, frame limits, and public feeds (news to all, signals by role)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from common.bus_client import MatcherClient
from common.messages import NewOrder
from common.transport import make_socket
from tests.conftest import snapshot_from, wait_for
from tests.integration.gw import CALL, Exchange, Stream, Team, running

PRIVATE = {"new_order_ack", "new_order_reject", "execution_report", "cancel_ack",
           "cancel_reject"}


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    with running(tmp_path_factory.mktemp("ws") / "data",
                 gateway={"ws_queue_size": 50, "ws_close_timeout_s": 10.0}) as ex:
        yield ex


def private(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["type"], m["data"]["order_id"]) for m in messages if m["type"] in PRIVATE]


def drain(stream: Stream, count: int) -> list[dict[str, Any]]:
    """Read until `count` private messages have arrived."""
    got: list[dict[str, Any]] = []
    while len(private(got)) < count:
        got.append(stream.next())
    return got


def test_resume_with_since_replays_exactly_what_was_missed(exchange: Exchange) -> None:
    a, b = exchange.register("resume-a"), exchange.register("resume-b")
    first = a.ws()
    assert first.next()["type"] == "position_snapshot"
    o1 = a.order("sell", 5, 3.00, instrument="SPX_4200_CALL")["order_id"]
    b.order("buy", 2, 3.00, instrument="SPX_4200_CALL")
    seen = drain(first, 2)  # ack o1, execution o1 (market data may sit between them)
    assert private(seen) == [("new_order_ack", o1), ("execution_report", o1)]
    last_ack_seq = next(m["seq"] for m in seen if m["type"] == "new_order_ack")
    first.close()
    b.order("buy", 1, 3.00, instrument="SPX_4200_CALL")  # while a is away
    o2 = a.order("buy", 1, 1.00, instrument="SPX_4200_CALL")["order_id"]
    a.cancel(o2)
    resumed = a.ws(since=last_ack_seq)
    got = drain(resumed, 4)
    assert got[0]["seq"] == last_ack_seq + 1 and got[0]["type"] != "position_snapshot"
    assert private(got) == [("execution_report", o1), ("execution_report", o1),
                            ("new_order_ack", o2), ("cancel_ack", o2)]
    fills = [m["data"]["executed_quantity"] for m in got if m["type"] == "execution_report"]
    assert fills == [2, 1]
    o3 = a.order("sell", 1, 9.00, instrument="SPX_4200_CALL")["order_id"]  # live again, in order
    assert private(drain(resumed, 1)) == [("new_order_ack", o3)]
    resumed.close()
    assert exchange.gateway.gateway.hub.counters["resumes"] >= 1


def test_since_that_cannot_be_resolved_continues_with_a_snapshot(exchange: Exchange) -> None:
    team = exchange.register("resume-unknown")
    team.order("buy", 2, 1.00, instrument="SPX_4600_PUT")
    stream = team.ws(since=41)
    first = stream.next()
    assert (first["seq"], first["type"]) == (42, "position_snapshot")
    assert first["data"]["positions"] == {}
    stream.close()


def test_resume_window_holds_exactly_session_window_messages(tmp_path: Path) -> None:
    """The per-message memory of a session is bounded by `session_window` (the soak's gateway
    grew with every private message sent until twice the window), and resumes stay exact
    inside the window and fall back to a snapshot beyond it."""
    window = 3  # 3 x window orders stay under the market maker's 10 orders/s
    with running(tmp_path / "data", gateway={"session_window": window}) as ex:
        team = ex.register("window")
        stream = team.ws()
        assert stream.next()["type"] == "position_snapshot"
        oids = [team.order("buy", 1, 1.00 + i / 100, instrument="SPY_460_PUT")["order_id"]
                for i in range(3 * window)]
        got = drain(stream, len(oids))
        assert private(got) == [("new_order_ack", oid) for oid in oids]
        acks = [m["seq"] for m in got if m["type"] == "new_order_ack"]
        session = ex.gateway.gateway.hub.sessions[team.team_id]
        assert len(session.marks) == window  # 1 + 9 private messages sent, 3 remembered
        stream.close()

        resumed = team.ws(since=acks[-3])  # inside the window: the last two acks again
        again = drain(resumed, 2)
        assert again[0]["seq"] == acks[-3] + 1
        assert private(again) == [("new_order_ack", oid) for oid in oids[-2:]]
        resumed.close()
        assert ex.gateway.gateway.hub.counters["resumes"] == 1
        assert len(session.marks) == window

        old = team.ws(since=acks[0])  # older than the window: a fresh snapshot instead
        first = old.next()
        assert (first["seq"], first["type"]) == (acks[0] + 1, "position_snapshot")
        old.close()
        assert ex.gateway.gateway.hub.counters["resume_fallbacks"] == 1


def test_a_new_connection_replaces_the_old_one(exchange: Exchange) -> None:
    team = exchange.register("twice")
    old = team.ws()
    old.next()
    new = team.ws()
    assert new.next()["type"] == "position_snapshot"
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            old.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    oid = team.order("buy", 1, 1.00, instrument="SPY_450_CALL")["order_id"]
    assert new.private("new_order_ack", oid)
    new.close()


def test_handshake_needs_a_valid_key_and_since(exchange: Exchange,
                                              caplog: pytest.LogCaptureFixture) -> None:
    team = exchange.register("handshake")
    caplog.set_level(logging.INFO)
    for query, status in (("", 401), ("?api_key=itg_wrong", 401),
                          (f"?api_key={team.key}&since=-1", 400),
                          (f"?api_key={team.key}&since=abc", 400),
                          (f"?api_key={team.key}&since=%C2%B2", 400),  # "²": a 500 before
                          (f"?api_key={team.key}&since=%EF%BC%95", 400)):  # fullwidth 5
        with pytest.raises(InvalidStatus) as refused:
            connect(exchange.ws_base + "/ws" + query).close()
        assert refused.value.response.status_code == status
    # a refusal is an answer: uvicorn logged an ERROR after each one, and on handlers of its
    # own, so its lines were plain text in a JSON log (--log-format json)
    for name in ("uvicorn", "uvicorn.error"):
        assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate
    assert [r.getMessage() for r in caplog.records if r.name.startswith("uvicorn")] == []


def test_client_messages_ping_errors_and_frame_limit(exchange: Exchange) -> None:
    team = exchange.register("chatty")
    stream = team.ws()
    stream.next()
    stream.conn.send('{"type": "ping"}')
    assert stream.until(lambda m: m["type"] == "pong")["data"] == {}
    seq = 0
    # the second nests past the decoder's stack, which used to cut the connection
    for junk in ("hello", '{"x": ' + "[" * 5_000):
        stream.conn.send(junk)
        error = stream.until(lambda m: m["type"] == "error" and m["seq"] > seq)  # noqa: B023
        assert error["data"]["code"] == "INVALID_MESSAGE"
        seq = error["seq"]
    stream.conn.send("x" * 100_000)  # over max_ws_frame_bytes
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            stream.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert team.order("buy", 1, 1.00, instrument="SPY_450_PUT")["success"]  # nothing changed


def test_slow_client_is_dropped_with_a_reason_and_others_are_unaffected(
    exchange: Exchange,
) -> None:
    slow, fast = exchange.register("slow"), exchange.register("fast")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", exchange.gateway.port))
    lazy = Stream(connect(f"{exchange.ws_base}/ws?api_key={slow.key}", sock=sock, max_queue=1))
    quick = fast.ws()
    quick.next()
    hub = exchange.gateway.gateway.hub
    client = MatcherClient(exchange.cluster.config, exchange.cluster.ctx)
    client.wait_ready()
    try:  # floods of private messages for the slow team (mostly rate-limit rejects)
        deadline = time.monotonic() + 60
        while slow.team_id in hub.live:
            assert time.monotonic() < deadline, "the slow client was never dropped"
            for i in range(1000):
                client.send(NewOrder(team_id=slow.team_id, instrument_id=CALL, side="buy",
                                     quantity=1, price=1 + i % 50))
            flood_end = time.monotonic() + 1.0
            while slow.team_id in hub.live and time.monotonic() < flood_end:
                time.sleep(0.01)
    finally:
        client.close()
    assert hub.counters["slow_consumers"] >= 1
    oid = fast.order("buy", 1, 1.00, instrument="SPX_4300_PUT")["order_id"]
    assert quick.private("new_order_ack", oid, timeout=2)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            lazy.conn.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "slow consumer" in closed.value.rcvd.reason
    quick.close()


def test_news_to_everyone_and_signals_only_to_their_role(exchange: Exchange,
                                                        tmp_path: Path) -> None:
    hedge, maker = exchange.register("hf", "hedge_fund"), exchange.register("mm-sig")
    hf_ws, mm_ws = hedge.ws(), maker.ws()
    hf_ws.next()
    mm_ws.next()
    config, ctx = exchange.cluster.config, exchange.cluster.ctx
    public = make_socket(ctx, config, "events_pub", bind=True)
    private_ = make_socket(ctx, config, "events_private", bind=True)
    try:
        def send(sock: Any, topic: bytes, **fields: Any) -> None:
            sock.send_multipart([topic, msgspec.msgpack.encode([fields])])  # an array of events

        def feed() -> None:
            send(private_, b"signal.hedge_fund", type="vol_forecast", seq=1,
                 signal_type="volatility_forecast", regime="high", vol=0.5)
            send(public, b"news", type="news", seq=1, headline="Fed announces emergency meeting",
                 direction="down", magnitude=0.02, jump=True)

        got: dict[str, Any] = {}

        def hf_has_both() -> bool:
            feed()
            while True:
                try:
                    msg = hf_ws.next(timeout=0.05)
                except TimeoutError:
                    return {"signal", "event"} <= set(got)
                got.setdefault(msg["type"], msg["data"])

        wait_for(hf_has_both)
        assert got["signal"]["signal_type"] == "volatility_forecast"
        assert got["event"]["event_type"] == "news"
        assert got["event"]["impact"]["direction"] == "down"
        news = mm_ws.until(lambda m: m["type"] == "event")
        assert news["data"]["headline"] == "Fed announces emergency meeting"
        # Both feeds are joined now. One more signal, seen by the hedge fund (so the gateway
        # has fanned it out), then a marker news: had the market maker been sent that signal,
        # it would come before the marker.
        send(private_, b"signal.hedge_fund", type="vol_forecast", seq=2,
             signal_type="volatility_forecast", regime="low", vol=0.1)
        hf_ws.until(lambda m: m["type"] == "signal" and m["data"]["regime"] == "low")
        send(public, b"news", type="news", seq=2, headline="marker", direction="up",
             magnitude=0.0, jump=False)
        mm_ws.until(lambda m: m["type"] == "event" and m["data"]["headline"] == "marker")
        assert [m for m in mm_ws.seen if m["type"] == "signal"] == []
    finally:
        public.close()
        private_.close()
        hf_ws.close()
        mm_ws.close()


def test_since_older_than_the_matchers_replay_ring_continues_with_a_snapshot(
        tmp_path: Path) -> None:
    """The session knows where the client was, but the matcher no longer holds what it
    missed: message N+1 is a fresh position_snapshot (it was a 1011 close on every retry)."""
    with running(tmp_path / "data", matcher={"replay_ring": 5}) as ex:
        team = ex.register("ring-resume")
        stream = team.ws()
        assert stream.next()["type"] == "position_snapshot"
        oid = team.order("buy", 1, 1.00)["order_id"]
        last = stream.private("new_order_ack", oid)["seq"]
        stream.close()
        for i in range(8):  # more than the ring holds
            team.order("buy", 1, 1.01 + i / 100)
        resumed = team.ws(since=last)
        first = resumed.next()
        assert (first["type"], first["seq"]) == ("position_snapshot", last + 1)
        assert first["data"]["positions"] == {}  # nothing traded; the state, not the history
        later = team.order("buy", 1, 2.00)["order_id"]
        resumed.private("new_order_ack", later)  # next() checks every seq follows on
        assert private(resumed.seen) == [("new_order_ack", later)]  # no replayed history
        assert ex.gateway.gateway.hub.counters["resume_fallbacks"] == 1


def test_a_fresh_stream_after_a_matcher_restart_goes_on_from_its_snapshot(
        tmp_path: Path) -> None:
    """After a restart the matcher's replay rings hold only the journal after its snapshot;
    a new stream starts from the account's own exec seq, not from a replay (it was closed
    with 1011 at its first event)."""
    data = tmp_path / "data"
    with running(data, matcher={"snapshot_interval_s": 0.1}) as ex:
        team = ex.register("restart-stream")
        team.order("buy", 2, 1.00)
        snapshot_from(data, ex.cluster.services["matcher"].last_seq())
        key, team_id = team.key, team.team_id
    with running(data) as ex:
        team = Team(ex, team_id, key)
        stream = team.ws()
        assert stream.next()["type"] == "position_snapshot"
        oid = team.order("buy", 1, 1.05)["order_id"]
        stream.private("new_order_ack", oid)  # next() checks every seq follows on
        assert private(stream.seen) == [("new_order_ack", oid)]
        assert ex.gateway.gateway.hub.counters["unrecoverable_gaps"] == 0
