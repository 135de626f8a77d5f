"""The operator's API and the dashboard's streams over real HTTP and WebSockets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import wait_for
from tests.integration.gw import Exchange, running

ADMIN = "admin-key-for-the-tests-0001"
HEADERS = {"X-Admin-Key": ADMIN}


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    with running(
        tmp_path_factory.mktemp("admin") / "data", ("matcher", "simulator", "events", "gateway"),
        gateway={"admin_key": ADMIN, "dashboard_interval_s": 0.05,
                 "leaderboard_interval_s": 0.1},
        matcher={"fsync": False},
        simulator={"speed": 50.0, "retail_orders_per_tick": 0.0, "status_log_s": 0.0},
    ) as ex:
        yield ex


def post(ex: Exchange, path: str, body: Any = None, **kw: Any) -> Any:
    return ex.http.post(path, json=body, headers=kw.pop("headers", HEADERS), **kw)


def test_the_key_is_checked_before_the_body_and_never_leaks(exchange: Exchange) -> None:
    assert post(exchange, "/admin/phase", {"phase": "closed"}, headers={}).json() == {
        "detail": "Missing admin key. Include X-Admin-Key header."}
    wrong = post(exchange, "/admin/phase", "not an object", headers={"X-Admin-Key": "nope"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "Invalid admin key"}
    team = exchange.register("not-an-admin")
    assert post(exchange, "/admin/halt", {"instrument_id": "SPY"},
                headers={"X-Admin-Key": team.key}).status_code == 401
    bad = post(exchange, "/admin/halt", {"instrument_id": 7})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "instrument_id"]
    huge = exchange.http.post("/admin/news", content=b"{" + b" " * 20_000 + b"}",
                              headers={**HEADERS, "content-type": "application/json"})
    assert huge.status_code == 413
    doc = exchange.http.get("/openapi.json").json()
    assert doc["paths"]["/admin/halt"]["post"]["security"] == [{"AdminKeyHeader": []}]
    assert ADMIN not in json.dumps(doc)


def test_phase_halt_and_the_kill_switch_reach_the_matcher(exchange: Exchange) -> None:
    team = exchange.register("resting", "hedge_fund")
    for price in (1.00, 1.10):
        assert team.order("buy", 2, price, instrument="SPX_4600_CALL")["success"]
    stream = team.ws()
    stream.next()
    killed = post(exchange, f"/admin/teams/{team.team_id}/kill").json()
    assert killed["success"] and killed["data"] == {"team_id": team.team_id, "cancelled": 2}
    assert stream.private("cancel_ack")["data"]["reason"] == "admin"
    assert team.open_orders() == []
    stream.close()
    missing = post(exchange, "/admin/teams/TEAM_999/kill").json()
    assert missing["error"]["code"] == "TEAM_NOT_FOUND"

    unknown = post(exchange, "/admin/halt", {"instrument_id": "NOPE"}).json()
    assert unknown["success"] is False and unknown["error"]["code"] == "INVALID_INSTRUMENT"
    assert post(exchange, "/admin/halt", {"instrument_id": "SPX_4600_CALL"}).json()["success"]
    halted = team.order("buy", 1, 1.00, instrument="SPX_4600_CALL")
    assert halted["error"]["code"] == "MARKET_CLOSED"
    assert team.order("buy", 1, 1.00, instrument="SPX_4500_CALL")["success"]  # that one only
    assert post(exchange, "/admin/halt", {"instrument_id": "SPX_4600_CALL",
                                          "halted": False}).json()["success"]
    assert team.order("buy", 1, 1.00, instrument="SPX_4600_CALL")["success"]
    bad_phase = post(exchange, "/admin/phase", {"phase": "lunch"}).json()
    assert bad_phase["error"]["code"] == "INVALID_PHASE"
    assert post(exchange, "/admin/phase", {"phase": "closed"}).json()["data"]["phase"] == "closed"
    refused = team.order("buy", 1, 1.00, instrument="SPX_4600_CALL")
    assert refused["error"]["code"] == "MARKET_CLOSED"
    assert post(exchange, "/admin/phase", {"phase": "continuous"}).json()["success"]
    board = exchange.http.get("/admin/leaderboard", headers=HEADERS).json()["leaderboard"]
    assert {"cash", "holdings", "open_orders"} <= set(board[0])


def test_news_regime_and_speed_go_to_the_simulator_and_events(exchange: Exchange) -> None:
    with connect(exchange.ws_base + "/ws/public", close_timeout=2) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first["type"] == "snapshot" and first["data"]["status"]["phase"]
        injected = post(exchange, "/admin/news", {"headline": "Dashboard test headline",
                                                  "direction": "up", "magnitude": 0.01,
                                                  "jump": True}).json()
        assert injected["success"] and injected["data"]["headline"] == "Dashboard test headline"
        while True:  # it reaches every spectator as news
            news = json.loads(ws.recv(timeout=5))["data"].get("news", [])
            if any(n["headline"] == "Dashboard test headline" and n["injected"] for n in news):
                break
    wrong = post(exchange, "/admin/regime", {"regime": "calm"}).json()
    assert wrong["error"]["code"] == "CONTROL_REJECTED"
    assert wrong["error"]["details"]["allowed"] == ["low", "medium", "high"]
    assert post(exchange, "/admin/regime", {"regime": "high"}).json()["success"]
    too_fast = post(exchange, "/admin/speed", {"speed": 1e9}).json()
    assert too_fast["error"]["code"] == "CONTROL_REJECTED"
    assert post(exchange, "/admin/speed", {"speed": 50}).json()["data"]["speed"] == 50
    choices = exchange.http.get("/admin/choices", headers=HEADERS).json()
    assert "Fed announces emergency meeting" in choices["headlines"]
    # an operator's misspelt field is refused, not dropped (the news is not injected)
    assert post(exchange, "/admin/news", {"headline": "x", "magnitud": 0.5}).status_code == 422
    assert post(exchange, "/admin/news", {"headline": "y" * 201}).status_code == 422


def test_the_team_stream_needs_a_key_in_its_first_frame(
        exchange: Exchange, caplog: pytest.LogCaptureFixture) -> None:
    team = exchange.register("watcher")
    for _ in range(3):  # gone before its first frame: it logged an ERROR traceback each time
        with connect(exchange.ws_base + "/ws/team", close_timeout=2):
            pass
    with connect(exchange.ws_base + "/ws/team", close_timeout=2) as ws:
        ws.send(json.dumps({"type": "auth", "api_key": "itg_wrong"}))
        with pytest.raises(Exception, match="1008"):
            ws.recv(timeout=5)
    with connect(exchange.ws_base + "/ws/team", close_timeout=2) as ws:
        ws.send(json.dumps({"type": "auth", "api_key": team.key}))
        message = json.loads(ws.recv(timeout=5))
        assert message["type"] == "team"
        assert message["data"]["team"]["team_id"] == team.team_id
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_without_an_admin_key_the_admin_api_is_off(tmp_path: Path) -> None:
    with running(tmp_path / "data") as ex:
        for path in ("/admin/leaderboard", "/admin/choices"):
            r = ex.http.get(path, headers={"X-Admin-Key": "anything-at-all-16"})
            assert r.status_code == 403 and "admin_key" in r.json()["detail"]
        assert ex.http.post("/admin/halt", json={"instrument_id": "SPY"}).status_code == 403
        team = ex.register("solo")
        wait_for(lambda: any(r["team_id"] == team.team_id for r in ex.http.get(
            "/dashboard/api/leaderboard").json()["leaderboard"]))
        page = ex.http.get("/dashboard")
        assert page.status_code == 200 and "lightweight" not in page.text  # loaded by main.js
        script = ex.http.get("/dashboard/static/vendor/lightweight-charts.standalone."
                             "production.mjs")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_a_control_for_a_service_that_is_not_running_times_out_naming_it(
        tmp_path: Path) -> None:
    with running(tmp_path / "data", gateway={"admin_key": ADMIN, "request_timeout_s": 0.5}
                 ) as ex:  # no simulator
        answer = ex.http.post("/admin/speed", json={"speed": 2}, headers=HEADERS).json()
    assert answer["error"]["code"] == "PROCESSING_TIMEOUT"
    assert answer["error"]["details"] == {"timeout_s": 0.5, "channel": "sim_rpc"}
