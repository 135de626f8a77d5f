"""The bot API's shapes and rules, without any I/O: shared by the sync and asyncio clients.

Everything here follows /work/shared/API.md and nothing beyond it is required: fields our
gateway adds (an order's `data`, `details` of a reject, `?since=N` resumes) are used when
present and do without when absent, so the clients run against any server of that contract.

- Results are typed (msgspec Structs, unknown fields ignored); prices are floats in dollars.
- `Retry` says whether a failed attempt may be sent again. An order is only ever resent with
  the same `client_order_id` (the server answers a repeat with the original answer).
- `RateGate` keeps a team under its orders-per-second limit and learns the limit from a
  RATE_LIMIT_EXCEEDED reject when it was not told.
- `SeqTracker` checks the WebSocket `seq` and decides what a reconnection must ask for.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections import deque
from typing import Any

import msgspec

RETRYABLE_CODES = frozenset({"PROCESSING_TIMEOUT", "SERVICE_UNAVAILABLE"})
POSITION_CODES = frozenset({"MM_POS_LIMIT", "POSITION_LIMIT_EXCEEDED"})
RATE_LIMITED = "RATE_LIMIT_EXCEEDED"
UNKNOWN_OUTCOME = "UNKNOWN_OUTCOME"  # the last attempt may or may not have reached the exchange
UNREACHABLE = "UNREACHABLE"  # nothing could be sent


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """A role's constraints (GAME.md defaults; the exchange's config may differ)."""

    position: int  # per option, resting orders counted as worst-case fills
    total: int  # sum over options of the worst-case absolute position
    underlying: int = 10_000
    max_order_size: int
    orders_per_s: int


ROLE_LIMITS: dict[str, Limits] = {
    "market_maker": Limits(position=50, total=200, max_order_size=1000, orders_per_s=10),
    "hedge_fund": Limits(position=150, total=500, max_order_size=500, orders_per_s=5),
    "arbitrage": Limits(position=100, total=300, max_order_size=500, orders_per_s=7),
    "retail": Limits(position=50, total=50, max_order_size=50, orders_per_s=1),
}


class ApiError(Exception):
    """A refusal (envelope error), an HTTP error, or a failure to reach the exchange."""

    def __init__(self, code: str, message: str = "", details: dict[str, Any] | None = None,
                 status: int = 200) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.details = details or {}
        self.status = status


class Attempts:
    """What the failed attempts of one request add up to.

    An attempt "may have been sent" when its answer was lost (connection dropped after the
    request left, a 5xx, PROCESSING_TIMEOUT). If any attempt may have been, the request's
    failure is UNKNOWN_OUTCOME even when the last attempt surely never left: an order may
    rest on the exchange, and the caller must re-read its orders to know."""

    def __init__(self, resend: bool = True) -> None:
        self.resend = resend  # False: an attempt that may have been sent is not sent again
        self.count = 0  # attempts made
        self.maybe_sent = False
        self.last: ApiError | None = None

    def failed(self, error: ApiError, maybe_sent: bool) -> bool:
        """Record a failed attempt; True if the request may be sent again."""
        self.last = error
        self.maybe_sent = self.maybe_sent or maybe_sent
        return not (maybe_sent and not self.resend)

    def outcome(self) -> ApiError:
        last = self.last or ApiError(UNREACHABLE)
        if not self.maybe_sent or last.code == UNKNOWN_OUTCOME:
            return last
        return ApiError(UNKNOWN_OUTCOME, f"an attempt may have reached the exchange; the last "
                                         f"one failed with {last}", last.details, last.status)


def maybe_sent(error: ApiError) -> bool:
    """Whether a failed answer leaves open that the request was acted on."""
    return error.status >= 500 or error.code in ("PROCESSING_TIMEOUT", UNKNOWN_OUTCOME)


def replaced(close_code: int | None, close_reason: str | None) -> bool:
    """The server closed the stream for a newer connection of the same team (our gateway:
    1000 "replaced by a new connection"). Reconnecting would close that one in turn, and two
    streams of one team would take turns for ever: a stream told this stops."""
    return close_code == 1000 and "replaced" in (close_reason or "")


class Team(msgspec.Struct, kw_only=True):
    team_id: str
    team_name: str
    role: str
    api_key: str = ""
    created_at: str = ""


class OrderReply(msgspec.Struct, kw_only=True):
    """The answer to a new order or a cancel. `ok` False: `error` says why."""

    ok: bool
    order_id: str | None = None
    client_order_id: str | None = None
    status: str | None = None  # new | partially_filled | filled | cancelled (when the server says)
    filled_quantity: int = 0
    remaining_quantity: int | None = None
    average_price: float | None = None
    error: ApiError | None = None
    attempts: int = 1

    @property
    def code(self) -> str | None:
        return None if self.error is None else self.error.code


class OpenOrder(msgspec.Struct, kw_only=True):
    order_id: str
    instrument_id: str
    side: str
    remaining_quantity: int
    price: float | None = None
    client_order_id: str | None = None
    order_type: str = "limit"
    original_quantity: int = 0
    filled_quantity: int = 0
    status: str = "open"
    submitted_at: str = ""


class Level(msgspec.Struct, kw_only=True):
    price: float
    quantity: int


class OrderBook(msgspec.Struct, kw_only=True):
    instrument_id: str
    bids: list[Level] = []
    asks: list[Level] = []
    timestamp: str = ""


class WsMessage(msgspec.Struct, kw_only=True):
    """One WebSocket message: {seq, type, timestamp, data}."""

    seq: int
    type: str
    timestamp: str = ""
    data: dict[str, Any] = {}


def new_prefix() -> str:
    return "c" + secrets.token_hex(5)


class OrderIds:
    """client_order_id generator: a random per-process prefix and a counter (unique, short).
    A prefix of your own gets a random part too: a restarted bot counting from 1 again under
    a fixed prefix would resend old ids, and the exchange answers those with the old orders."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = f"{prefix}.{secrets.token_hex(3)}" if prefix else new_prefix()
        self._n = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self._n)}"


def order_body(instrument_id: str, side: str, quantity: int, price: float | None,
               order_type: str | None, client_order_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"instrument_id": instrument_id, "side": side, "quantity": quantity,
                            "client_order_id": client_order_id}
    if price is not None:
        body["price"] = _wire_price(float(price))
    if order_type is not None:
        body["order_type"] = order_type
    return body


def _wire_price(price: float) -> float:
    """The price as sent: float noise (440.1 + 0.2 = 440.30000000000007) is snapped to its
    cent, but a price really off the tick (25.555) goes as asked and the exchange refuses it
    (INVALID_PRICE): rounding it here would buy higher or sell lower than the bot meant. NaN
    and infinities have no JSON form: refused here, as the exchange would."""
    if not math.isfinite(price):
        raise ApiError("INVALID_PRICE", "Price must be a finite number", {"price": str(price)})
    cents = round(price * 100)
    return cents / 100 if abs(price * 100 - cents) < 1e-6 else price


def envelope_error(body: dict[str, Any]) -> ApiError | None:
    if body.get("success"):
        return None
    err = body.get("error") or {}
    return ApiError(str(err.get("code") or "INTERNAL_ERROR"), str(err.get("message") or ""),
                    err.get("details") or {})


def http_error(status: int, body: Any) -> ApiError:
    detail = body.get("detail") if isinstance(body, dict) else body
    code = {401: "UNAUTHORIZED", 404: "NOT_FOUND", 413: "TOO_LARGE",
            422: "VALIDATION_ERROR"}.get(status, "HTTP_ERROR")
    if status >= 500:
        code = "SERVICE_UNAVAILABLE"
    return ApiError(code, str(detail)[:500], {}, status)


def order_reply(body: dict[str, Any], client_order_id: str | None, attempts: int) -> OrderReply:
    error = envelope_error(body)
    raw = body.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}  # the original sent null
    return OrderReply(
        ok=error is None, order_id=body.get("order_id") or data.get("order_id"),
        client_order_id=data.get("client_order_id", client_order_id), status=data.get("status"),
        filled_quantity=int(data.get("filled_quantity") or 0),
        remaining_quantity=data.get("remaining_quantity"),
        average_price=_float(data.get("average_price")), error=error, attempts=attempts)


def place_reply(answer: dict[str, Any] | None, tried: Attempts, coid: str) -> OrderReply:
    if answer is None:
        return OrderReply(ok=False, client_order_id=coid, error=tried.outcome(),
                          attempts=tried.count)
    return order_reply(answer, coid, tried.count)


def cancel_reply(answer: dict[str, Any] | None, tried: Attempts, order_id: str) -> OrderReply:
    """A cancel's answer. CANCEL_FAILED after an attempt that may have reached the exchange
    is UNKNOWN_OUTCOME: that attempt may have cancelled the order itself."""
    if answer is None:
        return OrderReply(ok=False, order_id=order_id, error=tried.outcome(),
                          attempts=tried.count)
    reply = order_reply(answer, None, tried.count)
    reply.order_id = reply.order_id or order_id
    if tried.maybe_sent and reply.error is not None and reply.error.code == "CANCEL_FAILED":
        reply.error = ApiError(UNKNOWN_OUTCOME, "the order was not found, but an earlier "
                               "attempt may have cancelled it", reply.error.details)
    return reply


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def convert(data: Any, kind: type[Any]) -> Any:
    """Plain JSON data into a result Struct; unknown fields are ignored, ints become floats."""
    return msgspec.convert(data, kind, strict=False)


class Retry(msgspec.Struct, kw_only=True):
    """When to send again. Delays double from `base_s` up to `max_s`; give up after
    `attempts` tries or `total_s` seconds, whichever comes first."""

    attempts: int = 8
    total_s: float = 15.0
    base_s: float = 0.05
    max_s: float = 2.0
    on_rate_limit: bool = True  # wait the advertised time and resend (the order left no trace)

    def delay(self, attempt: int, started: float, now: float, hint: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1`, or -1 to give up."""
        if attempt >= self.attempts:
            return -1.0
        wait = hint if hint is not None else min(self.max_s, self.base_s * 2 ** (attempt - 1))
        return -1.0 if now + wait - started > self.total_s else wait


def retry_hint(error: ApiError) -> float | None:
    """A RATE_LIMIT_EXCEEDED reject's own `retry_after_s`, if the server sent one."""
    value = error.details.get("retry_after_s")
    return max(0.0, float(value)) + 0.005 if isinstance(value, int | float) else None


class RateGate:
    """A sliding one-second window over this client's own orders.

    `limit` None means not known yet: orders go straight out until the exchange says
    RATE_LIMIT_EXCEEDED with a `limit` in its details. `margin_s` widens the window a little,
    since the exchange counts arrivals and this gate counts departures."""

    def __init__(self, limit: int | None = None, window_s: float = 1.0,
                 margin_s: float = 0.03) -> None:
        self.limit = limit
        self.span = window_s + margin_s
        self.sent: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Seconds until one more order may go; 0 when it may go now."""
        if self.limit is None:
            return 0.0
        sent = self.sent
        while sent and sent[0] <= now - self.span:
            sent.popleft()
        if len(sent) < self.limit:
            return 0.0
        return sent[-self.limit] + self.span - now

    def take(self, now: float) -> None:
        sent = self.sent
        sent.append(now)
        while sent[0] <= now - self.span:  # trimmed here too: with no limit known yet,
            sent.popleft()  # `delay` never runs it, and a long game would keep every time

    def learn(self, error: ApiError) -> None:
        limit = error.details.get("limit")
        if error.details.get("scope", "orders") != "orders":  # the request rate, not orders
            return
        if error.code == RATE_LIMITED and isinstance(limit, int) and limit > 0:
            self.limit = limit if self.limit is None else min(self.limit, limit)


class SeqTracker:
    """The WebSocket numbering as the client sees it, across reconnections.

    `query()` gives what a (re)connection asks for: `since=N` once anything was received.
    `accept()` classifies each message: "ok" (in order), "dup" (already seen: drop it),
    "gap" (messages are missing: reconnect with since=last to get them replayed), or "reset"
    (a fresh `position_snapshot`: state must be rebuilt from it; the numbering may restart at 1
    on a server that does not resume)."""

    def __init__(self, since: int = 0) -> None:
        self.last = since  # the last seq processed: a new client may resume an old numbering
        self.fresh = True  # the next message is the first of a connection
        self.counters = {"gaps": 0, "duplicates": 0, "resets": 0, "resumes": 0}

    def query(self) -> str:
        return f"&since={self.last}" if self.last else ""

    def connected(self) -> None:
        self.fresh = True

    def accept(self, msg: WsMessage) -> str:
        first, self.fresh = self.fresh, False
        if msg.type == "position_snapshot" and (first or msg.seq == self.last + 1):
            if self.last:
                self.counters["resets"] += 1
            self.last = msg.seq
            return "reset"
        if msg.seq == self.last + 1:
            if first and self.last:
                self.counters["resumes"] += 1
            self.last = msg.seq
            return "ok"
        if msg.seq <= self.last:
            self.counters["duplicates"] += 1
            return "dup"
        self.counters["gaps"] += 1
        return "gap"


def decode_ws(raw: str | bytes) -> WsMessage | None:
    try:
        return msgspec.json.decode(raw, type=WsMessage)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # deep nesting
        return None


def ws_url(base_url: str, api_key: str) -> str:
    scheme, _, rest = base_url.rstrip("/").partition("://")
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}://{rest}/ws?api_key={api_key}"
