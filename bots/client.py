"""Synchronous client for the bot API: REST calls (httpx) and the WebSocket stream (a thread).

    client = Client("http://127.0.0.1:8000")
    team = client.register("my-team", "market_maker")     # keeps the API key
    reply = client.place("SPX_4500_CALL", "buy", 5, 101.25)
    if not reply.ok: print(reply.code, reply.error.details)
    with client.stream() as stream:
        for msg in stream.messages(timeout=1.0): ...

Orders: a `client_order_id` is generated when none is given; a failed attempt (connection
lost, timeout, PROCESSING_TIMEOUT, SERVICE_UNAVAILABLE, 5xx) is resent with the same id, so
an order is never placed twice. The team's order rate is kept under its limit, and a
RATE_LIMIT_EXCEEDED is waited out and resent. The asyncio twin is `bots.aclient.AsyncClient`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

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

log = logging.getLogger(__name__)

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
MAYBE_SENT = (httpx.TransportError,)  # read/write errors and timeouts after the request left


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 role: str | None = None, timeout: float = 10.0, retry: Retry | None = None,
                 id_prefix: str | None = None, http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.team: Team | None = None
        self.retry = retry or Retry()
        self.ids = OrderIds(id_prefix)
        limits = ROLE_LIMITS.get(role or "")
        self.gate = RateGate(limits.orders_per_s if limits else None)
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self.counters = {"retries": 0, "rate_limited": 0, "unknown_outcomes": 0}
        self._streams: list[Stream] = []  # closed with the client, see stream()

    def close(self) -> None:
        """Close the HTTP client and every stream this client started."""
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- transport ---

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
              auth: bool = True) -> dict[str, Any]:
        """One HTTP exchange; raises ApiError for HTTP errors, httpx errors for transport."""
        headers = {"X-API-Key": self.api_key} if auth and self.api_key else None
        r = self.http.request(method, self.base_url + path, json=body, headers=headers)
        try:
            parsed = r.json()
        except ValueError:
            parsed = r.text
        if r.status_code != 200 or not isinstance(parsed, dict):
            raise http_error(r.status_code, parsed)
        return parsed

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
              auth: bool = True, resend: bool = True, gated: bool = False
             ) -> tuple[dict[str, Any] | None, Attempts]:
        """Send with retries: (the envelope or None, the attempts; `outcome()` says why none).

        `resend` False: only a request that surely never left is sent again. `gated`: each
        attempt waits for the rate gate."""
        started, tried = time.monotonic(), Attempts(resend)
        while True:
            tried.count += 1
            hint = None
            if gated:  # every attempt: a resend counts against the exchange's rate too
                self._wait_gate()
            try:
                answer = self._send(method, path, body, auth)
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
            time.sleep(wait)

    def _data(self, method: str, path: str) -> Any:
        answer, tried = self._call(method, path)
        if answer is None:
            raise tried.outcome()
        if (error := envelope_error(answer)) is not None:
            raise error
        return answer.get("data")

    # --- the API ---

    def register(self, team_name: str, role: str) -> Team:
        """Register a team and keep its API key (shown once: store it if you need it later)."""
        answer, tried = self._call("POST", "/game/teams/register",
                                        {"team_name": team_name, "role": role}, auth=False,
                                        resend=False)
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

    def team_info(self, team_id: str) -> Team:
        return convert(self._data("GET", f"/game/teams/{team_id}"), Team)  # type: ignore[no-any-return]

    def place(self, instrument_id: str, side: str, quantity: int, price: float | None = None,
              order_type: str | None = None, client_order_id: str | None = None) -> OrderReply:
        """A new order (limit when a price is given, else market). Never raises for a refusal:
        look at `reply.ok` and `reply.error` (code, message, details)."""
        coid = client_order_id or self.ids.next()
        try:  # a price with no JSON form is refused before anything is sent
            body = order_body(instrument_id, side, quantity, price, order_type, coid)
            answer, tried = self._call("POST", "/exchange/orders", body, gated=True)
        except ApiError as exc:  # 401, 422: this request can never succeed
            return OrderReply(ok=False, client_order_id=coid, error=exc)
        reply = place_reply(answer, tried, coid)
        self.counters["unknown_outcomes"] += reply.code == UNKNOWN_OUTCOME
        return reply

    def cancel(self, order_id: str) -> OrderReply:
        answer, tried = self._call("DELETE", f"/exchange/orders/{order_id}")
        return cancel_reply(answer, tried, order_id)

    def open_orders(self) -> list[OpenOrder]:
        return convert(self._data("GET", "/exchange/orders")["orders"], list[OpenOrder])  # type: ignore[no-any-return]

    def positions(self) -> dict[str, int]:
        return dict(self._data("GET", "/positions")["positions"])

    def order_book(self, instrument_id: str) -> OrderBook:
        return convert(self._data("GET", f"/exchange/orderbook/{instrument_id}"), OrderBook)  # type: ignore[no-any-return]

    def health(self) -> dict[str, Any]:
        return self._send("GET", "/", auth=False)

    def cancel_all(self) -> int:
        """Cancel every resting order of the team; returns how many were cancelled."""
        return sum(self.cancel(o.order_id).ok for o in self.open_orders())

    def stream(self, **kw: Any) -> Stream:
        """Start the team's WebSocket reader thread; `close()` (or the client's) stops it."""
        if not self.api_key:
            raise ApiError("UNAUTHORIZED", "register or pass api_key first")
        stream = Stream(ws_url(self.base_url, self.api_key), **kw)
        # Kept to be closed with the client: a stream left running keeps reconnecting and can
        # take the team's connection from the bot's live one. Ended ones are let go.
        self._streams = [s for s in self._streams if s.running] + [stream]
        return stream

    def _wait_gate(self) -> None:
        while (wait := self.gate.delay(time.monotonic())) > 0:
            time.sleep(wait)
        self.gate.take(time.monotonic())


class Stream:
    """The team's WebSocket on a background thread, kept connected and in order.

    Messages arrive in `seq` order, each once. A lost connection is reopened (backoff up to
    `max_backoff_s`) with `since=<last seq>`, so our gateway replays what was missed; when it
    cannot (or the server does not resume), the next message is a fresh `position_snapshot`:
    rebuild your state from it, and re-read your open orders over REST. A gap in `seq` makes
    the stream reconnect to have the missing messages replayed."""

    def __init__(self, url: str, *, since: int = 0, max_backoff_s: float = 2.0,
                 max_queue: int = 100_000) -> None:
        self.url = url
        self.max_backoff_s = max_backoff_s
        self.tracker = SeqTracker(since)
        self.queue: queue.Queue[WsMessage] = queue.Queue(max_queue)
        self.connected = threading.Event()
        self.reconnects = 0
        self.replaced = False  # a newer connection of the team took over: stopped for good
        self._closing = threading.Event()
        self._conn: ClientConnection | None = None
        self._thread = threading.Thread(target=self._run, name="itg-bot-ws", daemon=True)
        self._thread.start()

    def get(self, timeout: float | None = None) -> WsMessage | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def messages(self, timeout: float = 0.0) -> Iterator[WsMessage]:
        """What has arrived, waiting up to `timeout` for the first one."""
        msg = self.get(timeout) if timeout > 0 else self.get_nowait()
        while msg is not None:
            yield msg
            msg = self.get_nowait()

    def get_nowait(self) -> WsMessage | None:
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return None

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    @property
    def running(self) -> bool:
        """The reader thread is still on (connected or reconnecting)."""
        return self._thread.is_alive()

    def close(self) -> None:
        self._closing.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        self._thread.join(5)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self) -> None:
        backoff, gaps_in_a_row = 0.05, 0
        while not self._closing.is_set():
            if gaps_in_a_row >= 3:  # the server cannot fill the gap: start over, fresh
                self.tracker.last, gaps_in_a_row = 0, 0
            try:
                with connect(self.url + self.tracker.query(), max_size=None,
                             open_timeout=5, close_timeout=1) as conn:
                    self._conn = conn
                    if self._closing.is_set():  # close() ran during the handshake
                        return
                    self.tracker.connected()
                    self.connected.set()
                    gap, delivered = self._read(conn)
                    gaps_in_a_row = gaps_in_a_row + 1 if gap else 0
                    if delivered:  # not on the handshake alone: a server that accepts and
                        backoff = 0.05  # then closes at once must still be backed off from
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
                self._conn = None
                self.connected.clear()
            if self._closing.wait(backoff):
                return
            self.reconnects += 1
            backoff = min(self.max_backoff_s, backoff * 2)

    def _read(self, conn: ClientConnection) -> tuple[bool, int]:
        """Deliver messages until the connection ends: (ended on a seq gap, how many)."""
        delivered = 0
        for raw in conn:
            msg = decode_ws(raw)
            if msg is None:
                continue
            verdict = self.tracker.accept(msg)
            if verdict == "gap":
                log.warning("WebSocket seq gap after %d (got %d); resyncing",
                            self.tracker.last, msg.seq)
                return True, delivered
            if verdict != "dup" and self._put(msg):
                delivered += 1
        return False, delivered

    def _put(self, msg: WsMessage) -> bool:
        """Queue `msg`, waiting while the queue is full, but never past close()."""
        while not self._closing.is_set():
            try:
                self.queue.put(msg, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False
