"""Requests to the simulator's and the events service's ROUTERs (game-master controls, feed
snapshots), one at a time per channel, from the gateway's loop."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any, TypeVar, cast

import zmq.asyncio

from common.bus_client import BusTimeout
from common.messages import DecodeError, ErrorReply, Message, decode, encode
from common.transport import make_socket
from services.gateway.bridge import BusUnavailable

if TYPE_CHECKING:
    from services.gateway.core import Gateway

M = TypeVar("M", bound=Message)


class Controls:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.ctx = zmq.asyncio.Context.shadow(gw.bridge.ctx)
        self.socks: dict[str, zmq.asyncio.Socket] = {}
        self.locks = {"sim_rpc": asyncio.Lock(), "events_rpc": asyncio.Lock()}
        self.ids = itertools.count(1)

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.socks.clear()

    def _socket(self, channel: str) -> zmq.asyncio.Socket:
        sock = self.socks.get(channel)
        if sock is None:  # make_socket is typed for plain contexts; an asyncio one works alike
            made: Any = make_socket(cast(Any, self.ctx), self.gw.config, channel, bind=False)
            sock = self.socks[channel] = made
        return sock

    async def call(self, channel: str, request: Message, kind: type[M]) -> M:
        timeout = self.gw.settings.request_timeout_s
        async with self.locks[channel]:
            sock = self._socket(channel)
            rid = next(self.ids).to_bytes(8, "big")
            await sock.send_multipart([rid, encode(request)])
            deadline = asyncio.get_running_loop().time() + timeout
            while True:  # answers to earlier, abandoned requests are skipped
                left = deadline - asyncio.get_running_loop().time()
                try:
                    frames = await asyncio.wait_for(sock.recv_multipart(), max(left, 0))
                except TimeoutError:
                    raise BusTimeout(f"no answer from {channel} in time") from None
                if len(frames) == 2 and frames[0] == rid:
                    return _reply(frames[1], kind)


def _reply(payload: bytes, kind: type[M]) -> M:
    try:
        reply = decode(payload)
    except DecodeError as exc:
        raise BusUnavailable(f"malformed answer: {exc}") from exc
    if isinstance(reply, ErrorReply):
        raise BusUnavailable(reply.message)
    if not isinstance(reply, kind):
        raise BusUnavailable(f"unexpected answer {type(reply).__name__}")
    return reply
