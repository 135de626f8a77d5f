"""The bot API end to end: real uvicorn, real HTTP and WebSocket clients, real matcher."""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from common.messages import NewOrder, encode
from common.transport import make_socket
from tests.conftest import wait_for
from tests.integration.gw import CALL, Exchange, Team, running


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    with running(tmp_path_factory.mktemp("gw") / "data") as ex:
        yield ex


@pytest.fixture
def mm(exchange: Exchange, request: pytest.FixtureRequest) -> tuple[Team, Team]:
    name = request.node.name[:40]
    return exchange.register(f"{name}-1"), exchange.register(f"{name}-2")


def error(reply: dict[str, Any]) -> str:
    assert reply["success"] is False and reply["data"] is None, reply
    assert set(reply) == {"success", "request_id", "order_id", "data", "error", "timestamp"}
    assert reply["error"]["message"] and isinstance(reply["error"]["details"], dict)
    return reply["error"]["code"]  # type: ignore[no-any-return]


def test_canonical_session(exchange: Exchange, mm: tuple[Team, Team]) -> None:
    """The original's session: MM1 sells 1 @128.50, MM2 buys it; both sides are told."""
    mm1, mm2 = mm
    ws1, ws2 = mm1.ws(), mm2.ws()
    for ws in (ws1, ws2):
        first = ws.next()
        assert (first["seq"], first["type"], first["data"]) == (
            1, "position_snapshot", {"positions": {}, "cash": 0, "fees": 0})
    sell = mm1.order("sell", 1, 128.50, request_id="canon-1", client_order_id="s1")
    assert sell["success"] and sell["request_id"] == "canon-1" and sell["order_id"]
    assert sell["data"]["status"] == "new"
    buy = mm2.order("buy", 1, 128.50)
    assert buy["request_id"].startswith("req_")
    assert buy["data"] == {"order_id": buy["order_id"], "client_order_id": None,
                           "status": "filled", "filled_quantity": 1, "remaining_quantity": 0,
                           "average_price": 128.5}
    book = mm1.get(f"/exchange/orderbook/{CALL}")["data"]
    assert (book["bids"], book["asks"]) == ([], [])
    assert mm1.positions() == {CALL: -1} and mm2.positions() == {CALL: 1}
    ack = ws1.private("new_order_ack")["data"]
    assert ack == {"order_id": sell["order_id"], "client_order_id": "s1", "instrument_id": CALL,
                   "side": "sell", "quantity": 1, "order_type": "limit", "price": 128.5,
                   "status": "new"}
    maker = ws1.private("execution_report")["data"]
    taker = ws2.private("execution_report")["data"]
    assert maker["trade_id"] == taker["trade_id"]
    assert (maker["liquidity_type"], maker["fees"], maker["side"]) == ("maker", 0.02, "sell")
    assert (taker["liquidity_type"], taker["fees"], taker["side"]) == ("taker", -0.01, "buy")
    for report in (maker, taker):
        assert (report["executed_quantity"], report["executed_price"],
                report["remaining_quantity"], report["order_status"]) == (1, 128.5, 0, "filled")
    quote = ws2.until(lambda m: m["type"] == "market_data" and m["data"]["last"] is not None)
    assert quote["data"] == {"instrument_id": CALL, "bid": None, "ask": None, "last": 128.5,
                             "bid_size": 0, "ask_size": 0}
    ws1.close()
    ws2.close()


def test_partial_fill_then_cancel_keeps_the_filled_position(
    exchange: Exchange, mm: tuple[Team, Team]
) -> None:
    mm1, mm2 = mm
    ws1 = mm1.ws()
    ws1.next()
    rest = mm1.order("buy", 10, 5.00, instrument="SPX_4400_PUT")
    assert mm2.order("sell", 4, 5.00, instrument="SPX_4400_PUT")["data"]["status"] == "filled"
    [resting] = mm1.open_orders()
    assert (resting["order_id"], resting["status"], resting["original_quantity"],
            resting["filled_quantity"], resting["remaining_quantity"], resting["price"]) == (
        rest["order_id"], "partially_filled", 10, 4, 6, 5.0)
    book = mm2.get("/exchange/orderbook/SPX_4400_PUT")["data"]
    assert book["bids"] == [{"price": 5.0, "quantity": 6}] and book["asks"] == []
    cancelled = mm1.cancel(rest["order_id"])
    assert cancelled["success"] and cancelled["order_id"] == rest["order_id"]
    assert cancelled["data"]["status"] == "cancelled"
    ack = ws1.private("cancel_ack")["data"]
    assert (ack["cancelled_quantity"], ack["reason"], ack["status"]) == (
        6, "user_requested", "cancelled")
    assert mm1.positions() == {"SPX_4400_PUT": 4} and mm2.positions() == {"SPX_4400_PUT": -4}
    assert mm1.open_orders() == []
    ws1.close()


def test_cancel_of_filled_unknown_or_foreign_order_fails_alike(
    exchange: Exchange, mm: tuple[Team, Team]
) -> None:
    mm1, mm2 = mm
    filled = mm1.order("sell", 1, 7.00, instrument="SPX_4300_CALL")["order_id"]
    mm2.order("buy", 1, 7.00, instrument="SPX_4300_CALL")
    foreign = mm2.order("buy", 1, 1.00, instrument="SPX_4300_CALL")["order_id"]
    cancelled = mm1.order("buy", 1, 1.50, instrument="SPX_4300_CALL")["order_id"]
    assert mm1.cancel(cancelled)["success"]
    answers = [mm1.cancel(oid) for oid in (filled, "ORD_99999999", foreign, cancelled, "x" * 300)]
    for reply in answers:
        assert error(reply) == "CANCEL_FAILED"
        assert reply["error"]["message"] == "Cancel failed: Order not found"
    assert [o["order_id"] for o in mm2.open_orders()] == [foreign]  # untouched


def test_market_maker_position_limit_counts_resting_orders(
    exchange: Exchange, mm: tuple[Team, Team]
) -> None:
    mm1, _ = mm
    assert mm1.order("sell", 30, 50.00, instrument="SPY_440_CALL")["success"]
    assert mm1.order("sell", 20, 51.00, instrument="SPY_440_CALL")["success"]
    over = mm1.order("sell", 1, 52.00, instrument="SPY_440_CALL")
    assert error(over) == "MM_POS_LIMIT"
    assert over["error"]["message"].startswith("Position exceeds")
    details = over["error"]["details"]
    assert (details["limit"], details["open_sell"], details["worst_case_after"]) == (50, 50, 51)
    assert mm1.order("buy", 50, 1.00, instrument="SPY_440_CALL")["success"]  # other side is free
    assert len(mm1.open_orders()) == 3


@pytest.mark.parametrize(("body", "code"), [
    ({"instrument_id": "NOPE", "side": "buy", "quantity": 1, "price": 1.0}, "INVALID_INSTRUMENT"),
    ({"instrument_id": CALL, "side": "hold", "quantity": 1, "price": 1.0}, "INVALID_SIDE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "order_type": "stop", "price": 1.0},
     "INVALID_ORDER_TYPE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "order_type": "", "price": 1.0},
     "INVALID_ORDER_TYPE"),  # it was taken for an absent type: a limit order
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "order_type": "limit"},
     "MISSING_PRICE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 0, "price": 1.0}, "INVALID_QUANTITY"),
    ({"instrument_id": CALL, "side": "buy", "quantity": -3, "price": 1.0}, "INVALID_QUANTITY"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 10**30, "price": 1.0},
     "INVALID_QUANTITY"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "price": 1.005}, "INVALID_PRICE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "price": -1.0}, "INVALID_PRICE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "price": 0}, "INVALID_PRICE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "price": 1e300}, "INVALID_PRICE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "price": 1.7e308}, "INVALID_PRICE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "price": 0.001}, "INVALID_PRICE"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1}, "NO_LIQUIDITY"),
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "order_type": "market",
      "price": -5}, "INVALID_PRICE"),  # a market order's price is checked, not ignored
    ({"instrument_id": CALL, "side": "buy", "quantity": 1, "order_type": "market",
      "price": 12.345}, "INVALID_PRICE"),
])
def test_business_rejects(exchange: Exchange, body: dict[str, Any], code: str) -> None:
    team = exchange.register(f"rej-{code}-{abs(hash(str(body))) % 10**6}")
    r = exchange.http.post("/exchange/orders", json={**body, "request_id": "r-1"},
                           headers=team.headers)
    assert r.status_code == 200
    reply = r.json()
    assert error(reply) == code and reply["request_id"] == "r-1"
    assert reply["error"]["details"], "every reject says what was wrong"
    assert team.open_orders() == [] and team.positions() == {}


@pytest.mark.parametrize("raw", [
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1.0, "price": 1}',
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": "1", "price": 1}',
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": true, "price": 1}',
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1, "price": "1.00"}',
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1, "price": NaN}',
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1, "price": Infinity}',
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1, "price": 1e999}',
    # control characters in stored text (PostgreSQL refuses NUL): never past the schema
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1, "price": 1, '
    b'"client_order_id": "a\\u0000b"}',
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1, "price": false}',
    b'{"instrument_id": "' + b"X" * 65 + b'", "side": "buy", "quantity": 1, "price": 1}',
    b'{"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1, "client_order_id": 7}',
    b'{"side": "buy", "quantity": 1, "price": 1}',
    b"[1, 2]",
    b"{not json",
    b"",
])
def test_schema_failures_are_422_and_change_nothing(exchange: Exchange, raw: bytes) -> None:
    team = exchange.register(f"bad-{abs(hash(raw)) % 10**8}")
    r = exchange.http.post("/exchange/orders", content=raw,
                           headers={**team.headers, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail and all(d["loc"][0] == "body" and d["msg"] for d in detail)
    assert team.open_orders() == []


def test_body_size_limit_and_auth_comes_first(exchange: Exchange) -> None:
    team = exchange.register("big-body")
    big = b'{"instrument_id": "' + b"A" * 20_000 + b'"}'
    r = exchange.http.post("/exchange/orders", content=big, headers=team.headers)
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert exchange.http.post("/exchange/orders", content=big).status_code == 401
    assert exchange.http.post("/exchange/orders", content=b"{bad").json() == {
        "detail": "Missing API key. Include X-API-Key header."}
    r = exchange.http.post("/game/teams/register", content=big)
    assert r.status_code == 413


def test_registration_rules(exchange: Exchange) -> None:
    def register(body: dict[str, Any]) -> Any:
        return exchange.http.post("/game/teams/register", json=body)

    first = register({"team_name": "Unique Team", "role": "hedge_fund"}).json()
    assert first["data"]["team_id"].startswith("TEAM_") and first["data"]["role"] == "hedge_fund"
    assert first["data"]["api_key"].startswith("itg_") and len(first["data"]["api_key"]) > 40
    assert error(register({"team_name": "unique team", "role": "retail"}).json()) == (
        "DUPLICATE_TEAM_NAME")
    assert error(register({"team_name": "x", "role": "wizard"}).json()) == "UNSUPPORTED_ROLE"
    assert error(register({"team_name": "y", "role": "house"}).json()) == "UNSUPPORTED_ROLE"
    assert register({"team_name": "", "role": "retail"}).status_code == 422
    assert register({"team_name": "z" * 201, "role": "retail"}).status_code == 422
    assert error(register({"team_name": "z" * 51, "role": "retail"}).json()) == (
        "INVALID_TEAM_NAME")
    # counted once normalised: 30 letters with combining accents (60 code points) are 30
    accented = register({"team_name": "e\u0301" * 30, "role": "retail"}).json()
    assert accented["data"]["team_name"] == "\u00e9" * 30
    padded = register({"team_name": "   " + "p" * 49, "role": "retail"}).json()
    assert padded["data"]["team_name"] == "p" * 49
    assert register({"team_name": "nul\u0000name", "role": "retail"}).status_code == 422
    assert register({"team_name": "ok", "role": 3}).status_code == 422
    # names that look like a taken one are the same name: spaces, full-width letters, case
    for lookalike in ("Unique Team ", " UNIQUE TEAM", "\uff35nique Team"):
        assert error(register({"team_name": lookalike, "role": "retail"}).json()) == (
            "DUPLICATE_TEAM_NAME"), lookalike
    for invisible in ("Unique\u200bTeam", "Unique\u2028Team", "\u00ad", "   ", "\u0097",
                      "\ufdfa" * 3):  # the last: 54 characters once normalised
        assert error(register({"team_name": invisible, "role": "retail"}).json()) == (
            "INVALID_TEAM_NAME"), invisible
    trimmed = register({"team_name": "  \uff2d\uff2d\uff11 ", "role": "retail"}).json()
    assert trimmed["data"]["team_name"] == "MM1"
    echoed = register({"team_name": "Echo", "role": "retail", "request_id": "mine-1"}).json()
    assert echoed["success"] and echoed["request_id"] == "mine-1"
    again = register({"team_name": "echo", "role": "retail", "request_id": "mine-2"}).json()
    assert error(again) == "DUPLICATE_TEAM_NAME" and again["request_id"] == "mine-2"
    key = echoed["data"]["api_key"]
    gateway = http.client.HTTPConnection("127.0.0.1", exchange.gateway.port, timeout=10)
    for padded in (f"{key}  ", f"{key}\t"):  # HTTP's optional whitespace is not the key
        gateway.request("GET", "/positions", headers={"X-API-Key": padded})  # httpx refuses
        r = gateway.getresponse()
        assert r.status == 200 and json.loads(r.read())["success"]
    gateway.close()


def test_market_order_fills_what_it_can_and_rate_limit_answers(
    exchange: Exchange, mm: tuple[Team, Team]
) -> None:
    mm1, mm2 = mm
    mm1.order("sell", 3, 2.00, instrument="SPY_430_PUT")
    market = mm2.order("buy", 5, instrument="SPY_430_PUT")
    assert market["data"]["status"] == "cancelled" and market["data"]["filled_quantity"] == 3
    codes = [mm2.order("buy", 1, 0.01, instrument="SPY_420_PUT") for _ in range(12)]
    limited = [r for r in codes if not r["success"]]
    assert limited and all(error(r) == "RATE_LIMIT_EXCEEDED" for r in limited)
    details = limited[0]["error"]["details"]
    assert details["limit"] == 10 and details["window_s"] == 1 and details["current"] >= 9


def test_health_and_unknown_routes(exchange: Exchange) -> None:
    health = exchange.http.get("/").json()
    assert health["status"] == "ok" and health["services"]["matcher"]["alive"]
    assert health["services"]["gateway"]["synced"]
    assert exchange.http.get("/nope").status_code == 404
    doc = exchange.http.get("/openapi.json").json()
    assert {"/exchange/orders", "/exchange/orderbook/{instrument_id}", "/positions"} <= set(
        doc["paths"])
    assert exchange.http.get("/docs").status_code == 200
    cors = exchange.http.options("/exchange/orders", headers={
        "Origin": "http://x.example", "Access-Control-Request-Method": "POST"})
    assert cors.headers["access-control-allow-origin"] in ("*", "http://x.example")


def test_the_book_answers_at_once_after_an_idempotent_retry(exchange: Exchange) -> None:
    """Book reads wait for market data up to the newest answer given; a retried order's
    answer is as old as the original, so nothing is waited for (it stalled 5 s)."""
    team = exchange.register("retry-then-book")
    first = team.order("buy", 1, 1.11, client_order_id="once")
    assert team.order("buy", 1, 1.11, client_order_id="once")["order_id"] == first["order_id"]
    start = time.monotonic()
    book = team.get(f"/exchange/orderbook/{CALL}")
    assert time.monotonic() - start < 1.0
    assert {"price": 1.11, "quantity": 1} in book["data"]["bids"]


def test_an_empty_client_order_id_is_none_and_a_reused_one_is_refused(exchange: Exchange) -> None:
    team = exchange.register("coid-reuse")
    one, two = (team.order("buy", 1, 1.21, client_order_id="") for _ in range(2))
    assert one["success"] and two["success"] and one["order_id"] != two["order_id"]
    assert one["data"]["client_order_id"] is None
    first = team.order("buy", 1, 1.22, client_order_id="mine-1")
    reused = team.order("sell", 1, 9.99, client_order_id="mine-1")
    assert error(reused) == "DUPLICATE_CLIENT_ORDER_ID"
    assert reused["error"]["details"]["order_id"] == first["order_id"]
    assert len(team.open_orders()) == 3


@contextlib.contextmanager
def slow_market_data(exchange: Exchange, delay_s: float, apart_s: float) -> Iterator[None]:
    """The gateway applies each md frame `delay_s` late and `apart_s` after the one before, in
    order: a lagging md feed that splits a command's frames (a trade print, then its book
    delta) across loop passes."""
    gw = exchange.gateway.gateway
    apply, late = gw.mirror.feed, collections.deque[tuple[bytes, bytes]]()
    due = 0.0

    def feed(topic: bytes, payload: bytes) -> None:
        nonlocal due
        late.append((topic, payload))
        due = max(gw.loop.time() + delay_s, due + apart_s)
        gw.loop.call_at(due, lambda: apply(*late.popleft()))  # the oldest: order kept

    gw.mirror.feed = feed  # type: ignore[method-assign]
    try:
        yield
    finally:
        gw.mirror.feed = apply  # type: ignore[method-assign]
        wait_for(lambda: not late, 5, "the frames still held applied")


def test_a_fill_told_to_anyone_is_in_every_later_book_read(
        exchange: Exchange, mm: tuple[Team, Team]) -> None:
    """The maker, told of the fill by the taker's answer or by its own execution report, read
    its order still resting: reads waited only for the reader's own last order (a CI flake)."""
    mm1, mm2 = mm
    ws1 = mm1.ws()
    ws1.next()
    config = exchange.cluster.config
    direct = make_socket(exchange.cluster.ctx, config, "commands", bind=False)
    try:
        with slow_market_data(exchange, 0.2, 0.05):
            mm1.order("sell", 1, 127.25)
            assert mm2.order("buy", 1, 127.25)["data"]["status"] == "filled"
            assert {"price": 127.25, "quantity": 1} not in book_asks(mm1)
            # a taker this gateway does not answer (as the retail flow): only the report tells
            mm1.order("sell", 1, 127.5)
            direct.send_multipart([b"cmd", encode(NewOrder(
                team_id=mm2.team_id, instrument_id=CALL, side="buy", quantity=1, price=12750))])
            ws1.until(lambda m: m["type"] == "execution_report"
                      and m["data"]["executed_price"] == 127.5)
            assert {"price": 127.5, "quantity": 1} not in book_asks(mm1)
    finally:
        direct.close()
        ws1.close()


def book_asks(team: Team) -> list[dict[str, Any]]:
    return team.get(f"/exchange/orderbook/{CALL}")["data"]["asks"]  # type: ignore[no-any-return]
