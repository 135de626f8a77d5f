"""The HTTP and WebSocket surface: FastAPI routes over the handlers, and the OpenAPI document.

Routes take the raw request and do, in this order: authentication (401), body size (413),
validation (422), then the business answer (200 envelope). FastAPI's own body parsing would
validate before authenticating and read bodies of any size, so bodies are read here; the
request models are still published in the OpenAPI document, which describes exactly this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp

from common.bus_client import BusTimeout
from common.messages import TeamInfo
from services.gateway import admin, dashboard, handlers, history, ops, schemas, views
from services.gateway.bridge import BusUnavailable
from services.gateway.core import VERSION, Gateway
from services.gateway.fastpath import OrderFastPath
from services.gateway.ws import POLICY, REISSUED, TRY_AGAIN

log = logging.getLogger(__name__)

DESCRIPTION = """\
Bot API of the Intern Trading Game, compatible with the original game's bots.

**Auth**: `X-API-Key` on every endpoint but registration and `/`; missing or unknown key: 401.
Checked first, then the body size (413), then the schema (422), then the business answer.

**Envelope** (HTTP 200): `{success, request_id, order_id, data, error, timestamp}`, `error =
{code, message, details}`. Codes: INVALID_ORDER_TYPE, INVALID_SIDE, MISSING_PRICE,
INVALID_INSTRUMENT, INVALID_QUANTITY, INVALID_PRICE, MM_POS_LIMIT / POSITION_LIMIT_EXCEEDED,
RATE_LIMIT_EXCEEDED, ORDER_TYPE_NOT_ALLOWED, NO_LIQUIDITY, MARKET_CLOSED, CANCEL_FAILED,
UNSUPPORTED_ROLE, DUPLICATE_TEAM_NAME, INVALID_TEAM_NAME, TEAM_LIMIT_REACHED, TEAM_NOT_FOUND,
PROCESSING_TIMEOUT,
SERVICE_UNAVAILABLE, DUPLICATE_CLIENT_ORDER_ID (the id was used for a different order).
After PROCESSING_TIMEOUT, resend with the same `client_order_id`: an order is never placed twice.

**WebSocket** `ws://HOST:PORT/ws?api_key=KEY[&since=N]` (not in this document: OpenAPI has no
WebSockets). Messages `{seq, type, timestamp, data}`; `seq` is 1, 2, 3... per connection and
the first message is `position_snapshot` (positions, cash, fees). Private: `new_order_ack`,
`new_order_reject`, `execution_report` (both sides, `fees` + = rebate), `cancel_ack`,
`cancel_reject`; every refused order gets a `new_order_reject` (one refused by the gateway
itself has `order_id` null and is not replayed by `since`). Public:
`market_data` (conflated, at most one per instrument per interval), `event` (news), `signal`
(only the roles it is meant for). One connection per team: a new one closes the old (1000).
`since=N`, N = the last `seq` you processed: numbering continues at N+1 and every private
message after the one you had at N is replayed, in order, before live ones. If this gateway
cannot tell (another gateway, a restart, too long ago), message N+1 is a fresh
`position_snapshot` instead. Clients may send `{"type": "ping"}`; frames are limited in size
(1009); a client whose queue fills up is closed with 1008 "slow consumer" (one that reads
nothing for 2 s more is cut without the close frame: 1006).
"""
MISSING_KEY = "Missing API key. Include X-API-Key header."
INVALID_KEY = "Invalid API key"
MAX_SINCE = 1 << 53


def _detail(status: int, detail: str) -> Response:
    return views.json_response({"detail": detail}, status)


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


async def _read(request: Request, limit: int) -> bytes | None:
    """The body, or None if it is larger than `limit` (checked while reading, not after)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class Api:
    """Binds the routes to one Gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.limit = gw.settings.max_body_bytes

    async def identify(self, key: str | None) -> TeamInfo | tuple[int, str]:
        """The key's team, or the HTTP status and detail to refuse it with."""
        key = key.strip(" \t") if key else key  # optional whitespace, not part of the value
        if not key:
            return 401, MISSING_KEY
        try:
            team = await self.gw.keys.team_for(key)
        except (BusTimeout, BusUnavailable):
            return 503, "The exchange is unavailable; retry"
        return team if team is not None else (401, INVALID_KEY)

    async def caller(self, key: str | None) -> TeamInfo | Response:
        me = await self.identify(key)
        return _detail(*me) if isinstance(me, tuple) else me

    async def key_owner(self, request: Request) -> TeamInfo:
        """As a dependency of a route with query parameters: FastAPI runs it before it checks
        them, so a bad key is refused first whatever else is wrong (API.md: auth first)."""
        me = await self.identify(request.headers.get("x-api-key"))
        if isinstance(me, tuple):
            raise HTTPException(*me)
        return me

    async def body(self, request: Request, model: type[schemas._Request]) -> Any:
        raw = await _read(request, self.limit)
        if raw is None:
            return _detail(413, f"Request body too large (max {self.limit} bytes)")
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            return views.json_response({"detail": schemas.validation_detail(exc)}, 422)

    async def authed(self, request: Request,
                     then: Callable[[TeamInfo], Awaitable[handlers.Body]]) -> Response:
        me = await self.caller(request.headers.get("x-api-key"))
        if isinstance(me, Response):
            return me
        return await self.admitted(me, then)

    async def admitted(self, me: TeamInfo, then: Callable[[TeamInfo], Awaitable[handlers.Body]],
                       request_id: str | None = None) -> Response:
        """`then`, within the team's request rate (a refusal echoes the `request_id`)."""
        gw = self.gw
        if (over := gw.requests.admit(me.team_id, gw.settings.max_requests_per_s)) is not None:
            return views.json_response(handlers.failure(
                request_id, "RATE_LIMIT_EXCEEDED", "Request rate limit exceeded", over))
        return views.json_response(await then(me))

    async def place(self, request: Request) -> Response:
        me = await self.caller(request.headers.get("x-api-key"))
        if isinstance(me, Response):
            return me
        req = await self.body(request, schemas.OrderRequest)
        if isinstance(req, Response):
            return req
        return views.json_response(await handlers.place(self.gw, me, req))

    async def register(self, request: Request) -> Response:
        req = await self.body(request, schemas.RegisterRequest)
        if isinstance(req, Response):
            return req
        return views.json_response(await handlers.register(self.gw, req))


def create_app(gw: Gateway) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = FastAPI(title="Intern Trading Game exchange", version=VERSION, lifespan=lifespan,
                  description=DESCRIPTION)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"],
                       allow_headers=["*"])
    api = Api(gw)
    _team_routes(app, api)
    _order_routes(app, api)
    _ws_route(app, api)
    admin.install(app, api, dashboard.install(app, api))
    ops.install(app, gw)  # GET /, /health, /metrics
    history.install(app, api, history.History(gw.config.db_url))  # from the DB, read-only
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def create_asgi(gw: Gateway) -> ASGIApp:
    """What uvicorn serves: the order fast path in front of the FastAPI app; every answer is
    counted (the fast path counts its own, a wrapper around the app the rest)."""
    app = create_app(gw)
    return OrderFastPath(ops.observed(app), Api(gw), app.state.monitor)


def _team_routes(app: FastAPI, api: Api) -> None:
    @app.post("/game/teams/register", response_model=schemas.Envelope[schemas.NewTeam],
              responses=schemas.documented(413, 422),
              openapi_extra=_body_doc(schemas.RegisterRequest),
              summary="Register a team; the API key is shown once")
    async def register(request: Request) -> Response:
        return await api.register(request)

    @app.get("/game/teams/{team_id}", response_model=schemas.Envelope[schemas.Team],
             responses=schemas.documented(401, 503), openapi_extra=schemas.SECURED,
             summary="Your own team (any other id: TEAM_NOT_FOUND)")
    async def get_team(team_id: str, request: Request) -> Response:
        return await api.authed(request, lambda me: handlers.team(api.gw, me, team_id))

    @app.get("/positions", response_model=schemas.Envelope[schemas.PositionsData],
             responses=schemas.documented(401, 503), openapi_extra=schemas.SECURED,
             summary="Positions per instrument (traded ones stay listed at 0)")
    async def positions(request: Request) -> Response:
        return await api.authed(request, lambda me: handlers.positions(api.gw, me))


def _order_routes(app: FastAPI, api: Api) -> None:
    @app.post("/exchange/orders", response_model=schemas.Envelope[schemas.OrderData],
              responses=schemas.documented(401, 413, 422, 503),
              openapi_extra={**_body_doc(schemas.OrderRequest), **schemas.SECURED},
              summary="Place an order; data is its state after matching")
    async def place(request: Request) -> Response:
        return await api.place(request)

    @app.get("/exchange/orders", response_model=schemas.Envelope[schemas.OrdersData],
             responses=schemas.documented(401, 503), openapi_extra=schemas.SECURED,
             summary="Your resting orders, oldest first")
    async def open_orders(request: Request) -> Response:
        return await api.authed(request, lambda me: handlers.orders(api.gw, me))

    @app.delete("/exchange/orders/{order_id}", response_model=schemas.Envelope[schemas.OrderData],
                responses=schemas.documented(401, 503), openapi_extra=schemas.SECURED,
                summary="Cancel one of your resting orders (anything else: CANCEL_FAILED)")
    async def cancel(order_id: str, request: Request) -> Response:
        return await api.authed(request, lambda me: handlers.cancel(api.gw, me, order_id))

    @app.get("/exchange/orderbook/{instrument_id}",
             response_model=schemas.Envelope[schemas.OrderBookData],
             responses=schemas.documented(401, 503), openapi_extra=schemas.SECURED,
             summary="Top 5 price levels per side, aggregated")
    async def orderbook(instrument_id: str, request: Request) -> Response:
        return await api.authed(request, lambda me: handlers.book(api.gw, me, instrument_id))


def _ws_route(app: FastAPI, api: Api) -> None:
    @app.websocket("/ws")
    async def stream(websocket: WebSocket) -> None:
        params = websocket.query_params
        key = params.get("api_key") or websocket.headers.get("x-api-key")
        me = await api.caller(key)
        if isinstance(me, Response):
            await websocket.send_denial_response(me)
            return
        since = _since(params.get("since"))
        if since == -1:
            await websocket.send_denial_response(_detail(
                400, f"since must be an integer between 0 and {MAX_SINCE}"))
            return
        await websocket.accept()
        # A reissue heard during the handshake closed the team's streams before this one was
        # among them: the key is asked again (from the cache, as a rule) before it joins them.
        again = await api.identify(key)
        if isinstance(again, tuple):
            code, reason = (POLICY, REISSUED) if again[0] == 401 else (TRY_AGAIN, again[1])
            await websocket.close(code, reason)
            return
        await _serve_ws(api.gw, websocket, me, since)


def _since(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 16 or int(raw) > MAX_SINCE:
        return -1
    return int(raw)


async def _serve_ws(gw: Gateway, websocket: WebSocket, me: TeamInfo, since: int | None) -> None:
    conn = await gw.hub.attach(websocket, me, since)
    conn.sender = asyncio.create_task(conn.send_loop())
    receiver = asyncio.create_task(conn.receive_loop())
    try:
        await asyncio.wait({conn.sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (conn.sender, receiver):
            task.cancel()
        await asyncio.gather(conn.sender, receiver, return_exceptions=True)
        gw.hub.detach(conn)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        doc.setdefault("components", {})["securitySchemes"] = {
            "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "AdminKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"}}
        app.openapi_schema = doc
    return app.openapi_schema
