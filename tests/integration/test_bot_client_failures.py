"""The bot client library where the network or the bot itself fails: answers lost after the
exchange acted, a second stream of the same team, a close during the handshake, a handler
that raises; the client's retries, resends and rate gate against the exchange's real answers
and refusals. Real gateway and matcher; faults are made by a transport that really sends the
request and then drops (or rewrites) what comes back, or fails to connect."""

from __future__ import annotations

import asyncio
import json
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

# A role the client has no limits for (not in bots.api.ROLE_LIMITS): it learns them from the
# exchange's refusals. 3 orders/s; 4 contracts per option, resting orders counted.
SLOW = {"maker_fee_cents": 2, "taker_fee_cents": -1, "position_limit": 4,
        "total_position_limit": 200, "max_order_size": 10, "max_orders_per_s": 3,
        "position_limit_code": "MM_POS_LIMIT"}
PROCESSING_TIMEOUT = {"success": False, "request_id": "req_1", "order_id": None, "data": None,
                      "error": {"code": "PROCESSING_TIMEOUT", "message": "no answer",
                                "details": {}}, "timestamp": ""}
FAST = Retry(base_s=0.001, max_s=0.002)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running(tmp_path_factory.mktemp("bot-failures") / "data",
                 game={"roles": {"slow_maker": SLOW}}) as ex:
        yield ex


PASS, REFUSED, LOST, TIMEOUT = "pass", "refused", "lost", "timeout"


class Faults(httpx.BaseTransport):
    """A real transport with a fault scripted for each request: a request takes the next step
    of the script, and `then` once the script has run out. PASS: sent and answered for real.
    REFUSED: cannot connect, nothing is sent (a gateway restarting). LOST: really sent, then
    its answer is lost (a read timeout). TIMEOUT: really sent, then its answer is replaced by a
    PROCESSING_TIMEOUT envelope (what the gateway says when the matcher is slow to answer)."""

    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.script()

    def script(self, *steps: str, then: str = PASS) -> None:
        """Start a script; what is recorded is from here on."""
        self.steps, self.then = list(steps), then
        self.attempts: list[Any] = []  # every request's JSON body (None: none), sent or not
        self.sent: list[Any] = []  # those that really reached the exchange
        self.answers: list[Any] = []  # the exchange's real answers, lost or replaced ones too

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self.steps.pop(0) if self.steps else self.then
        body = json.loads(request.read() or b"null")
        self.attempts.append(body)
        if step == REFUSED:
            raise httpx.ConnectError("gateway restarting", request=request)
        self.sent.append(body)
        answer = self.real.handle_request(request)
        answer.read()
        self.answers.append(json.loads(answer.content or b"null"))
        if step == LOST:
            raise httpx.ReadTimeout("answer lost", request=request)
        if step == TIMEOUT:
            return httpx.Response(200, json=PROCESSING_TIMEOUT)
        return answer


def test_an_order_whose_answer_was_lost_stays_an_unknown_outcome(exchange: Exchange) -> None:
    faults = Faults()
    client = Client(exchange.base, http=httpx.Client(transport=faults),
                    retry=Retry(attempts=3, base_s=0.01))
    try:
        client.register("lost-answer", "hedge_fund")
        faults.script(LOST, then=REFUSED)
        reply = client.place("SPX_4200_PUT", "buy", 5, 0.25)
        assert not reply.ok and reply.error is not None
        assert reply.error.code == UNKNOWN_OUTCOME  # was UNREACHABLE: the last attempt's word
        assert client.counters["unknown_outcomes"] == 1 and len(faults.attempts) == 3
        faults.script()
        assert [o.client_order_id for o in client.open_orders()] == [reply.client_order_id]
    finally:
        client.close()


def test_a_cancel_resent_after_a_lost_answer_does_not_report_a_plain_failure(
        exchange: Exchange) -> None:
    """The first DELETE cancels, its answer is lost; the resend finds no order. That said
    CANCEL_FAILED, as if the order had filled: the cancel's outcome is unknown to the bot."""
    faults = Faults()
    client = Client(exchange.base, http=httpx.Client(transport=faults),
                    retry=Retry(attempts=3, base_s=0.01))
    try:
        client.register("lost-cancel", "hedge_fund")
        placed = client.place("SPX_4200_PUT", "buy", 5, 0.25)
        assert placed.ok and placed.order_id is not None
        faults.script(LOST)
        reply = client.cancel(placed.order_id)
        assert len(faults.attempts) == 2 and reply.attempts == 2
        assert not reply.ok and reply.code == UNKNOWN_OUTCOME
        assert client.open_orders() == []  # it was the first attempt that cancelled it
        again = client.cancel(placed.order_id)  # no resend: the plain answer
        assert again.code == "CANCEL_FAILED" and again.attempts == 1
    finally:
        client.close()


def test_an_order_sent_again_waits_for_the_rate_gate_each_time(exchange: Exchange) -> None:
    faults = Faults()
    client = Client(exchange.base, http=httpx.Client(transport=faults),
                    retry=Retry(attempts=3, base_s=0.01))
    try:
        client.register("gated-resend", "hedge_fund")
        client.gate.limit = 1
        faults.script(LOST)
        started = time.monotonic()
        reply = client.place("SPX_4200_PUT", "buy", 5, 0.25)
        assert reply.ok and reply.attempts == 2
        assert time.monotonic() - started >= 1.0  # the resend waited for the first to leave
    finally:
        client.close()


def test_a_registration_whose_answer_was_lost_is_not_sent_again(exchange: Exchange) -> None:
    faults = Faults()
    client = Client(exchange.base, http=httpx.Client(transport=faults))
    try:
        faults.script(TIMEOUT, then=REFUSED)
        with pytest.raises(ApiError) as refused:
            client.register("slow-register", "hedge_fund")
        assert refused.value.code == UNKNOWN_OUTCOME and len(faults.attempts) == 1  # not resent
    finally:
        client.close()
    again = exchange.http.post("/game/teams/register",
                               json={"team_name": "slow-register", "role": "hedge_fund"})
    assert again.json()["error"]["code"] == "DUPLICATE_TEAM_NAME"  # the first one did register


def test_an_order_is_resent_only_with_the_same_client_order_id(exchange: Exchange) -> None:
    """Not sent, answer lost, PROCESSING_TIMEOUT, answered: four attempts of one body, which the
    exchange takes as one order (a repeat of a client_order_id gets the original answer)."""
    faults = Faults()
    client = Client(exchange.base, http=httpx.Client(transport=faults), retry=FAST)
    try:
        client.register("resent-order", "hedge_fund")
        faults.script(REFUSED, LOST, TIMEOUT)
        r = client.place("SPX_4500_CALL", "buy", 1, 1.0)
        assert r.ok and r.attempts == 4 and len(faults.sent) == 3
        bodies = faults.attempts
        assert len({b["client_order_id"] for b in bodies}) == 1 == len(
            {json.dumps(b) for b in bodies})
        assert {a["order_id"] for a in faults.answers} == {r.order_id}  # the same order
        faults.script()
        orders = client.open_orders()
        assert [(o.order_id, o.client_order_id, o.remaining_quantity) for o in orders] == [
            (r.order_id, r.client_order_id, 1)]
    finally:
        client.close()


def test_rate_limit_is_waited_out_and_refusals_are_final(exchange: Exchange) -> None:
    """The exchange's own refusals: RATE_LIMIT_EXCEEDED is waited out, resent once and teaches
    the gate the limit; a position-limit refusal and a 422 are final, sent once each."""
    faults = Faults()
    client = Client(exchange.base, http=httpx.Client(transport=faults), retry=FAST)
    try:
        client.register("rate-limited", "slow_maker")
        assert client.gate.limit is None  # a role the client has no limits for
        faults.script()
        placed = [client.place("SPX_4500_CALL", "buy", 1, 0.05) for _ in range(4)]
        assert [p.ok for p in placed] == [True] * 4
        assert [p.attempts for p in placed] == [1, 1, 1, 2]  # the 4th: refused, then resent
        assert faults.answers[3]["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert faults.sent[3] == faults.sent[4]  # resent as it was
        assert client.gate.limit == 3 and client.counters["rate_limited"] == 1
        limit = client.place("SPX_4500_CALL", "buy", 1, 0.05)
        assert limit.code == "MM_POS_LIMIT" and limit.error is not None
        assert limit.error.details["limit"] == 4 and limit.attempts == 1
        schema = client.place("SPX_4500_CALL", "buy", 1, 0.05, client_order_id="x" * 65)
        assert schema.code == "VALIDATION_ERROR" and schema.error is not None
        assert schema.error.status == 422 and "client_order_id" in schema.error.message
        coids = [b["client_order_id"] for b in faults.sent]
        assert len(coids) == 7  # neither refusal was sent twice
        assert coids.count(limit.client_order_id) == 1 == coids.count("x" * 65)
        assert client.counters["rate_limited"] == 1  # the gate kept every later one under it
        faults.script()
        assert sorted(o.client_order_id or "" for o in client.open_orders()) == sorted(
            p.client_order_id or "" for p in placed)
    finally:
        client.close()


def test_gives_up_with_an_unknown_outcome_and_never_resends_a_registration(
        exchange: Exchange) -> None:
    faults = Faults()
    client = Client(exchange.base, http=httpx.Client(transport=faults),
                    retry=Retry(attempts=2, base_s=0.001))
    try:
        client.register("unknown-outcome", "hedge_fund")
        faults.script(LOST, LOST)  # then answered: a third attempt would go through
        r = client.place("SPX_4500_CALL", "buy", 1, 1.0)
        assert r.code == UNKNOWN_OUTCOME and r.attempts == 2 and len(faults.sent) == 2
        assert client.counters["unknown_outcomes"] == 1
        faults.script()
        assert [o.client_order_id for o in client.open_orders()] == [r.client_order_id]
        faults.script(LOST)  # a resend would be answered, DUPLICATE_TEAM_NAME
        with pytest.raises(ApiError) as err:
            client.register("unknown-register", "hedge_fund")
        assert err.value.code == UNKNOWN_OUTCOME and len(faults.attempts) == 1
    finally:
        client.close()
    again = exchange.http.post("/game/teams/register",
                               json={"team_name": "unknown-register", "role": "hedge_fund"})
    assert again.json()["error"]["code"] == "DUPLICATE_TEAM_NAME"  # the lost one registered


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
