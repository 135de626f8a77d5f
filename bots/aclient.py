"""The asyncio twin of `bots.client`: the same calls, awaited, and a WebSocket reader task.

    async with AsyncClient("http://127.0.0.1:8000") as client:   # closes its streams too
        await client.register("my-team", "hedge_fund")
        stream = client.stream()                 # or client.stream(handler=on_message)
        reply = await client.place("SPX", "buy", 10, 4400.25)
        msg = await stream.get(timeout=1.0)

A handler may be a plain function or an `async def` one (awaited before the next message).

Same guarantees: generated client_order_ids, resends with the same id only, the team's rate
limit kept and RATE_LIMIT_EXCEEDED waited out, and a stream that resumes with `since=N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bots.api import (
    RATE_LIMITED,
    RETRYABLE_CODES,
    ROLE_LIMITS,
    UNKNOWN_OUTCOME,
    UNREACHABLE,
    ApiError,
    Attempts,
    OpenOrder,
    OrderBook,
    OrderIds,
    OrderReply,
    RateGate,
    Retry,
    SeqTracker,
    Team,
    WsMessage,
    cancel_reply,
    convert,
    decode_ws,
    envelope_error,
    http_error,
    maybe_sent,
    order_body,
    place_reply,
    replaced,
    retry_hint,
    ws_url,
)
from bots.client import MAYBE_SENT, NOT_SENT

log = logging.getLogger(__name__)

Handler = Callable[[WsMessage], Awaitable[None] | None]


class AsyncHttp(Protocol):
    """What the client needs of its HTTP client: httpx.AsyncClient, or a leaner one."""

    async def request(self, method: str, url: str, *, json: Any = ...,
                      headers: Any = ...) -> Any: ...

    async def aclose(self) -> None: ...


class AsyncClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 role: str | None = None, timeout: float = 10.0, retry: Retry | None = None,
                 id_prefix: str | None = None, http: AsyncHttp | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.team: Team | None = None
        self.retry = retry or Retry()
        self.ids = OrderIds(id_prefix)
        limits = ROLE_LIMITS.get(role or "")
        self.gate = RateGate(limits.orders_per_s if limits else None)
        self.http: AsyncHttp = http or httpx.AsyncClient(timeout=timeout)
        self.counters = {"retries": 0, "rate_limited": 0, "unknown_outcomes": 0}
        self._streams: list[AsyncStream] = []  # closed with the client, see stream()

    async def aclose(self) -> None:
        """Close the HTTP client and every stream this client started."""
        for stream in self._streams:
            await stream.close()
        self._streams.clear()
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, body: dict[str, Any] | None,
                    auth: bool) -> dict[str, Any]:
        headers = {"X-API-Key": self.api_key} if auth and self.api_key else None
        r = await self.http.request(method, self.base_url + path, json=body, headers=headers)
        try:
            parsed = r.json()
        except ValueError:
            parsed = r.text
        if r.status_code != 200 or not isinstance(parsed, dict):
            raise http_error(r.status_code, parsed)
        return parsed

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                    auth: bool = True, resend: bool = True, gated: bool = False
                    ) -> tuple[dict[str, Any] | None, Attempts]:
        started, tried = time.monotonic(), Attempts(resend)
        while True:
            tried.count += 1
            hint = None
            if gated:  # every attempt: a resend counts against the exchange's rate too
                await self._wait_gate()
            try:
                answer = await self._send(method, path, body, auth)
                error = envelope_error(answer)
                if error is None or error.code not in RETRYABLE_CODES | {RATE_LIMITED}:
                    return answer, tried
                if error.code == RATE_LIMITED:
                    self.gate.learn(error)
                    self.counters["rate_limited"] += 1
                    if not self.retry.on_rate_limit:
                        return answer, tried
                    hint = retry_hint(error)
            except ApiError as exc:
                if exc.status < 500 and exc.status != 429:
                    raise
                error = exc
            except NOT_SENT as exc:
                error = ApiError(UNREACHABLE, repr(exc))
            except MAYBE_SENT as exc:
                error = ApiError(UNKNOWN_OUTCOME, repr(exc))
            wait = self.retry.delay(tried.count, started, time.monotonic(), hint)
            if not tried.failed(error, maybe_sent(error)) or wait < 0:
                return None, tried
            self.counters["retries"] += 1
            await asyncio.sleep(wait)

    async def _data(self, method: str, path: str) -> Any:
        answer, tried = await self._call(method, path)
        if answer is None:
            raise tried.outcome()
        if (error := envelope_error(answer)) is not None:
            raise error
        return answer.get("data")

    async def register(self, team_name: str, role: str) -> Team:
        answer, tried = await self._call("POST", "/game/teams/register",
                                              {"team_name": team_name, "role": role},
                                              auth=False, resend=False)
        if answer is None:
            raise tried.outcome()
        if (error := envelope_error(answer)) is not None:
            raise error
        self.team = convert(answer["data"], Team)
        self.api_key = self.team.api_key
        limits = ROLE_LIMITS.get(role)
        if limits is not None and self.gate.limit is None:
            self.gate.limit = limits.orders_per_s
        return self.team

    async def team_info(self, team_id: str) -> Team:
        return convert(await self._data("GET", f"/game/teams/{team_id}"), Team)  # type: ignore[no-any-return]

    async def place(self, instrument_id: str, side: str, quantity: int,
                    price: float | None = None, order_type: str | None = None,
                    client_order_id: str | None = None) -> OrderReply:
        coid = client_order_id or self.ids.next()
        try:  # a price with no JSON form is refused before anything is sent
            body = order_body(instrument_id, side, quantity, price, order_type, coid)
            answer, tried = await self._call("POST", "/exchange/orders", body, gated=True)
        except ApiError as exc:
            return OrderReply(ok=False, client_order_id=coid, error=exc)
        reply = place_reply(answer, tried, coid)
        self.counters["unknown_outcomes"] += reply.code == UNKNOWN_OUTCOME
        return reply

    async def cancel(self, order_id: str) -> OrderReply:
        answer, tried = await self._call("DELETE", f"/exchange/orders/{order_id}")
        return cancel_reply(answer, tried, order_id)

    async def _wait_gate(self) -> None:
        while (wait := self.gate.delay(time.monotonic())) > 0:
            await asyncio.sleep(wait)
        self.gate.take(time.monotonic())

    async def open_orders(self) -> list[OpenOrder]:
        data = await self._data("GET", "/exchange/orders")
        return convert(data["orders"], list[OpenOrder])  # type: ignore[no-any-return]

    async def positions(self) -> dict[str, int]:
        return dict((await self._data("GET", "/positions"))["positions"])

    async def order_book(self, instrument_id: str) -> OrderBook:
        data = await self._data("GET", f"/exchange/orderbook/{instrument_id}")
        return convert(data, OrderBook)  # type: ignore[no-any-return]

    async def health(self) -> dict[str, Any]:
        return await self._send("GET", "/", None, auth=False)

    def stream(self, handler: Handler | None = None, **kw: Any) -> AsyncStream:
        """Start the WebSocket reader task (needs a running loop); `close()` (or the client's
        `aclose()`) stops it."""
        if not self.api_key:
            raise ApiError("UNAUTHORIZED", "register or pass api_key first")
        stream = AsyncStream(ws_url(self.base_url, self.api_key), handler, **kw)
        # Kept to be closed with the client: a stream left running keeps reconnecting and can
        # take the team's connection from the bot's live one. Ended ones are let go.
        self._streams = [s for s in self._streams if s.running] + [stream]
        return stream


class AsyncStream:
    """The team's WebSocket in a task. With a `handler`, each message is passed to it as it
    arrives (in order, once; an `async def` handler is awaited before the next one is read);
    without one, messages queue for `get()`."""

    def __init__(self, url: str, handler: Handler | None = None, *, since: int = 0,
                 max_backoff_s: float = 2.0) -> None:
        self.url = url
        self.handler = handler
        self.max_backoff_s = max_backoff_s
        self.tracker = SeqTracker(since)
        self.queue: asyncio.Queue[WsMessage] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.replaced = False  # a newer connection of the team took over: stopped for good
        self.handler_errors = 0
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def get(self, timeout: float | None = None) -> WsMessage | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout)
        return self.connected.is_set()

    @property
    def running(self) -> bool:
        """The reader task is still on (connected or reconnecting)."""
        return not self._task.done()

    async def close(self) -> None:
        self._closing = True
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        backoff, gaps_in_a_row = 0.05, 0
        while not self._closing:
            if gaps_in_a_row >= 3:
                self.tracker.last, gaps_in_a_row = 0, 0
            try:
                async with connect(self.url + self.tracker.query(), max_size=None,
                                   open_timeout=5, close_timeout=1, compression=None) as conn:
                    self.tracker.connected()
                    self.connected.set()
                    gap, delivered = await self._read(conn)
                    gaps_in_a_row = gaps_in_a_row + 1 if gap else 0
                    if delivered:  # see Stream._run: not on the handshake alone
                        backoff = 0.05
                if replaced(conn.close_code, conn.close_reason):
                    log.warning("WebSocket replaced by a newer connection of this team; "
                                "this stream stops")
                    self.replaced = True
                    return
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                if isinstance(exc, InvalidStatus) and exc.response.status_code == 401:
                    log.error("WebSocket refused: invalid API key")
                    return
                log.debug("WebSocket %s: %r", self.url.split("?")[0], exc)
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff)
            self.reconnects += 1
            backoff = min(self.max_backoff_s, backoff * 2)

    async def _read(self, conn: ClientConnection) -> tuple[bool, int]:
        """Deliver messages until the connection ends: (ended on a seq gap, how many)."""
        delivered = 0
        async for raw in conn:
            msg = decode_ws(raw)
            if msg is None:
                continue
            verdict = self.tracker.accept(msg)
            if verdict == "gap":
                log.warning("WebSocket seq gap after %d (got %d); resyncing",
                            self.tracker.last, msg.seq)
                return True, delivered
            if verdict == "dup":
                continue
            delivered += 1
            if self.handler is None:
                self.queue.put_nowait(msg)
                continue
            try:
                result = self.handler(msg)
                if inspect.isawaitable(result):  # an async def handler: run it, in order
                    await result
            except Exception:  # a bug in the bot's handler must not end its stream
                self.handler_errors += 1
                log.exception("WebSocket handler failed on a %s message; going on", msg.type)
        return False, delivered
