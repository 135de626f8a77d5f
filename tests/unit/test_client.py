"""The client library's rules without a server: sequence tracking, the rate gate, retry
delays, order ids, bodies and replies. Retries and refusals against a real exchange are in
tests/integration/test_bot_client_failures.py."""

from __future__ import annotations

import asyncio

import pytest

from bots.aclient import AsyncClient
from bots.api import (
    ApiError,
    OrderIds,
    RateGate,
    Retry,
    SeqTracker,
    WsMessage,
    order_body,
    order_reply,
    ws_url,
)
from bots.client import Client


def msg(seq: int, kind: str = "market_data") -> WsMessage:
    return WsMessage(seq=seq, type=kind)


def test_seq_tracker_in_order_duplicates_and_gaps() -> None:
    t = SeqTracker()
    assert t.query() == ""
    assert t.accept(msg(1, "position_snapshot")) == "reset"
    assert [t.accept(msg(s)) for s in (2, 3, 3, 2)] == ["ok", "ok", "dup", "dup"]
    assert t.accept(msg(5)) == "gap" and t.last == 3  # 4 is missing: ask again from 3
    assert t.query() == "&since=3"
    assert t.counters == {"gaps": 1, "duplicates": 2, "resets": 0, "resumes": 0}


def test_seq_tracker_across_reconnections() -> None:
    t = SeqTracker(since=10)
    t.connected()
    assert t.accept(msg(11)) == "ok" and t.counters["resumes"] == 1  # replayed: seamless
    t.connected()
    assert t.accept(msg(12, "position_snapshot")) == "reset"  # could not resume: rebuild
    t.connected()
    assert t.accept(msg(1, "position_snapshot")) == "reset" and t.last == 1  # no resume at all
    t.connected()
    assert t.accept(msg(7)) == "gap"  # neither a continuation nor a fresh start


def test_rate_gate_keeps_a_sliding_second_and_learns_the_limit() -> None:
    gate = RateGate(None, margin_s=0.0)
    assert gate.delay(0.0) == 0.0  # unknown limit: no waiting
    gate.learn(ApiError("RATE_LIMIT_EXCEEDED", details={"limit": 2, "window_s": 1}))
    gate.learn(ApiError("INVALID_PRICE", details={"limit": 1}))  # not a rate answer
    gate.learn(ApiError("RATE_LIMIT_EXCEEDED", details={"limit": 1, "scope": "requests"}))
    assert gate.limit == 2  # the request rate (cancels, reads) is not the order rate
    gate.take(0.0)
    gate.take(0.4)
    assert gate.delay(0.5) == pytest.approx(0.5)
    assert gate.delay(1.0) == 0.0  # the first one has left the window
    gate.take(1.0)
    assert gate.delay(1.2) == pytest.approx(0.2)


def test_rate_gate_keeps_only_the_last_window_while_no_limit_is_known() -> None:
    gate = RateGate(None, margin_s=0.0)
    for i in range(10_000):  # a long game at 100 orders/s, never refused
        gate.take(i / 100)
    assert len(gate.sent) == 100
    gate.learn(ApiError("RATE_LIMIT_EXCEEDED", details={"limit": 50}))
    assert gate.delay(99.995) > 0  # what it kept is enough to obey a limit learnt later


def test_retry_gives_up_on_attempts_or_time() -> None:
    r = Retry(attempts=3, total_s=1.0, base_s=0.1, max_s=0.3)
    assert [r.delay(a, 0.0, 0.0) for a in (1, 2, 3)] == [0.1, 0.2, -1.0]
    assert r.delay(1, 0.0, 0.95) == -1.0  # would end past total_s
    assert r.delay(1, 0.0, 0.0, hint=0.25) == 0.25


@pytest.mark.parametrize("price", [float("nan"), float("inf"), float("-inf")])
def test_a_price_with_no_json_form_is_a_refusal_not_an_exception(price: float) -> None:
    """place() raised ValueError/OverflowError, ending the loop of a bot whose model gave NaN;
    it promises never to raise for a refusal. Nothing is sent (no exchange listens here)."""
    with Client("http://127.0.0.1:9", api_key="itg_x") as client:
        reply = client.place("SPY", "buy", 1, price)
    assert not reply.ok and reply.code == "INVALID_PRICE"

    async def place_async() -> str | None:
        async with AsyncClient("http://127.0.0.1:9", api_key="itg_x") as aclient:
            return (await aclient.place("SPY", "buy", 1, price)).code
    assert asyncio.run(place_async()) == "INVALID_PRICE"


def test_ids_bodies_and_replies() -> None:
    ids = OrderIds()
    a, b = ids.next(), ids.next()
    assert a != b and a.startswith(ids.prefix) and len(a) <= 64
    assert OrderIds().prefix != ids.prefix
    mine = OrderIds("mybot")  # a restarted bot must not resend its old ids
    assert mine.prefix.startswith("mybot.") and mine.prefix != OrderIds("mybot").prefix
    body = order_body("SPY", "buy", 3, 440.1 + 0.2, None, "x-1")
    assert body == {"instrument_id": "SPY", "side": "buy", "quantity": 3, "price": 440.3,
                    "client_order_id": "x-1"}
    # off the tick: sent as asked, for the exchange to refuse, never moved to another price
    assert order_body("SPY", "buy", 1, 25.555, None, "x")["price"] == 25.555
    assert order_body("SPY", "sell", 1, 0.1 + 0.2, "limit", "x")["price"] == 0.3
    original = {"success": True, "request_id": "r", "order_id": "ORD_1", "data": None,
                "error": None, "timestamp": "t"}  # the original server's answer: no data
    reply = order_reply(original, "x-1", 1)
    assert reply.ok and reply.order_id == "ORD_1" and reply.client_order_id == "x-1"
    refused = {"success": False, "order_id": None, "data": None,
               "error": {"code": "MM_POS_LIMIT", "message": "Position exceeds", "details": {}}}
    assert order_reply(refused, "x-2", 1).code == "MM_POS_LIMIT"
    assert ws_url("https://h:1/", "k") == "wss://h:1/ws?api_key=k"
