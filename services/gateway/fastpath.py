"""POST /exchange/orders straight from uvicorn to the handler: the one hot route.

FastAPI's middleware stack, routing and request wrappers cost about as much CPU as the order
itself, and >= 4,000 orders/s per gateway process leaves no room for that. This ASGI wrapper
takes that one route and does exactly what the FastAPI route does (the same Api.place steps:
401, 413, 422, envelope), and hands everything else, lifespan included, to FastAPI. Requests
carrying an Origin header also go to FastAPI, so browsers get the CORS answers unchanged.
Its answers are counted and timed here, the app's by a wrapper around the app (ops.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from common.messages import TeamInfo
from services.gateway import handlers, schemas, views

if TYPE_CHECKING:
    from services.gateway.app import Api
    from services.gateway.ops import Monitor

PATH = "/exchange/orders"
JSON = (b"content-type", b"application/json")


class OrderFastPath:
    def __init__(self, app: ASGIApp, api: Api, monitor: Monitor) -> None:
        self.app = app
        self.api = api
        self.monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = length = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                key = value.decode("latin-1")
            elif name == b"content-length":
                length = value
            elif name == b"origin":
                await self.app(scope, receive, send)
                return
        start, status, body = time.perf_counter(), 500, b""
        try:
            status, body = await self._place(key, length, receive)
            await send({"type": "http.response.start", "status": status,
                        "headers": [JSON, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        finally:
            self.monitor.answered("POST", PATH, status, body, time.perf_counter() - start)

    async def _place(self, key: str | None, length: bytes | None,
                     receive: Receive) -> tuple[int, bytes]:
        api = self.api
        me = await api.caller(key)
        if not isinstance(me, TeamInfo):
            return me.status_code, bytes(me.body)
        raw = await _read(receive, length, api.limit)
        if raw is None:
            return 413, views.dumps({"detail": f"Request body too large (max {api.limit} bytes)"})
        try:
            req = schemas.OrderRequest.model_validate_json(raw)
        except ValidationError as exc:
            return 422, views.dumps({"detail": schemas.validation_detail(exc)})
        return 200, views.dumps(await handlers.place(api.gw, me, req))


async def _read(receive: Receive, length: bytes | None, limit: int) -> bytes | None:
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away; the answer goes nowhere
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
