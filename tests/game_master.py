"""Game-master controls straight over the bus, for tests (the admin API has its own, in
services/gateway/controls.py).

News and regime controls are requests on the events and simulator ROUTERs, answered with a
ControlReply; halts and phases are matcher commands (journaled), answered with a Response.
"""

from __future__ import annotations

import itertools
import time
from typing import TypeVar

import zmq

from common.bus_client import BusError, BusTimeout, MatcherClient
from common.config import Config
from common.messages import (
    ControlReply,
    ErrorReply,
    ForceRegime,
    InjectNews,
    Message,
    Response,
    SetHalt,
    SetPhase,
    SetSpeed,
    decode,
    encode,
)
from common.transport import make_socket

M = TypeVar("M", bound=Message)
_IDS = itertools.count(1)  # request ids: unique within the test process


def rpc_call(sock: zmq.Socket[bytes], request: Message, kind: type[M], timeout: float) -> M:
    """One request over a DEALER; a late answer to an earlier request is skipped (the ROUTER
    sends back the frames before the request's, here a request id)."""
    deadline = time.monotonic() + timeout
    # a DEALER with no peer (the service gone) blocks on send: that too within the timeout
    if not sock.poll(int(timeout * 1000) + 1, zmq.POLLOUT):
        raise BusTimeout(f"could not send {type(request).__name__}: nobody to take it")
    rid = next(_IDS).to_bytes(8, "big")
    sock.send_multipart([rid, encode(request)], zmq.NOBLOCK)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise BusTimeout(f"no answer to {type(request).__name__} in time")
        frames = sock.recv_multipart()
        if len(frames) != 2 or frames[0] != rid:
            continue
        msg = decode(frames[1])
        if isinstance(msg, kind):
            return msg
        if isinstance(msg, ErrorReply):
            raise BusError(msg.message)


class GameMaster:
    def __init__(self, config: Config, ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
                 timeout: float = 5.0) -> None:
        self.config = config
        self.ctx = ctx or zmq.Context.instance()
        self.timeout = timeout
        self.sim = make_socket(self.ctx, config, "sim_rpc", bind=False)
        self.events = make_socket(self.ctx, config, "events_rpc", bind=False)
        self._matcher: MatcherClient | None = None

    def close(self) -> None:
        self.sim.close(linger=0)
        self.events.close(linger=0)
        if self._matcher is not None:
            self._matcher.close()

    def inject_news(self, headline: str, direction: str | None = None,
                    magnitude: float | None = None, regime_shift: bool | None = None,
                    jump: bool | None = None) -> ControlReply:
        request = InjectNews(headline=headline, direction=direction, magnitude=magnitude,
                             regime_shift=regime_shift, jump=jump)
        return rpc_call(self.events, request, ControlReply, self.timeout)

    def force_regime(self, regime: str) -> ControlReply:
        return rpc_call(self.sim, ForceRegime(regime=regime), ControlReply, self.timeout)

    def set_speed(self, speed: float) -> ControlReply:
        """Game seconds per wall second; 0 pauses the game clock (prices, news, retail)."""
        return rpc_call(self.sim, SetSpeed(speed=speed), ControlReply, self.timeout)

    def halt(self, instrument_id: str) -> Response:
        return self.matcher.request(SetHalt(instrument_id=instrument_id, halted=True))

    def resume(self, instrument_id: str) -> Response:
        return self.matcher.request(SetHalt(instrument_id=instrument_id, halted=False))

    def set_phase(self, phase: str) -> Response:
        return self.matcher.request(SetPhase(phase=phase))

    @property
    def matcher(self) -> MatcherClient:
        if self._matcher is None:
            self._matcher = MatcherClient(self.config, self.ctx, gw=f"gm-{id(self):x}")
            self._matcher.wait_ready(self.timeout)
        return self._matcher
