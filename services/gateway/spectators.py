"""Dashboard WebSockets: a bounded queue per browser, so no slow one holds up the others.

Spectators get JSON text frames `{type, data}`; the text of an update is built once and queued
to everyone. A browser whose queue fills up is closed with 1008 and forgotten (it reconnects
and starts again from a snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.websockets import WebSocket

from common.messages import DecodeError
from services.gateway.ws import POLICY

log = logging.getLogger(__name__)

QUEUE = 512  # frames pending per browser before it is dropped as slow
MAX_CLIENT_FRAME = 4096


class Spectator:
    def __init__(self, ws: WebSocket, limit: int = QUEUE) -> None:
        self.ws = ws
        self.limit = limit
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.closing: tuple[int, str] | None = None
        self.watch: str | None = None  # the instrument whose depth this browser shows

    def put(self, text: str) -> None:
        if self.closing is not None:
            return
        if len(self.queue) >= self.limit:
            self.close(POLICY, "slow consumer")
            return
        self.queue.append(text)
        self.wake.set()

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = (code, reason)
            self.queue.clear()
            self.wake.set()

    async def send_loop(self) -> None:
        with contextlib.suppress(Exception):  # the browser went away mid-send
            while True:
                while not self.queue:
                    if self.closing is not None:
                        await self.ws.close(*self.closing)
                        return
                    self.wake.clear()
                    await self.wake.wait()
                await self.ws.send_text(self.queue.popleft())

    async def receive_loop(self, on_message: Callable[[Spectator, dict[str, Any]], None]) -> None:
        """Client frames are small JSON objects; anything else is ignored."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if not text or len(text) > MAX_CLIENT_FRAME:
                continue
            try:
                body = msgspec.json.decode(text)
            except DecodeError:
                continue
            if isinstance(body, dict):
                on_message(self, body)


async def serve(spectator: Spectator, on_message: Callable[[Spectator, dict[str, Any]], None]
                ) -> None:
    """Run one browser's connection until either side ends it."""
    sender = asyncio.create_task(spectator.send_loop())
    receiver = asyncio.create_task(spectator.receive_loop(on_message))
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
