"""The gateway among others: several at once, restarts, a matcher that does not answer."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from common.messages import Command, KeyReissued, NewOrder
from services.gateway import handlers
from services.gateway.service import GatewayService
from services.launcher import Cluster
from services.matcher.service import MatcherService
from tests.conftest import make_config, wait_for
from tests.integration.gw import Stream, running


@contextmanager
def another_gateway(cluster: Cluster, gw_id: str, **gateway: Any) -> Iterator[httpx.Client]:
    """A second gateway process-alike: its own id, port and sockets, same bus."""
    config = make_config(Path(cluster.config.data_dir),
                         gateway={"port": 0, "id": gw_id, **gateway}, bus={"heartbeat_s": 0.05})
    service = GatewayService(config, cluster.ctx)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    assert service.ready.wait(10)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{service.port}", timeout=10) as client:
            yield client
    finally:
        service.stop()
        thread.join(10)


def test_several_gateways_share_keys_and_route_each_answer_home(tmp_path: Path) -> None:
    with running(tmp_path / "data", gateway={"id": "gw-a"}) as ex:
        alice = ex.register("alice")
        with another_gateway(ex.cluster, "gw-b") as b, another_gateway(ex.cluster, "gw-a2") as c:
            bob = b.post("/game/teams/register", json={"team_name": "bob", "role": "retail"}
                         ).json()["data"]
            bob_key = {"X-API-Key": bob["api_key"]}
            stream = alice.ws()  # on gateway A
            stream.next()
            for client in (b, c):  # alice's key works everywhere: learned from the matcher
                r = client.post("/exchange/orders", headers=alice.headers, json={
                    "instrument_id": "SPY_420_CALL", "side": "sell", "quantity": 1,
                    "price": 2.5})
                oid = r.json()["order_id"]
                assert r.json()["data"]["status"] == "new"
                assert stream.private("new_order_ack", oid)["data"]["price"] == 2.5
            assert ex.http.get("/positions", headers=bob_key).json()["data"]["team_id"] == (
                bob["team_id"])
            fill = c.post("/exchange/orders", headers=bob_key, json={
                "instrument_id": "SPY_420_CALL", "side": "buy", "quantity": 2}).json()
            assert fill["data"]["filled_quantity"] == 2
            assert alice.positions() == {"SPY_420_CALL": -2}
            stream.close()


def test_a_second_gateway_with_the_same_id_is_reported_not_misled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each gets the other's answers: they must not be taken for its own, and the operator is
    told once the answers a restart may leave have had their time."""
    with running(tmp_path / "data", gateway={"id": "gw-a", "request_timeout_s": 0.2}) as ex:
        alice = ex.register("alice")
        with another_gateway(ex.cluster, "gw-a", request_timeout_s=0.2) as twin:
            time.sleep(0.7)  # past the twin's grace of 3 request timeouts (3 x 0.2 s)
            for i in range(3):
                assert alice.order("buy", 1, 1.0 + i)["success"]  # through the first one
                r = twin.post("/exchange/orders", headers=alice.headers, json={
                    "instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1,
                    "price": 2.0 + i}).json()
                assert r["success"] and r["data"]["status"] == "new"
            assert len(alice.open_orders()) == 6
            metrics = twin.get("/metrics").text
            assert "itg_foreign_responses_total 3\n" in metrics
            assert "itg_late_responses_total 0\n" in metrics
        assert caplog.text.count("another gateway runs with gateway.id = 'gw-a'") == 2


def test_a_restarted_gateway_still_accepts_every_key(tmp_path: Path) -> None:
    with running(tmp_path / "data") as ex:
        team = ex.register("survivor")
        with another_gateway(ex.cluster, "gw-fresh") as fresh:
            r = fresh.get("/positions", headers=team.headers)
            assert r.json()["data"]["team_id"] == team.team_id
            assert fresh.get("/positions", headers={"X-API-Key": "itg_nope"}).status_code == 401


def test_a_joining_gateway_scores_positions_only_once_it_has_read_the_market(
        tmp_path: Path) -> None:
    """Its first leaderboard refresh ran before it had read the market (here the last trades:
    no simulator), so it counted positions at zero, and the team's P&L history kept that."""
    with running(tmp_path / "data") as ex:
        maker, taker = ex.register("maker"), ex.register("taker", "retail")
        assert maker.order("sell", 1, 2.5, instrument="SPY_420_CALL")["success"]
        assert taker.order("buy", 1, instrument="SPY_420_CALL")["data"]["filled_quantity"] == 1
        for attempt in range(2):
            with another_gateway(ex.cluster, f"gw-late{attempt}") as late:
                samples: list[float] = []

                def sampled(samples: list[float] = samples, late: httpx.Client = late) -> bool:
                    """No history while pending (or while rate-limited)."""
                    view = late.get("/dashboard/api/team", headers=maker.headers).json()
                    samples[:] = [pnl for _, pnl in view.get("history", [])]
                    return bool(samples)

                wait_for(sampled, what="a first P&L sample")
                assert samples[0] == 0.02  # the maker's rebate; at a zero mark, 250.02


def _hold_matcher(cluster: Cluster, coid: str) -> threading.Event:
    """Fault injection: the matcher thread stalls on the command with this client_order_id."""
    matcher = cluster.services["matcher"]
    assert isinstance(matcher, MatcherService)
    engine, release = matcher.engine, threading.Event()
    apply = engine.apply

    def slow_apply(cmd: Command, seq: int, ts: int) -> Any:
        if isinstance(cmd, NewOrder) and cmd.client_order_id == coid:
            release.wait(10)
        return apply(cmd, seq, ts)

    engine.apply = slow_apply  # type: ignore[method-assign]
    return release


def test_timeout_then_retry_with_the_same_client_order_id_places_one_order(
    tmp_path: Path,
) -> None:
    with running(tmp_path / "data", gateway={"request_timeout_s": 0.3}) as ex:
        team = ex.register("patient")
        release = _hold_matcher(ex.cluster, "once-only")
        late = team.order("buy", 3, 4.00, client_order_id="once-only", request_id="try-1")
        assert late["success"] is False and late["error"]["code"] == "PROCESSING_TIMEOUT"
        assert late["request_id"] == "try-1" and late["error"]["details"]["timeout_s"] == 0.3
        release.set()
        retry = team.order("buy", 3, 4.00, client_order_id="once-only", request_id="try-2")
        again = team.order("buy", 3, 4.00, client_order_id="once-only")
        assert retry["success"] and retry["order_id"] == again["order_id"]
        assert [(o["order_id"], o["client_order_id"]) for o in team.open_orders()] == [
            (retry["order_id"], "once-only")]
        gateway = ex.gateway.gateway
        assert gateway.bridge.counters["late_responses"] == 1  # the first answer, dropped


def test_gateway_side_rate_limit_stops_orders_before_the_matcher(tmp_path: Path) -> None:
    with running(tmp_path / "data") as ex:
        team = ex.register("eager", "retail")  # 1 order per second
        stream = team.ws()
        stream.next()
        first, second = (team.order("buy", 1, 1.00) for _ in range(2))
        assert first["success"]
        assert second["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert second["error"]["details"]["limit"] == 1
        oid = first["order_id"]
        assert stream.private("new_order_ack", oid)
        third = team.cancel(oid)  # cancels count against the request rate, not the order rate
        assert third["success"]
        assert stream.private("cancel_ack", oid)
        reject = stream.private("new_order_reject")  # made by the gateway: the matcher never saw
        assert reject["data"] == {  # the order, but the team's stream still hears of it
            "order_id": None, "client_order_id": None, "instrument_id": "SPX_4500_CALL",
            "status": "rejected", "reason": "Order rate limit exceeded",
            "error_code": "RATE_LIMIT_EXCEEDED", "details": second["error"]["details"]}
        bad = team.order("sideways", 1, 1.00, client_order_id="c-9")
        assert bad["error"]["code"] == "INVALID_SIDE"
        invalid = stream.until(lambda m: m["type"] == "new_order_reject"
                               and m["data"]["client_order_id"] == "c-9")
        assert (invalid["data"]["error_code"], invalid["data"]["details"]) == (
            "INVALID_SIDE", {"side": "sideways"})
        stream.close()


def test_cancels_and_reads_beyond_the_request_rate_are_refused_before_the_matcher(
        tmp_path: Path) -> None:
    with running(tmp_path / "data", gateway={"max_requests_per_s": 5}) as ex:
        team = ex.register("looping")
        matcher = ex.cluster.services["matcher"]
        before = matcher.last_seq()
        answers = [team.cancel(f"ORD_{i:08d}") for i in range(12)]
        codes = [a["error"]["code"] for a in answers]
        assert codes.count("CANCEL_FAILED") == 5 and codes[5:] == ["RATE_LIMIT_EXCEEDED"] * 7
        refused = answers[-1]["error"]["details"]
        assert (refused["scope"], refused["limit"]) == ("requests", 5)
        assert 0 < refused["retry_after_s"] <= 1
        assert matcher.last_seq() == before + 5  # only the admitted ones were journaled
        read = ex.http.get("/history/trades?request_id=mine", headers=team.headers).json()
        assert (read["error"]["code"], read["request_id"]) == ("RATE_LIMIT_EXCEEDED", "mine")
        view = ex.http.get("/dashboard/api/team", headers=team.headers).json()
        assert view["error"]["code"] == "RATE_LIMIT_EXCEEDED"  # its own page too
        other = ex.register("quiet")
        assert other.cancel("ORD_00000001")["error"]["code"] == "CANCEL_FAILED"  # per team
        time.sleep(refused["retry_after_s"] + 0.05)
        assert team.cancel("ORD_00000001")["error"]["code"] == "CANCEL_FAILED"




def test_a_reissued_key_replaces_the_old_one_on_every_gateway(tmp_path: Path) -> None:
    """The operator reissues a team's key on gateway A. Gateway B, which had the old key cached,
    and a stream and a dashboard view open with it, drops all three; the new key works
    everywhere at once."""
    admin = {"X-Admin-Key": "admin-key-for-the-tests-0001"}
    with running(tmp_path / "data", gateway={"id": "gw-a", "admin_key": admin["X-Admin-Key"]}
                 ) as ex:
        team = ex.register("leaky")
        with another_gateway(ex.cluster, "gw-b") as b:
            assert b.get("/positions", headers=team.headers).status_code == 200  # cached on B
            port = int(str(b.base_url).rsplit(":", 1)[1])
            stream = Stream(connect(f"ws://127.0.0.1:{port}/ws?api_key={team.key}",
                                    close_timeout=2))
            stream.next()
            view = connect(f"ws://127.0.0.1:{port}/ws/team", close_timeout=2)
            view.send(json.dumps({"type": "auth", "api_key": team.key}))
            assert json.loads(view.recv(timeout=5))["type"] == "team"
            answer = ex.http.post(f"/admin/teams/{team.team_id}/key", headers=admin).json()
            assert answer["success"] and answer["data"]["team_id"] == team.team_id
            new_key = {"X-API-Key": answer["data"]["api_key"]}
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    stream.next()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert "reissued" in closed.value.rcvd.reason
            deadline = time.monotonic() + 5  # the view is sent again at every refresh
            with pytest.raises(ConnectionClosed):
                while time.monotonic() < deadline:
                    view.recv(timeout=5)
            assert view.close_code == 1008 and "reissued" in (view.close_reason or "")
            for client in (ex.http, b):
                assert client.get("/positions", headers=team.headers).status_code == 401
                assert client.get("/positions", headers=new_key).json()["data"]["team_id"] == (
                    team.team_id)
            missing = ex.http.post("/admin/teams/TEAM_999/key", headers=admin).json()
            assert missing["error"]["code"] == "TEAM_NOT_FOUND"
            assert ex.http.post(f"/admin/teams/{team.team_id}/key").status_code == 401


def test_a_stream_whose_key_is_reissued_during_its_handshake_is_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reissue closed the team's streams before this one was among them: it streamed on
    with the revoked key. The handshake is held (the real accept, made slow) over the reissue."""
    admin = {"X-Admin-Key": "admin-key-for-the-tests-0001"}
    with running(tmp_path / "data", gateway={"admin_key": admin["X-Admin-Key"]}) as ex:
        team = ex.register("leaky")
        held, go = threading.Event(), threading.Event()
        accept = WebSocket.accept

        async def slow_accept(self: WebSocket, *args: Any, **kw: Any) -> None:
            if self.url.path == "/ws":
                held.set()
                while not go.is_set():
                    await asyncio.sleep(0.01)
            await accept(self, *args, **kw)

        monkeypatch.setattr(WebSocket, "accept", slow_accept)
        opened: list[Stream] = []
        threading.Thread(target=lambda: opened.append(team.ws()), daemon=True).start()
        assert held.wait(5)
        assert ex.http.post(f"/admin/teams/{team.team_id}/key", headers=admin).json()["success"]
        go.set()
        wait_for(lambda: opened, what="the handshake")
        with pytest.raises(ConnectionClosed) as closed:
            opened[0].next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert "reissued" in closed.value.rcvd.reason


def test_a_team_page_whose_key_is_reissued_while_its_view_is_read_gets_no_view(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's first view asks the matcher for the team's orders. A reissue heard during that
    wait closed the page only after one more view, read with the revoked key. The account's
    read is held (the real one, made slow) over the reissue."""
    admin = {"X-Admin-Key": "admin-key-for-the-tests-0001"}
    with running(tmp_path / "data", gateway={"admin_key": admin["X-Admin-Key"]}) as ex:
        team = ex.register("leaky")
        team.order("buy", 1, 1.00, instrument="SPY")

        def counted() -> bool:  # by a leaderboard read, which lists no orders of pageless teams
            time.sleep(0.05)  # within the team's request rate
            view = ex.http.get("/dashboard/api/team", headers=team.headers).json()
            return bool(view.get("team", {}).get("open_orders"))

        wait_for(counted, what="the order counted")
        held, go = threading.Event(), threading.Event()
        account = handlers.account

        async def slow_account(gw: Any, me: Any) -> Any:
            if not held.is_set():
                held.set()
                while not go.is_set():
                    await asyncio.sleep(0.01)
            return await account(gw, me)

        monkeypatch.setattr(handlers, "account", slow_account)
        view = connect(f"{ex.ws_base}/ws/team", close_timeout=2)
        view.send(json.dumps({"type": "auth", "api_key": team.key}))
        assert held.wait(5)
        assert ex.http.post(f"/admin/teams/{team.team_id}/key", headers=admin).json()["success"]

        def old_key_refused() -> bool:
            time.sleep(0.05)  # within the team's request rate
            return ex.http.get("/positions", headers=team.headers).status_code == 401

        wait_for(old_key_refused, what="the gateway hearing of the reissue")
        go.set()
        with pytest.raises(ConnectionClosed):
            view.recv(timeout=5)
        assert view.close_code == 1008 and "reissued" in (view.close_reason or "")


def test_a_gateway_that_lost_a_key_reissue_stops_taking_the_old_key(tmp_path: Path) -> None:
    """The reissue's frame on sys.keys never reaches this gateway (PUB/SUB may drop); the
    matcher's next heartbeat counts one more reissue than it saw, and the cached key goes."""
    admin = {"X-Admin-Key": "admin-key-for-the-tests-0001"}
    with running(tmp_path / "data", gateway={"admin_key": admin["X-Admin-Key"]}) as ex:
        team = ex.register("lossy")
        assert ex.http.get("/positions", headers=team.headers).status_code == 200  # cached
        gateway = ex.gateway.gateway
        lost: list[KeyReissued] = []
        gateway.bridge.on_key_reissued = lost.append  # the frame is lost: nothing acts on it
        answer = ex.http.post(f"/admin/teams/{team.team_id}/key", headers=admin).json()
        assert answer["success"] and len(lost) == 1
        wait_for(lambda: ex.http.get("/positions", headers=team.headers).status_code == 401,
                 5, "the old key refused")
        new_key = {"X-API-Key": answer["data"]["api_key"]}
        assert ex.http.get("/positions", headers=new_key).json()["data"]["team_id"] == (
            team.team_id)


def test_a_gateway_waiting_for_the_matcher_stops_when_asked(tmp_path: Path) -> None:
    """It waited out its start_timeout_s (30 s) first: supervisord's 10 s then killed it."""
    service = GatewayService(make_config(tmp_path / "data", gateway={"port": 0}))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    wait_for(lambda: getattr(service, "server", None) is not None and service.server.started,
             10, "the HTTP server up")  # and then waiting for a matcher that is nowhere
    assert not service.ready.is_set()
    asked = time.monotonic()
    service.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - asked < 5


def test_commands_wait_for_a_matcher_that_answers_and_never_run_after_being_refused(
    short_dir: Path,
) -> None:
    """The gateway held commands for a matcher that was not there, and they ran when one came
    (a registration answered PROCESSING_TIMEOUT took its name with a key nobody saw); and the
    first command after a matcher (re)start timed out although it ran: its answer was
    published before the gateway's private SUB had reconnected. Over ipc, as when the services
    are processes (in one process they start together, the matcher first)."""
    def register(name: str) -> dict[str, Any]:
        return ex.http.post("/game/teams/register",  # type: ignore[no-any-return]
                            json={"team_name": name, "role": "market_maker"}).json()

    def start_matcher() -> tuple[MatcherService, threading.Thread]:
        matcher = MatcherService(ex.cluster.config, ex.cluster.ctx)
        thread = threading.Thread(target=matcher.run, daemon=True)
        thread.start()
        return matcher, thread

    def stop(matcher: MatcherService, thread: threading.Thread) -> None:
        matcher.stop()
        thread.join(10)

    with running(short_dir / "d", services=("gateway",), bus={"transport": "ipc"},
                 gateway={"start_timeout_s": 0.2, "request_timeout_s": 3.0}) as ex:
        r = register("early")
        assert r["error"]["code"] == "SERVICE_UNAVAILABLE", r  # never sent: never runs
        running_matcher = start_matcher()
        try:
            assert register("early")["success"]  # the name was free; answered at first try
        finally:
            stop(*running_matcher)
        # (a command sent before the gateway learns of the stop is in flight: it times out)
        wait_for(lambda: not ex.gateway.gateway.bridge.joined.is_set(), what="disconnect seen")
        assert register("between")["error"]["code"] == "SERVICE_UNAVAILABLE"
        running_matcher = start_matcher()
        try:
            assert register("between")["success"]
            assert register("early")["error"]["code"] == "DUPLICATE_TEAM_NAME"  # same state
        finally:
            stop(*running_matcher)
