"""The bot client library where the network or the bot itself fails: answers lost after the
exchange acted, a second stream of the same team, a close during the handshake, a handler
that raises. Real gateway and matcher; lost answers are made by a transport that really sends
the request and then drops (or rewrites) what comes back."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from bots.aclient import AsyncClient
from bots.api import UNKNOWN_OUTCOME, ApiError, Retry, WsMessage
from bots.client import Client
from tests.conftest import wait_for
from tests.integration.gw import Exchange, running


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running(tmp_path_factory.mktemp("bot-failures") / "data") as ex:
        yield ex


class LoseAnswers(httpx.BaseTransport):
    """Every request is really sent; the first answer of the armed kind is then lost (a read
    timeout), and later attempts cannot connect (a gateway restarting)."""

    def __init__(self, rewrite: dict[str, Any] | None = None, then_answer: bool = False) -> None:
        self.real = httpx.HTTPTransport()
        self.rewrite = rewrite  # instead of losing the first answer, replace its body
        self.then_answer = then_answer  # later attempts get through (a brief hiccup)
        self.armed = False
        self.seen = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.armed:
            return self.real.handle_request(request)
        self.seen += 1
        if self.seen > 1 and self.then_answer:
            return self.real.handle_request(request)
        if self.seen > 1:
            raise httpx.ConnectError("gateway restarting", request=request)
        answer = self.real.handle_request(request)
        answer.read()
        if self.rewrite is not None:
            return httpx.Response(200, json=self.rewrite)
        raise httpx.ReadTimeout("answer lost", request=request)


def test_an_order_whose_answer_was_lost_stays_an_unknown_outcome(exchange: Exchange) -> None:
    lossy = LoseAnswers()
    client = Client(exchange.base, http=httpx.Client(transport=lossy),
                    retry=Retry(attempts=3, base_s=0.01))
    try:
        client.register("lost-answer", "hedge_fund")
        lossy.armed = True
        reply = client.place("SPX_4200_PUT", "buy", 5, 0.25)
        assert not reply.ok and reply.error is not None
        assert reply.error.code == UNKNOWN_OUTCOME  # was UNREACHABLE: the last attempt's word
        assert client.counters["unknown_outcomes"] == 1 and lossy.seen == 3
        lossy.armed = False
        assert [o.client_order_id for o in client.open_orders()] == [reply.client_order_id]
    finally:
        client.close()


def test_a_cancel_resent_after_a_lost_answer_does_not_report_a_plain_failure(
        exchange: Exchange) -> None:
    """The first DELETE cancels, its answer is lost; the resend finds no order. That said
    CANCEL_FAILED, as if the order had filled: the cancel's outcome is unknown to the bot."""
    lossy = LoseAnswers(then_answer=True)
    client = Client(exchange.base, http=httpx.Client(transport=lossy),
                    retry=Retry(attempts=3, base_s=0.01))
    try:
        client.register("lost-cancel", "hedge_fund")
        placed = client.place("SPX_4200_PUT", "buy", 5, 0.25)
        assert placed.ok and placed.order_id is not None
        lossy.armed = True
        reply = client.cancel(placed.order_id)
        assert lossy.seen == 2 and reply.attempts == 2
        assert not reply.ok and reply.code == UNKNOWN_OUTCOME
        lossy.armed = False
        assert client.open_orders() == []  # it was the first attempt that cancelled it
        again = client.cancel(placed.order_id)  # no resend: the plain answer
        assert again.code == "CANCEL_FAILED" and again.attempts == 1
    finally:
        client.close()


def test_an_order_sent_again_waits_for_the_rate_gate_each_time(exchange: Exchange) -> None:
    lossy = LoseAnswers(then_answer=True)
    client = Client(exchange.base, http=httpx.Client(transport=lossy),
                    retry=Retry(attempts=3, base_s=0.01))
    try:
        client.register("gated-resend", "hedge_fund")
        client.gate.limit = 1
        lossy.armed = True
        started = time.monotonic()
        reply = client.place("SPX_4200_PUT", "buy", 5, 0.25)
        assert reply.ok and reply.attempts == 2
        assert time.monotonic() - started >= 1.0  # the resend waited for the first to leave
    finally:
        client.close()


def test_a_registration_whose_answer_was_lost_is_not_sent_again(exchange: Exchange) -> None:
    timeout = {"success": False, "request_id": "req_1", "order_id": None, "data": None,
               "error": {"code": "PROCESSING_TIMEOUT", "message": "no answer", "details": {}},
               "timestamp": ""}
    lossy = LoseAnswers(rewrite=timeout)
    client = Client(exchange.base, http=httpx.Client(transport=lossy))
    try:
        lossy.armed = True
        with pytest.raises(ApiError) as refused:
            client.register("slow-register", "hedge_fund")
        assert refused.value.code == UNKNOWN_OUTCOME and lossy.seen == 1  # not resent
    finally:
        client.close()
    again = exchange.http.post("/game/teams/register",
                               json={"team_name": "slow-register", "role": "hedge_fund"})
    assert again.json()["error"]["code"] == "DUPLICATE_TEAM_NAME"  # the first one did register


def test_a_stream_replaced_by_a_newer_one_of_its_team_stops(exchange: Exchange) -> None:
    team = exchange.register("two-streams")
    client = Client(exchange.base, team.key)
    older = client.stream()
    try:
        assert older.wait_connected(5)
        newer = client.stream()
        wait_for(lambda: older.replaced, 5, "the older stream to stop")
        time.sleep(0.5)  # they used to take turns several times a second
        assert older.reconnects == 0 and not older.connected.is_set()
        assert newer.connected.is_set() and newer.reconnects == 0
        assert newer.get(5) is not None  # its position_snapshot
        newer.close()
    finally:
        older.close()
        client.close()


def test_a_stream_closed_during_its_handshake_leaves_no_reader(exchange: Exchange) -> None:
    team = exchange.register("quick-close")
    client = Client(exchange.base, team.key)
    try:
        for _ in range(3):
            started = time.monotonic()
            client.stream().close()
            assert time.monotonic() - started < 2
        assert not [t for t in threading.enumerate() if t.name == "itg-bot-ws"]
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["plain", "async def"])
def test_an_async_stream_handler_that_raises_does_not_end_the_stream(
        exchange: Exchange, kind: str) -> None:
    """Either kind of handler sees every message in order; an error in it is counted. An
    `async def` one was never awaited: every message was silently dropped."""
    team = exchange.register(f"buggy-handler-{kind[:5]}")

    async def run() -> list[str]:
        seen: list[str] = []

        def plain(msg: WsMessage) -> None:
            seen.append(msg.type)
            if msg.type == "position_snapshot":
                raise RuntimeError("a bug in the bot")

        async def awaited(msg: WsMessage) -> None:
            await asyncio.sleep(0)  # really suspends, as a handler doing I/O would
            plain(msg)

        async with AsyncClient(exchange.base, team.key) as client:
            stream = client.stream(plain if kind == "plain" else awaited)
            assert await stream.wait_connected(5)
            # orders placed before the snapshot is taken are in it, their acks not sent: the
            # handshake comes first, so wait for the snapshot itself
            deadline = time.monotonic() + 5
            while not seen and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            for price in (1.00, 1.01):
                assert (await client.place("SPX_4200_PUT", "buy", 1, price)).ok
            deadline = time.monotonic() + 5
            while seen.count("new_order_ack") < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert stream.handler_errors == 1 and stream.reconnects == 0
        return seen

    seen = asyncio.run(run())
    assert seen[0] == "position_snapshot" and seen.count("new_order_ack") == 2


def test_closing_a_client_closes_the_streams_it_started(exchange: Exchange) -> None:
    """A stream left running after its client closed kept reconnecting, and could take the
    team's connection from the bot's live stream."""
    team = exchange.register("closed-client")
    hub = exchange.gateway.gateway.hub
    with Client(exchange.base, team.key) as client:
        stream = client.stream()
        assert stream.wait_connected(5)
        assert team.team_id in hub.live
    assert not stream.connected.is_set()
    assert not [t for t in threading.enumerate() if t.name == "itg-bot-ws"]
    wait_for(lambda: team.team_id not in hub.live, 5, "the gateway to see the stream go")

    async def run() -> None:
        async with AsyncClient(exchange.base, team.key) as aclient:
            astream = aclient.stream()
            assert await astream.wait_connected(5)
        assert not astream.connected.is_set()
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no reader task left

    asyncio.run(run())
    wait_for(lambda: team.team_id not in hub.live, 5, "the gateway to see the stream go")
