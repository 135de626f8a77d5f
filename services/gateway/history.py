"""History for analytics, from the database through a read-only connection, never from the
matcher (so heavy queries can never slow trading): a team's own trades, orders and P&L over
time, and public trades and prices by time range. Times are ISO-8601; money and prices are
decimals, as everywhere in the API. Queries run in a worker thread, off the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from common.dbread import read_only_engine
from common.messages import TeamInfo
from services.gateway import handlers, schemas, views

if TYPE_CHECKING:
    from services.gateway.app import Api

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
MAX_LIMIT = 1000
RESPONSES = schemas.documented(401, 503)

OWN_TRADES = text(
    "SELECT trade_id, instrument_id, price, quantity, ts_ns, aggressor, "
    "CASE WHEN buyer = :team THEN 'buy' ELSE 'sell' END AS side, "
    "CASE WHEN buyer = :team THEN buyer_fee ELSE seller_fee END AS fee "
    "FROM trades WHERE (buyer = :team OR seller = :team) AND ts_ns BETWEEN :lo AND :hi "
    "ORDER BY ts_ns, trade_id LIMIT :limit")
OWN_ORDERS = text(
    "SELECT order_id, client_order_id, instrument_id, side, order_type, price, quantity, "
    "filled_quantity, status, submitted_ns FROM orders WHERE team_id = :team "
    "AND submitted_ns BETWEEN :lo AND :hi ORDER BY submitted_ns, order_id LIMIT :limit")
OWN_PNL = text(
    "SELECT snapshot_ns, positions, cash, fees, pnl FROM position_snapshots "
    "WHERE team_id = :team AND snapshot_ns BETWEEN :lo AND :hi ORDER BY snapshot_ns LIMIT :limit")
PUBLIC_TRADES = text(
    "SELECT trade_id, instrument_id, price, quantity, aggressor, ts_ns FROM trades "
    "WHERE instrument_id = :instrument AND ts_ns BETWEEN :lo AND :hi "
    "ORDER BY ts_ns, trade_id LIMIT :limit")
PRICES = text(
    "SELECT instrument_id, price, kind, ts_ns FROM prices WHERE instrument_id = :instrument "
    "AND kind = :kind AND ts_ns BETWEEN :lo AND :hi ORDER BY ts_ns, seq LIMIT :limit")


class History:
    def __init__(self, url: str) -> None:
        self._url = url
        self._engine: Engine | None = None

    def query(self, statement: Any, **params: Any) -> Rows:
        if self._engine is None:
            self._engine = read_only_engine(self._url)
        with self._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(statement, params)]


def _window(since: str | None, until: str | None, limit: int) -> dict[str, int] | str:
    """since/until are ISO-8601 with a time zone (default: everything)."""
    try:
        return {"lo": _ns(since, 0), "hi": _ns(until, 2**63 - 1), "limit": limit}
    except ValueError as exc:
        return str(exc)


def _ns(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        raise ValueError(f"{raw!r}: give a time zone (e.g. Z)")
    ns = int(stamp.timestamp() * 1_000_000) * 1000
    # times are stored as int64 nanoseconds (1677-2262); anything beyond is out of range,
    # and the database driver would fail on it
    return min(max(ns, 0), 2**63 - 1)


def _trade(r: dict[str, Any]) -> dict[str, Any]:
    out = {"trade_id": r["trade_id"], "instrument_id": r["instrument_id"],
           "price": views.price(r["price"]), "quantity": r["quantity"],
           "aggressor": r["aggressor"], "timestamp": views.iso(r["ts_ns"])}
    if "side" in r:
        out |= {"side": r["side"], "fees": views.price(r["fee"])}
    return out


def _order(r: dict[str, Any]) -> dict[str, Any]:
    return {**{k: r[k] for k in ("order_id", "client_order_id", "instrument_id", "side",
                                 "order_type", "quantity", "filled_quantity", "status")},
            "price": views.price(r["price"]), "submitted_at": views.iso(r["submitted_ns"])}


def _pnl(r: dict[str, Any]) -> dict[str, Any]:
    positions = r["positions"]
    if isinstance(positions, str):  # SQLite hands JSON back as text
        positions = json.loads(positions)
    return {"timestamp": views.iso(r["snapshot_ns"]), "pnl": views.price(r["pnl"]),
            "cash": views.price(r["cash"]), "fees": views.price(r["fees"]),
            "positions": {k: v for k, v in positions.items() if v}}


def _price(r: dict[str, Any]) -> dict[str, Any]:
    return {"instrument_id": r["instrument_id"], "kind": r["kind"],
            "price": views.price(r["price"]), "timestamp": views.iso(r["ts_ns"])}


def _malformed(request: Request, known: frozenset[str]) -> JSONResponse | None:
    """Unknown or repeated query parameters are answered 422 rather than silently ignored."""
    params = request.query_params
    wrong = sorted({k for k in params if k not in known or len(params.getlist(k)) > 1})
    if not wrong:
        return None
    return JSONResponse({"detail": [{"loc": ["query", k], "type": "value_error",
                                     "msg": "unknown parameter" if k not in known
                                     else "given more than once"} for k in wrong]}, 422)


OWN_PARAMS = frozenset({"since", "until", "limit", "request_id"})
MARKET_PARAMS = OWN_PARAMS | {"instrument_id"}
PRICE_PARAMS = MARKET_PARAMS | {"kind"}


async def _answer(history: History, rid: str | None, window: dict[str, int] | str, key: str,
                  shape: Callable[..., Any], statement: Any, **params: Any) -> handlers.Body:
    if isinstance(window, str):
        return handlers.failure(rid, "INVALID_PARAMETERS", window)
    try:
        rows = await asyncio.to_thread(history.query, statement, **params, **window)
    except SQLAlchemyError as exc:
        log.warning("history query failed: %s", exc)
        return handlers.failure(rid, "SERVICE_UNAVAILABLE", "History is unavailable; retry")
    return handlers.envelope(rid, data={key: [shape(r) for r in rows]})


Since = Annotated[str | None, Query(min_length=1, max_length=40,
                                    description="ISO-8601 with a zone, e.g. 2026-11-24T10:00Z")]
RequestId = Annotated[str | None, Query(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Instrument = Annotated[str, Query(min_length=1, max_length=64)]


def install(app: FastAPI, api: Api, history: History) -> None:
    """Routes under /history (your own team, behind your key) and /market (public data,
    still behind a key like every endpoint but registration and health)."""
    caller = Depends(api.key_owner)  # FastAPI runs it before it checks the query: 401 first

    async def serve(request: Request, allowed: frozenset[str], me: TeamInfo,
                    request_id: str | None, window: tuple[str | None, str | None, int],
                    key: str, shape: Callable[..., Any], statement: Any, **params: Any) -> Any:
        """The query's parameters checked, then the read, within the team's request rate."""
        if bad := _malformed(request, allowed):
            return bad
        bounds = _window(*window)

        async def then(_me: TeamInfo) -> handlers.Body:
            return await _answer(history, request_id, bounds, key, shape, statement, **params)
        return await api.admitted(me, then, request_id)

    def own(path: str, key: str, shape: Callable[..., Any], statement: Any, what: str) -> None:
        @app.get(path, summary=what, openapi_extra=schemas.SECURED, responses=RESPONSES)
        async def route(request: Request, me: TeamInfo = caller, since: Since = None,
                        until: Since = None, limit: Limit = 100,
                        request_id: RequestId = None) -> Any:
            return await serve(request, OWN_PARAMS, me, request_id, (since, until, limit), key,
                               shape, statement, team=me.team_id)

    own("/history/trades", "trades", _trade, OWN_TRADES, "Your trades (side and fee are yours)")
    own("/history/orders", "orders", _order, OWN_ORDERS, "Your orders and their final states")
    own("/history/pnl", "points", _pnl, OWN_PNL, "Your P&L over time (position snapshots)")

    @app.get("/market/trades", summary="Public trades of an instrument",
             openapi_extra=schemas.SECURED, responses=RESPONSES)
    async def market_trades(request: Request, instrument_id: Instrument,
                            me: TeamInfo = caller, since: Since = None, until: Since = None,
                            limit: Limit = 100, request_id: RequestId = None) -> Any:
        return await serve(request, MARKET_PARAMS, me, request_id, (since, until, limit),
                           "trades", _trade, PUBLIC_TRADES, instrument=instrument_id)

    @app.get("/market/prices", summary="Underlying prices or option fair values over time",
             openapi_extra=schemas.SECURED, responses=RESPONSES)
    async def market_prices(request: Request, instrument_id: Instrument, me: TeamInfo = caller,
                            kind: Literal["underlying", "fair_value"] = "underlying",
                            since: Since = None, until: Since = None, limit: Limit = 100,
                            request_id: RequestId = None) -> Any:
        return await serve(request, PRICE_PARAMS, me, request_id, (since, until, limit),
                           "prices", _price, PRICES, instrument=instrument_id, kind=kind)
