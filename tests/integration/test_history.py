"""History endpoints: a team's own trades, orders and P&L, and public market data, served from
the database (read-only) through the real gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from common.dbread import read_only_engine
from services.dbwriter.store import Store
from tests.integration.gw import CALL, Exchange, Team, running


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[Exchange]:
    with running(tmp_path / "data", services=("dbwriter", "matcher", "gateway"),
                 db={"batch_max_ms": 20, "position_snapshot_interval_s": 0.2}) as ex:
        yield ex


def poll(team: Team, path: str, key: str, wanted: int, timeout: float = 10) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = team.get(path)
        assert body["success"], body
        rows: list[Any] = body["data"][key]
        if len(rows) >= wanted:
            return rows
        assert time.monotonic() < deadline, (path, body)
        time.sleep(0.05)


def test_own_history_and_public_market_data(exchange: Exchange) -> None:
    mm1, mm2 = exchange.register("MM1"), exchange.register("MM2")
    sell = mm1.order("sell", 1, 128.50)["order_id"]
    mm2.order("buy", 1, 128.50)
    resting = mm1.order("buy", 2, 100.00)["order_id"]
    mm1.cancel(resting)

    (mine,) = poll(mm1, "/history/trades", "trades", 1)
    (theirs,) = poll(mm2, "/history/trades", "trades", 1)
    assert (mine["side"], mine["price"], mine["fees"], mine["quantity"]) == ("sell", 128.5,
                                                                            0.02, 1)
    assert (theirs["side"], theirs["fees"], theirs["trade_id"]) == ("buy", -0.01,
                                                                    mine["trade_id"])
    orders = {o["order_id"]: o for o in poll(mm1, "/history/orders", "orders", 2)}
    wait_status = time.monotonic() + 10
    while orders[resting]["status"] != "cancelled" and time.monotonic() < wait_status:
        time.sleep(0.05)  # paced: each read counts against the team's request rate
        orders = {o["order_id"]: o for o in poll(mm1, "/history/orders", "orders", 2)}
    assert (orders[sell]["status"], orders[sell]["filled_quantity"]) == ("filled", 1)
    assert orders[resting]["status"] == "cancelled"
    assert all(o["order_id"] not in orders for o in mm2.get("/history/orders")["data"]["orders"])

    (public,) = poll(mm1, f"/market/trades?instrument_id={CALL}", "trades", 1)
    assert public["trade_id"] == mine["trade_id"] and "side" not in public
    assert "TEAM_" not in str(public)
    deadline = time.monotonic() + 10  # a position snapshot from before the fill may come first
    while (points := poll(mm1, "/history/pnl", "points", 1))[-1]["positions"] != {CALL: -1}:
        assert time.monotonic() < deadline, points
        time.sleep(0.05)
    assert points[0]["positions"] in ({}, {CALL: -1})


def test_history_rejects_bad_parameters_and_needs_a_key(exchange: Exchange) -> None:
    mm = exchange.register("MM")
    for query in ("since=yesterday", "until=2026-01-01T00:00:00"):
        body = mm.get(f"/history/trades?{query}")
        assert (body["success"], body["error"]["code"]) == (False, "INVALID_PARAMETERS"), query
    for query in ("limit=0", "limit=5000", "limit=ten", "limit=1&limit=2", "colour=blue"):
        r = exchange.http.get(f"/history/trades?{query}", headers=mm.headers)
        assert r.status_code == 422, query
    r = exchange.http.get("/market/trades?instrument_id=", headers=mm.headers)
    assert r.status_code == 422
    window = mm.get("/history/trades?since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z")
    assert window["success"] and window["data"]["trades"] == []
    # times beyond what int64 nanoseconds hold (1677-2262) are windows, not 500s
    far = mm.get("/history/trades?since=9999-12-31T23:59:59Z")
    assert far["success"] and far["data"]["trades"] == []
    everything = mm.get("/history/orders?since=0001-01-01T00:00:00%2B01:00"
                        "&until=9999-12-31T23:59:59Z")
    assert everything["success"] and everything["data"]["orders"] == []  # MM placed none
    assert exchange.http.get("/history/trades").status_code == 401
    assert exchange.http.get("/market/prices?instrument_id=SPX",
                             headers={"X-API-Key": "itg_wrong"}).status_code == 401


@pytest.mark.parametrize("path", ["/history/trades?limit=0", "/history/pnl?colour=blue",
                                  "/market/trades", "/market/prices?kind=colour",
                                  "/market/trades?instrument_id=SPX&limit=ten"])
def test_the_key_is_checked_before_the_query(exchange: Exchange, path: str) -> None:
    """API.md: auth first. A keyless request learns nothing, not even which parameters exist."""
    mm = exchange.register("MM")
    missing = exchange.http.get(path)
    assert (missing.status_code, missing.json()) == (401, {"detail": "Missing API key. Include "
                                                                      "X-API-Key header."})
    wrong = exchange.http.get(path, headers={"X-API-Key": "itg_wrong"})
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid API key"})
    assert exchange.http.get(path, headers=mm.headers).status_code == 422


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_history_connection_cannot_write(backend: str, tmp_path: Path,
                                             request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path}/itg.db" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    Store(url).close()  # the schema exists
    engine = read_only_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from trades").scalar() == 0
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.exec_driver_sql("delete from trades")
    engine.dispose()
