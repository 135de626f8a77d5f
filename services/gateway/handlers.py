"""What each endpoint does, once the caller is authenticated and its body is valid JSON.

Each returns the envelope of API.md. The checks done here are those that need no state of the
game: the shape of an order (side, type, a price in whole ticks, the role's size limits), the
team name, and the team's request rate. They use the matcher's codes, messages and details,
and the matcher checks the same again. What needs the game's state (instrument, phase,
positions) is the matcher's call alone.
"""

from __future__ import annotations

import secrets
import unicodedata
from typing import Any

from common.bus_client import BusTimeout
from common.config import ORDER_TYPES, RoleConfig
from common.messages import (
    MAX_TEAM_NAME,
    SIDES,
    AccountQuery,
    AccountReply,
    CancelOrder,
    Command,
    NewOrder,
    OrderResult,
    RegisterTeam,
    Response,
    TeamInfo,
)
from common.money import TICKS_PER_UNIT, float_to_ticks
from services.gateway import views
from services.gateway.auth import key_hash, new_key
from services.gateway.bridge import BusUnavailable
from services.gateway.core import Gateway
from services.gateway.schemas import SHORT, OrderRequest, RegisterRequest

Body = dict[str, Any]
BOOK_LEVELS = 5


def envelope(request_id: str | None, *, data: Any = None, order_id: str | None = None,
             error: tuple[str, str, dict[str, Any] | None] | None = None) -> Body:
    return {"success": error is None,
            "request_id": request_id or f"req_{secrets.token_hex(8)}",
            "order_id": order_id, "data": data,
            "error": None if error is None else {
                "code": error[0], "message": error[1], "details": error[2] or {}},
            "timestamp": views.now_iso()}


def failure(request_id: str | None, code: str, message: str, details: dict[str, Any] | None = None,
            order_id: str | None = None) -> Body:
    return envelope(request_id, order_id=order_id, error=(code, message, details))


async def ask(gw: Gateway, cmd: Command, request_id: str | None,
              order_id: str | None = None) -> Response | Body:
    """Send a command; the Response, or the envelope of a timeout or an unreachable bus."""
    timeout = gw.settings.request_timeout_s
    try:
        return await gw.bridge.command(cmd, timeout)
    except (BusTimeout, BusUnavailable) as exc:
        return unanswered(exc, timeout, request_id, order_id, retry=(
            "resend with the same client_order_id: an order is never placed twice"))


def unanswered(exc: BusTimeout | BusUnavailable, timeout: float, request_id: str | None = None,
               order_id: str | None = None, **details: Any) -> Body:
    """A request the exchange did not answer in time (it may have been served), or one the
    bus could not take (it was not sent)."""
    if isinstance(exc, BusUnavailable):
        return failure(request_id, "SERVICE_UNAVAILABLE", "The exchange is unavailable",
                       {"reason": str(exc)}, order_id)
    return failure(request_id, "PROCESSING_TIMEOUT",
                   f"The exchange did not answer within {timeout:g} s",
                   {"timeout_s": timeout, **details}, order_id)


def refused(request_id: str | None, r: Response) -> Body:
    return failure(request_id, r.code or "INTERNAL_ERROR", r.message, r.details, r.order_id)


def team_name(asked: str) -> str | None:
    """The name as the leaderboard will show it: NFKC (full-width letters are plain ones) and
    trimmed; None if it is then empty, too long or holds an invisible character (controls,
    format characters such as zero-width spaces), so that no two teams register names that
    look the same (the matcher compares them case-insensitively)."""
    name = unicodedata.normalize("NFKC", asked).strip()
    if not 1 <= len(name) <= MAX_TEAM_NAME or any(
            unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" for c in name):
        return None
    return name


async def register(gw: Gateway, req: RegisterRequest) -> Body:
    name = team_name(req.team_name)
    if name is None:
        return failure(req.request_id, "INVALID_TEAM_NAME",
                       f"Team names need 1-{MAX_TEAM_NAME} visible characters",
                       {"team_name": req.team_name, "max_length": MAX_TEAM_NAME})
    key = new_key()
    hashed = key_hash(key)
    answer = await ask(gw, RegisterTeam(team_name=name, role=req.role, key_hash=hashed),
                       req.request_id)
    if not isinstance(answer, Response):
        return answer
    if not answer.ok or not isinstance(answer.result, TeamInfo):
        return refused(req.request_id, answer)
    gw.keys.remember(hashed, answer.result)
    return envelope(req.request_id, data={**views.team(answer.result), "api_key": key})


async def team(gw: Gateway, me: TeamInfo, team_id: str) -> Body:
    """A team's own record; any other id is TEAM_NOT_FOUND, so ids cannot be probed."""
    if team_id != me.team_id:
        return failure(None, "TEAM_NOT_FOUND", "Team not found", {"team_id": team_id[:SHORT]})
    return envelope(None, data=views.team(me))


def _shape(req: OrderRequest, order_type: str) -> tuple[str, str, Body] | None:
    if req.side not in SIDES:
        return "INVALID_SIDE", f"Invalid side: {req.side!r}", {"side": req.side}
    if order_type not in ORDER_TYPES:
        return ("INVALID_ORDER_TYPE", f"Invalid order type: {order_type!r}",
                {"order_type": order_type})
    return None


def _quantity(quantity: int, low: int, high: int) -> tuple[str, str, Body] | None:
    if low <= quantity <= high:
        return None
    shown = quantity if abs(quantity) < 1 << 53 else str(quantity)
    return "INVALID_QUANTITY", "Quantity out of range", {"quantity": shown, "min": low,
                                                        "max": high}


def _ticks(price: float | None, max_ticks: int) -> int | tuple[str, str, Body] | None:
    if price is None:
        return None
    if not 0 < price <= max_ticks / TICKS_PER_UNIT:  # first: 1e308 has no ticks at all
        return "INVALID_PRICE", "Price out of range", {
            "price": price, "min": 0.01, "max": float(views.price(max_ticks) or 0)}
    try:
        return float_to_ticks(price)
    except ValueError:
        return "INVALID_PRICE", "Price must be a multiple of the tick 0.01", {
            "price": price, "tick": 0.01}


def _check(gw: Gateway, role: RoleConfig | None, req: OrderRequest,
           order_type: str) -> int | tuple[str, str, Body] | None:
    """The price in ticks (None for a market order), or the reject, in the matcher's order."""
    if problem := _shape(req, order_type):
        return problem
    ticks = _ticks(req.price, gw.max_price_ticks)  # on a market order too: never ignored
    if isinstance(ticks, tuple):
        return ticks
    ticks = None if order_type == "market" else ticks
    low, high = (role.min_order_size, role.max_order_size) if role else (1, 0)
    return _quantity(req.quantity, low, high) or ticks


async def place(gw: Gateway, me: TeamInfo, req: OrderRequest) -> Body:
    rid = req.request_id
    order_type = req.order_type  # inferred only when absent: "" is no order type
    if order_type is None:
        order_type = "limit" if req.price is not None else "market"
    role = gw.config.game.roles.get(me.role)
    ticks = _check(gw, role, req, order_type)
    if isinstance(ticks, tuple):
        return _refused_here(gw, me, req, ticks)
    if role and (over := gw.limiter.admit(me.team_id, role.max_orders_per_s)) is not None:
        return _refused_here(gw, me, req, (
            "RATE_LIMIT_EXCEEDED", "Order rate limit exceeded", over))
    answer = await ask(gw, NewOrder(
        team_id=me.team_id, instrument_id=req.instrument_id, side=req.side,
        quantity=req.quantity, order_type=order_type, price=ticks,
        client_order_id=req.client_order_id or None), rid)  # "" is no id
    if not isinstance(answer, Response):
        return answer
    if not answer.ok or not isinstance(answer.result, OrderResult):
        gw.limiter.give_back(me.team_id)
        return refused(rid, answer)
    gw.mirror.tell(answer.ts_ns)
    return envelope(rid, order_id=answer.order_id, data=views.order_result(answer.result))


def _refused_here(gw: Gateway, me: TeamInfo, req: OrderRequest,
                  reject: tuple[str, str, Body]) -> Body:
    """The answer, and the `new_order_reject` the team's WebSocket gets for every refused order
    (API.md), as the matcher's rejects do."""
    code, message, details = reject
    gw.hub.local_reject(me.team_id, {
        "order_id": None, "client_order_id": req.client_order_id or None,
        "instrument_id": req.instrument_id, "status": "rejected", "reason": message,
        "error_code": code, "details": details})
    return failure(req.request_id, code, message, details)


async def cancel(gw: Gateway, me: TeamInfo, order_id: str) -> Body:
    if len(order_id) > SHORT:  # never a real id: the same answer as any unknown one
        return failure(None, "CANCEL_FAILED", "Cancel failed: Order not found",
                       {"order_id": order_id[:SHORT]}, order_id[:SHORT])
    answer = await ask(gw, CancelOrder(team_id=me.team_id, order_id=order_id), None, order_id)
    if not isinstance(answer, Response):
        return answer
    if not answer.ok or not isinstance(answer.result, OrderResult):
        return refused(None, answer)
    gw.mirror.tell(answer.ts_ns)
    return envelope(None, order_id=order_id, data=views.order_result(answer.result))


async def account(gw: Gateway, me: TeamInfo) -> AccountReply | Body:
    timeout = gw.settings.request_timeout_s
    try:
        return await gw.bridge.call(AccountQuery(team_id=me.team_id), AccountReply, timeout)
    except (BusTimeout, BusUnavailable) as exc:
        return unanswered(exc, timeout)


async def orders(gw: Gateway, me: TeamInfo) -> Body:
    reply = await account(gw, me)
    if not isinstance(reply, AccountReply):
        return reply
    return envelope(None, data={"orders": [views.open_order(o) for o in reply.open_orders]})


async def positions(gw: Gateway, me: TeamInfo) -> Body:
    reply = await account(gw, me)
    if not isinstance(reply, AccountReply):
        return reply
    return envelope(None, data={"team_id": me.team_id, "positions": reply.positions,
                                "last_updated": views.now_iso()})


async def book(gw: Gateway, me: TeamInfo, instrument_id: str) -> Body:
    if instrument_id not in gw.instruments:
        return failure(None, "INVALID_INSTRUMENT", f"Unknown instrument: {instrument_id[:SHORT]}",
                       {"instrument_id": instrument_id[:SHORT]})
    if not gw.mirror.synced:
        return failure(None, "SERVICE_UNAVAILABLE", "Market data is resynchronising",
                       {"retry": True})
    await gw.mirror.caught_up(gw.settings.request_timeout_s)
    levels = gw.mirror.books.get(instrument_id)
    bids, asks = levels.top(BOOK_LEVELS) if levels is not None else ([], [])
    return envelope(None, data={
        "instrument_id": instrument_id,
        "bids": [{"price": views.price(p), "quantity": q} for p, q in bids],
        "asks": [{"price": views.price(p), "quantity": q} for p, q in asks],
        "timestamp": views.now_iso()})
