"""Bus records -> API shapes. Ticks and cents become decimals here, and only here.

Fees keep the API sign convention the matcher already uses: + is a rebate, - a fee.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgspec
from starlette.responses import Response

from common.messages import (
    ENVELOPE_FIELDS,
    CancelAck,
    CancelReject,
    DecodeError,
    ExecutionReport,
    Message,
    OpenOrder,
    OrderAck,
    OrderReject,
    OrderResult,
    TeamInfo,
)
from common.money import from_ticks

Data = dict[str, Any]
_JSON = msgspec.json.Encoder(decimal_format="number")


def dumps(obj: Any) -> bytes:
    return _JSON.encode(obj)


def json_response(body: Any, status: int = 200) -> Response:
    """Encoded by msgspec: FastAPI's own JSON path validates and copies the body first."""
    return Response(dumps(body), status, media_type="application/json")


def iso(ts_ns: int) -> str:
    """What datetime's isoformat() prints (no fraction at a whole second), built from the
    whole second, formatted once per second: every WebSocket message carries one."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    micros = ns // 1000
    if micros:
        return f"{_second(seconds)}.{micros:06d}+00:00"
    return f"{_second(seconds)}+00:00"


@lru_cache(maxsize=16)  # a pure function's memo: recent seconds only
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def now_iso() -> str:
    return iso(time.time_ns())


def price(ticks: int | None) -> Decimal | None:
    return None if ticks is None else from_ticks(ticks)


def team(info: TeamInfo) -> Data:
    return {"team_id": info.team_id, "team_name": info.team_name, "role": info.role,
            "created_at": iso(info.created_ns)}


def order_result(r: OrderResult) -> Data:
    average = None
    if r.filled_quantity:
        ticks, rest = divmod(r.notional, r.filled_quantity)
        average = from_ticks(ticks) if not rest else (
            Decimal(r.notional) / r.filled_quantity / 100).quantize(Decimal("0.0001"))
    return {"order_id": r.order_id, "client_order_id": r.client_order_id, "status": r.status,
            "filled_quantity": r.filled_quantity, "remaining_quantity": r.remaining_quantity,
            "average_price": average}


def open_order(o: OpenOrder) -> Data:
    filled = o.quantity - o.remaining_quantity
    return {"order_id": o.order_id, "client_order_id": o.client_order_id,
            "instrument_id": o.instrument_id, "side": o.side, "order_type": o.order_type,
            "price": price(o.price), "original_quantity": o.quantity,
            "remaining_quantity": o.remaining_quantity, "filled_quantity": filled,
            "status": "partially_filled" if filled else "open", "submitted_at": iso(o.ts_ns)}


def private(event: Message) -> tuple[str, Data] | None:
    """A matcher event on exec.<team> as a WebSocket (type, data); None for other kinds."""
    match event:
        case ExecutionReport():
            return "execution_report", {
                "order_id": event.order_id, "client_order_id": event.client_order_id,
                "trade_id": event.trade_id, "instrument_id": event.instrument_id,
                "side": event.side, "executed_quantity": event.executed_quantity,
                "executed_price": from_ticks(event.executed_price),
                "remaining_quantity": event.remaining_quantity,
                "order_status": event.order_status, "liquidity_type": event.liquidity,
                "fees": from_ticks(event.fee)}
        case OrderAck():
            return "new_order_ack", {
                "order_id": event.order_id, "client_order_id": event.client_order_id,
                "instrument_id": event.instrument_id, "side": event.side,
                "quantity": event.quantity, "order_type": event.order_type,
                "price": price(event.price), "status": "new"}
        case CancelAck():
            return "cancel_ack", {
                "order_id": event.order_id, "client_order_id": event.client_order_id,
                "instrument_id": event.instrument_id, "status": "cancelled",
                "cancelled_quantity": event.cancelled_quantity, "reason": event.reason}
        case OrderReject():
            return "new_order_reject", {
                "order_id": event.order_id, "client_order_id": event.client_order_id,
                "instrument_id": event.instrument_id, "status": "rejected",
                "reason": event.reason, "error_code": event.error_code,
                "details": event.details or {}}
        case CancelReject():
            return "cancel_reject", {
                "order_id": event.order_id, "status": "rejected", "reason": event.reason,
                "error_code": event.error_code}
    return None


# Prices that travel in ticks on the bus, by message type: bots get decimals, like everywhere.
_TICK_FIELDS: dict[Any, tuple[str, ...]] = {"indicators": ("price",)}


def feed_data(payload: bytes) -> Data | None:
    """A news or signal frame as plain data, whatever its producer's struct (tolerant)."""
    try:
        raw = msgspec.msgpack.decode(payload)
    except DecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    data = {k: v for k, v in raw.items() if isinstance(k, str) and k not in ENVELOPE_FIELDS}
    for name in _TICK_FIELDS.get(raw.get("type"), ()):
        if isinstance(data.get(name), int):
            data[name] = from_ticks(data[name])
    return data
