"""A synchronous client of the matcher over the bus: commands, their responses, requests.

Used by tools, tests and benchmarks; the gateway has its own asyncio equivalent.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from typing import TypeVar

import zmq

from common import topics
from common.config import Config
from common.messages import (
    Command,
    ErrorReply,
    Message,
    Pong,
    Probe,
    Response,
    decode,
    decode_events,
    encode,
)
from common.transport import make_socket, recv_frames, send_frame

M = TypeVar("M", bound=Message)


class BusTimeout(TimeoutError):
    """The other side did not answer in time."""


class BusError(RuntimeError):
    """The other side answered that it could not serve the request."""


class MatcherClient:
    def __init__(self, config: Config, ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
                 gw: str | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.gw = gw or f"client-{uuid.uuid4().hex[:8]}"
        self.push = make_socket(self.ctx, config, "commands", bind=False)
        self.sub = make_socket(self.ctx, config, "matcher_private", bind=False)
        self.sub.subscribe(topics.response(self.gw))
        self.rpc = make_socket(self.ctx, config, "matcher_rpc", bind=False)
        self._ids = itertools.count(1)
        self._pending: deque[Message] = deque()  # the rest of a frame's events, not yet read

    def close(self) -> None:
        for sock in (self.push, self.sub, self.rpc):
            sock.close(linger=0)

    def wait_ready(self, timeout: float = 10.0) -> Pong:
        """Returns once the matcher answers and our subscription receives its publications."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.call(Probe(gw=self.gw), Pong, timeout=0.5)
                return self._next(Pong, time.monotonic() + 0.2)
            except BusTimeout:
                continue
        raise BusTimeout(f"matcher not ready within {timeout} s")

    def send(self, cmd: Command) -> str:
        """Fire a command; its Response arrives on our topic. Returns its req_id."""
        if not cmd.req_id:
            cmd.req_id = f"{self.gw}-{next(self._ids)}"
        cmd.gw = self.gw
        send_frame(self.push, b"cmd", encode(cmd))
        return cmd.req_id

    def request(self, cmd: Command, timeout: float = 5.0) -> Response:
        req_id = self.send(cmd)
        deadline = time.monotonic() + timeout
        while True:
            response = self._next(Response, deadline)
            if response.req_id == req_id:
                return response

    def responses(self, timeout: float) -> Response:
        return self._next(Response, time.monotonic() + timeout)

    def _next(self, kind: type[M], deadline: float) -> M:
        while True:
            while self._pending:
                msg = self._pending.popleft()
                if isinstance(msg, kind):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0 or not self.sub.poll(int(left * 1000) + 1):
                raise BusTimeout(f"no {kind.__name__} in time")
            self._pending.extend(decode_events(recv_frames(self.sub)[-1]))

    def call(self, request: Message, kind: type[M], timeout: float = 5.0) -> M:
        """A request over the matcher's ROUTER. A correlation frame goes before the payload
        (the ROUTER echoes it), so a late answer to an earlier, timed-out call is skipped."""
        correlation = f"{next(self._ids)}".encode()
        send_frame(self.rpc, correlation, encode(request))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.rpc.poll(int(left * 1000) + 1):
                raise BusTimeout(f"no answer to {type(request).__name__} in time")
            frames = recv_frames(self.rpc)
            if frames[0] != correlation:
                continue
            msg = decode(frames[-1])
            if isinstance(msg, kind):
                return msg
            if isinstance(msg, ErrorReply):
                raise BusError(msg.message)
            raise BusError(f"unexpected answer {type(msg).__name__}")
