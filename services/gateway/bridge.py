"""The gateway's side of the bus, on its asyncio loop: commands out; answers and feeds in.

Plain zmq sockets watched with `loop.add_reader`, not zmq.asyncio: a per-call future and
poller in zmq.asyncio costs about three times the round trip itself. A zmq FD is
edge-triggered, so every wake-up drains its socket, and any send or (un)subscribe on a socket
that also receives is followed by a re-check (it may have consumed the edge).

Commands go out on the `commands` PUSH with `gw` set to this gateway, and their Response comes
back on `resp.<gw>` matched by req_id. They go out only while the private SUB is proven joined
to the matcher that will answer (a Probe answered by a Pong on `resp.<gw>`): after a matcher
restart the PUSH may reconnect before the SUB, and an answer published meanwhile is lost, so
a command that ran would be reported as timed out. A disconnect of the SUB (its socket monitor)
ends the proof; until the next one a command waits, within its timeout.

Requests go over a DEALER as [request id, payload]; the matcher's ROUTER echoes every frame
before the payload, so answers are matched by that id and a late answer to an abandoned
request can never be taken for another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

import zmq
from zmq.utils.monitor import recv_monitor_message

from common import topics
from common.bus_client import BusTimeout
from common.config import Config
from common.messages import (
    Command,
    DecodeError,
    ErrorReply,
    KeyReissued,
    Message,
    Pong,
    Probe,
    Response,
    decode,
    decode_events,
    encode,
    split_events,
)
from common.service import Context, Socket
from common.transport import make_socket, recv_frames, send_frame

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
T = TypeVar("T")
Sink = Callable[[bytes, bytes], None]
_NOBLOCK = int(zmq.NOBLOCK)  # a plain int: pyzmq's flag enums cost more than the call
DRAIN_BATCH = 256  # messages per wake-up before yielding to the loop
SEND_RETRY_S = 0.005  # a command the PUSH could not take yet is tried again this often
PROBE_TIMEOUT_S = 0.5  # a join probe unanswered by then is sent again
FEEDS = (  # channel, topic prefixes: the feeds every gateway follows besides its own
    ("matcher_pub", (topics.MD, topics.HEARTBEAT)),
    ("events_pub", (topics.NEWS, topics.SIGNAL, topics.HEARTBEAT)),  # news, public signals
    ("events_private", (topics.SIGNAL,)),  # signal.<role>: only for the teams of that role
    ("sim_pub", (topics.HEARTBEAT, topics.UNDERLYING, topics.FAIR)),  # marks: dashboard only
    ("sim_private", (topics.SIM_STATE,)),  # the regime: the dashboard shows it only when old
)


class BusUnavailable(Exception):
    """The request could not be handed to the bus (queue full) or was refused."""


def _noop(topic: bytes, payload: bytes) -> None:
    return None


class Bridge:
    def __init__(self, config: Config, ctx: Context, gw_id: str) -> None:
        self.config = config
        self.ctx = ctx
        self.gw_id = gw_id
        self.resp_topic = topics.response(gw_id)
        self.on_private: Sink = _noop  # exec.<team> frames, still encoded
        self.on_public: Sink = _noop  # md.*, news, signal.*, sys.heartbeat.*
        self.on_key_reissued: Callable[[KeyReissued], None] = lambda event: None
        self.pong_seen = asyncio.Event()
        self.joined = asyncio.Event()  # the private SUB is proven joined to the matcher there
        self._left = asyncio.Event()  # it disconnected since: prove it again
        self.counters: dict[str, int] = {"late_responses": 0, "bad_frames": 0,
                                         "foreign_responses": 0}
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._calls: dict[bytes, asyncio.Future[Message]] = {}
        # req_ids start with this process's own mark: a restarted gateway with a fixed id never
        # takes a late answer meant for its previous process (possibly another team's) as its
        # own, and answers that keep coming to requests it never made show a twin (see _answer)
        self._mark = secrets.token_hex(4) + "."
        self._ids = itertools.count(1)
        self._opened = 0.0
        self._twin_told = False
        self._sockets: list[Socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- life cycle (on the loop's thread) ---

    def open(self) -> None:
        try:
            self._open()
        except BaseException:
            self.close()  # the sockets made so far: an open one would hang the context's term
            raise

    def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._opened = self._loop.time()
        # immediate: a command is never held for a matcher that is not there (down, not yet
        # started): it would run whenever one came, long after its client was told "timeout"
        self.push = self._socket("commands", immediate=True)
        self.private = self._socket("matcher_private")
        self.private.subscribe(topics.EXEC)  # before resp.<gw>: a Pong then proves both joined
        self.private.subscribe(self.resp_topic)
        self.private.subscribe(topics.KEYS)
        self._monitor = self.private.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._sockets.append(self._monitor)
        self.rpc = self._socket("matcher_rpc")
        self._watch(self.private, self._read_private)
        self._watch(self.rpc, self._read_rpc)
        self._watch(self._monitor, self._read_monitor)
        for channel, prefixes in FEEDS:
            sub = self._socket(channel)
            for prefix in prefixes:
                sub.subscribe(prefix)
            self._watch(sub, self._reader(sub))

    def close(self) -> None:
        loop = self._loop
        if hasattr(self, "_monitor"):
            with contextlib.suppress(zmq.ZMQError):
                self.private.disable_monitor()
        for sock in self._sockets:
            if loop is not None:
                loop.remove_reader(_fd(sock))
            sock.close(linger=0)
        self._sockets.clear()
        waiting: list[asyncio.Future[Any]] = [*self._pending.values(), *self._calls.values()]
        for fut in waiting:
            if not fut.done():
                fut.set_exception(BusUnavailable("gateway stopping"))

    def _socket(self, channel: str, immediate: bool = False) -> Socket:
        sock = make_socket(self.ctx, self.config, channel, bind=False, immediate=immediate)
        self._sockets.append(sock)
        return sock

    def _watch(self, sock: Socket, drain: Callable[[], None]) -> None:
        assert self._loop is not None
        self._loop.add_reader(_fd(sock), drain)
        self._loop.call_soon(drain)

    def _recheck(self, sock: Socket, drain: Callable[[], None]) -> None:
        if int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN and self._loop is not None:
            self._loop.call_soon(drain)

    # --- commands ---

    async def command(self, cmd: Command, timeout: float) -> Response:
        """Send a command and wait for its Response; BusTimeout if none comes in time,
        BusUnavailable if it could not be sent (then it was not, and never runs)."""
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + timeout
        req_id = cmd.req_id = f"{self._mark}{next(self._ids):x}"
        cmd.gw = self.gw_id
        payload = encode(cmd)
        if not self._try_send(payload):
            await self._send_later(payload, deadline)
        fut: asyncio.Future[Response] = loop.create_future()
        self._pending[req_id] = fut
        timer = loop.call_at(deadline, self._expire, req_id)
        try:
            return await fut
        finally:
            timer.cancel()

    def _try_send(self, payload: bytes) -> bool:
        """Hand a command to the matcher if the private feed is proven joined to it; False if
        nothing was sent (not joined, no matcher connected to the PUSH, or its queue full)."""
        if not self.joined.is_set():
            return False
        try:
            send_frame(self.push, b"cmd", payload, _NOBLOCK)
        except zmq.Again:
            return False
        return True

    async def _send_later(self, payload: bytes, deadline: float) -> None:
        """Send once the private feed is proven joined and the PUSH connected (each reconnects
        on its own after a matcher restart), or the queue has room again; BusUnavailable if
        not by the deadline."""
        assert self._loop is not None
        while (left := deadline - self._loop.time()) > 0:
            if self.joined.is_set():
                await asyncio.sleep(min(SEND_RETRY_S, left))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.joined.wait(), left)
            if self._try_send(payload):
                return
        raise BusUnavailable("the matcher is not reachable")

    def _expire(self, req_id: str) -> None:
        fut = self._pending.pop(req_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(BusTimeout("no answer from the matcher in time"))

    def _expire_call(self, rid: bytes) -> None:
        fut = self._calls.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(BusTimeout("no answer from the matcher in time"))

    def _read_private(self) -> None:
        sock, resp_topic = self.private, self.resp_topic
        for _ in range(DRAIN_BATCH):
            try:
                frames = recv_frames(sock, _NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.counters["bad_frames"] += 1
                continue
            topic, payload = frames
            if topic == resp_topic:
                for msg in self._events(payload, decode_events):
                    self._answer(msg)
            elif topic.startswith(topics.EXEC):
                for event in self._events(payload, split_events):
                    self.on_private(topic, event)
            elif topic == topics.KEYS:
                for msg in self._events(payload, decode_events):
                    if isinstance(msg, KeyReissued):
                        self.on_key_reissued(msg)
        self._again(self._read_private)

    def _events(self, payload: bytes, split: Callable[[bytes], list[T]]) -> list[T]:
        """A frame's events (an array of them); a malformed frame is counted and dropped."""
        try:
            return split(payload)
        except DecodeError:
            self.counters["bad_frames"] += 1
            return []

    def _answer(self, msg: Message) -> None:
        if isinstance(msg, Response):
            fut = self._pending.pop(msg.req_id, None)
            if fut is None:
                if msg.req_id.startswith(self._mark):
                    self.counters["late_responses"] += 1
                else:
                    self._foreign()
            elif not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, Pong):
            self.pong_seen.set()

    def _foreign(self) -> None:
        """An answer to a request of another process: a previous one with this id, for a short
        while after a restart (its last requests were a timeout or so old when it went); any
        later, another gateway running with the same id."""
        self.counters["foreign_responses"] += 1
        assert self._loop is not None
        grace = 3 * self.config.gateway.request_timeout_s
        if self._loop.time() - self._opened > grace and not self._twin_told:
            self._twin_told = True
            log.error("gateway %s: answers to requests this process never made arrive on "
                      "its topic: another gateway runs with gateway.id = %r; give each gateway "
                      "its own id, or leave it empty for a random one", self.gw_id, self.gw_id)

    def _read_monitor(self) -> None:
        while True:
            try:
                recv_monitor_message(self._monitor, _NOBLOCK)
            except zmq.Again:
                return
            self.joined.clear()
            self._left.set()

    async def keep_joined(self) -> None:
        """Prove the private SUB joined, and again after each disconnect, for ever."""
        while True:
            await self._prove_joined()
            if self._left.is_set():  # lost again while proving: the proof may be of the old
                self._left.clear()
                continue
            self.joined.set()
            await self._left.wait()
            self._left.clear()
            log.warning("gateway %s: the matcher's private feed disconnected; commands wait "
                        "for it to be proven joined again", self.gw_id)

    # --- requests over the DEALER ---

    async def call(self, request: Message, kind: type[M], timeout: float) -> M:
        assert self._loop is not None
        rid = next(self._ids).to_bytes(8, "big")
        fut: asyncio.Future[Message] = self._loop.create_future()
        self._calls[rid] = fut
        try:
            self.rpc.send_multipart((rid, encode(request)), zmq.NOBLOCK)
        except zmq.Again as exc:
            del self._calls[rid]
            raise BusUnavailable("request queue full") from exc
        self._recheck(self.rpc, self._read_rpc)
        timer = self._loop.call_later(timeout, self._expire_call, rid)
        try:
            reply = await fut
        finally:
            timer.cancel()
        if isinstance(reply, ErrorReply):
            raise BusUnavailable(reply.message)
        if not isinstance(reply, kind):
            raise BusUnavailable(f"expected {kind.__name__}, got {type(reply).__name__}")
        return reply

    def _read_rpc(self) -> None:
        for _ in range(DRAIN_BATCH):
            try:
                frames = self.rpc.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            fut = self._calls.pop(frames[0], None) if len(frames) == 2 else None
            if fut is None or fut.done():
                continue
            try:
                fut.set_result(decode(frames[1]))
            except DecodeError as exc:
                fut.set_exception(BusUnavailable(f"malformed answer: {exc}"))
        self._again(self._read_rpc)

    async def _prove_joined(self) -> None:
        """Probe until the matcher answers on our private subscription (however long)."""
        while True:
            try:
                await self.probe(timeout=PROBE_TIMEOUT_S)
                return
            except (BusTimeout, BusUnavailable):
                continue

    async def probe(self, timeout: float) -> Pong:
        """Proves the private SUB is joined: the matcher publishes a Pong on resp.<gw>."""
        self.pong_seen.clear()
        pong = await self.call(Probe(gw=self.gw_id), Pong, timeout)
        try:
            await asyncio.wait_for(self.pong_seen.wait(), timeout)
        except TimeoutError:
            raise BusTimeout("the matcher's Pong did not come on the private feed") from None
        return pong

    # --- public feeds ---

    def _reader(self, sock: Socket) -> Callable[[], None]:
        def drain() -> None:
            sink = self.on_public
            for _ in range(DRAIN_BATCH):
                try:
                    frames = recv_frames(sock, _NOBLOCK)
                except zmq.Again:
                    return
                if len(frames) == 2:
                    for event in self._events(frames[1], split_events):
                        sink(frames[0], event)
                else:
                    self.counters["bad_frames"] += 1
            self._again(drain)

        return drain

    def _again(self, drain: Callable[[], None]) -> None:
        if self._loop is not None:
            self._loop.call_soon(drain)


def _fd(sock: Socket) -> int:
    return int(sock.getsockopt(zmq.FD))
